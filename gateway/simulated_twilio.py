"""Twilio's side of a call, as the simulated phone plays it: webhook, TwiML, Media Streams.

No I/O here: this builds the signed webhook request, reads the TwiML answer, and turns the
caller's side of the Media Streams protocol into JSON text (and the gateway's back into
`Inbound` values), the way Twilio does for an inbound call with `<Connect><Stream>`.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit
from xml.etree import ElementTree as ET

from twilio.request_validator import RequestValidator

SIGNATURE_HEADER = "X-Twilio-Signature"


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two-letter prefix and 32 hex digits."""
    return prefix + secrets.token_hex(16)


def read_response(body: str) -> ET.Element:
    """The root of a provider's answer document; ValueError unless it is `<Response>` XML."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ValueError(f"answer is not XML: {exc}") from exc
    if root.tag != "Response":
        raise ValueError(f"answer root is <{root.tag}>, not <Response>")
    return root


def media_socket_url(gateway: str, stream_url: str) -> str:
    """The stream URL's path and query on the gateway: the phone reaches the gateway directly,
    whatever public host the answer names."""
    scheme = "wss" if urlsplit(gateway).scheme == "https" else "ws"
    stream = urlsplit(stream_url)
    return urlunsplit((scheme, urlsplit(gateway).netloc, stream.path, stream.query, ""))


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    url: str  # where to POST (the gateway itself)
    form: dict[str, str]
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Answer:
    """What the gateway's answer document tells the phone to do."""

    verbs: list[str]
    stream_url: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    say: str | None = None


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message from the gateway: agent audio, a mark to echo, a clear, or anything else."""

    kind: Literal["media", "mark", "clear", "other"]
    audio: bytes = b""
    name: str = ""


class TwilioDialect:
    """The caller (Twilio) end of one call: SIDs, signatures and message sequence numbers."""

    name = "twilio"

    def __init__(
        self, auth_token: str | None, to: str, from_: str, call_sid: str | None = None
    ) -> None:
        self._validator = RequestValidator(auth_token) if auth_token else None
        self.to, self.from_ = to, from_
        self.account_sid = new_sid("AC")
        self.call_sid = call_sid or new_sid("CA")
        self.stream_sid = new_sid("MZ")
        self._sequence = 0

    def _sign(self, url: str, params: dict[str, str]) -> dict[str, str]:
        if self._validator is None:
            return {}
        return {SIGNATURE_HEADER: self._validator.compute_signature(url, params)}

    def webhook(self, gateway: str, public_url: str, agent: str | None) -> WebhookRequest:
        """The voice webhook for a ringing inbound call, signed over the public URL."""
        path = "/twilio/voice" + (f"?agent={quote(agent, safe='')}" if agent else "")
        form = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": self.call_sid,
            "CallStatus": "ringing",
            "Called": self.to,
            "CalledCountry": "US",
            "Caller": self.from_,
            "CallerCountry": "US",
            "Direction": "inbound",
            "From": self.from_,
            "FromCountry": "US",
            "To": self.to,
            "ToCountry": "US",
        }
        headers = self._sign(public_url.rstrip("/") + path, form)
        return WebhookRequest(gateway.rstrip("/") + path, form, headers)

    @staticmethod
    def parse_answer(body: str) -> Answer:
        """Read TwiML; raises ValueError if it is not a `<Response>` document."""
        root = read_response(body)
        verbs = [child.tag for child in root]
        stream = root.find("Connect/Stream")
        say = root.find("Say")
        if stream is None or not stream.get("url"):
            return Answer(verbs, say=say.text if say is not None else None)
        parameters = {
            p.get("name", ""): p.get("value", "") for p in stream.iter("Parameter") if p.get("name")
        }
        return Answer(verbs, stream.get("url"), parameters)

    def stream_target(self, gateway: str, stream_url: str) -> tuple[str, dict[str, str]]:
        """Where to open the media socket (the gateway, with the Stream URL's path and query)
        and the upgrade headers: the signature covers the exact Stream URL, with no params."""
        return media_socket_url(gateway, stream_url), self._sign(stream_url, {})

    def next_sequence(self) -> int:
        """The `sequenceNumber` of the stream's next message (the first is 1)."""
        self._sequence += 1
        return self._sequence

    def _message(self, event: str, **body: object) -> str:
        return json.dumps(
            {
                "event": event,
                "sequenceNumber": str(self.next_sequence()),
                **body,
                "streamSid": self.stream_sid,
            }
        )

    @staticmethod
    def connected() -> str:
        return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self, parameters: dict[str, str]) -> str:
        return self._message(
            "start",
            start={
                "accountSid": self.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        )

    def media(self, ulaw: bytes | memoryview, chunk: int, timestamp_ms: int) -> str:
        payload = base64.b64encode(ulaw).decode("ascii")
        return self._message(
            "media",
            media={
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(timestamp_ms),
                "payload": payload,
            },
        )

    def mark(self, name: str) -> str:
        return self._message("mark", mark={"name": name})

    def cleared(self, marks: list[str]) -> list[str]:
        """Twilio answers a `clear` by echoing every mark it dropped."""
        return [self.mark(name) for name in marks]

    def dtmf(self, digit: str) -> str:
        return self._message("dtmf", dtmf={"track": "inbound_track", "digit": digit})

    def stop(self) -> str:
        return self._message(
            "stop", stop={"accountSid": self.account_sid, "callSid": self.call_sid}
        )

    @staticmethod
    def parse(raw: str | bytes) -> Inbound:
        """One gateway message; raises ValueError on malformed JSON or audio."""
        try:
            msg = json.loads(raw)
            event = msg["event"]
            if event == "media":
                return Inbound("media", base64.b64decode(msg["media"]["payload"], validate=True))
            if event == "mark":
                return Inbound("mark", name=str(msg["mark"]["name"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"bad message from gateway: {exc!r}") from exc
        return Inbound("clear" if event == "clear" else "other")
