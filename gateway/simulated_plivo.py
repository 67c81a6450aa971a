"""Plivo's side of a call, as the simulated phone plays it: answer URL, Plivo XML, Audio Streaming.

No I/O here: this builds the signed answer-URL request, reads the `<Stream>` answer, and turns
the caller's side of Plivo's bidirectional Audio Streaming into JSON text (and the gateway's
`playAudio`, `checkpoint` and `clearAudio` back into `Inbound` values), the way Plivo does for an
inbound call. Plivo's stream has neither a `connected` greeting nor a `stop`: the phone hangs up
by closing the socket. It answers a `clearAudio` with one `clearedAudio` and says nothing of the
checkpoints the clear dropped.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from urllib.parse import quote

from gateway.plivo_routes import CALL_ID_HEADER, TOKEN_HEADER
from gateway.security import InvalidToken, decode_token_alnum
from gateway.simulated_twilio import (
    Answer,
    Inbound,
    WebhookRequest,
    media_socket_url,
    read_response,
)
from providers.plivo.media import parse_extra_headers
from providers.plivo.signature import signature_headers


def _plivo_number(number: str) -> str:
    """Plivo writes phone numbers without the leading `+`."""
    return number.removeprefix("+")


class PlivoDialect:
    """The caller (Plivo) end of one call: UUIDs, V3 signatures and sequence numbers."""

    name = "plivo"

    def __init__(
        self, auth_token: str | None, to: str, from_: str, call_uuid: str | None = None
    ) -> None:
        self._auth_token = auth_token
        self.to, self.from_ = _plivo_number(to), _plivo_number(from_)
        self.auth_id = "MA" + secrets.token_hex(9).upper()
        self.call_uuid = call_uuid or str(uuid.uuid4())
        self.stream_sid = str(uuid.uuid4())
        """Plivo's `streamId` (named as the `Dialect` protocol names it)."""
        self.extra_headers = ""
        """The answer's `<Stream extraHeaders>`, which Plivo sends back as written."""
        self._sequence = 0
        self._epoch_ms = 0

    def webhook(self, gateway: str, public_url: str, agent: str | None) -> WebhookRequest:
        """The answer-URL request for a ringing inbound call, signed over the public URL."""
        path = "/plivo/answer" + (f"?agent={quote(agent, safe='')}" if agent else "")
        form = {
            "ALegRequestUUID": str(uuid.uuid4()),
            "ALegUUID": self.call_uuid,
            "BillRate": "0.0085",
            "CallStatus": "ringing",
            "CallUUID": self.call_uuid,
            "CallerName": self.from_,
            "Direction": "inbound",
            "Event": "StartApp",
            "From": self.from_,
            "RequestUUID": self.call_uuid,
            "SessionStart": time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime()),
            "To": self.to,
        }
        headers = {}
        if self._auth_token:
            headers = signature_headers(self._auth_token, public_url.rstrip("/") + path, form)
        return WebhookRequest(gateway.rstrip("/") + path, form, headers)

    def parse_answer(self, body: str) -> Answer:
        """Read Plivo XML; raises ValueError if it is not a `<Response>` document.

        The answer's parameters are what the phone needs from the extra headers: the call token
        (back in its usual form, to read the transcript with) and the call id.
        """
        root = read_response(body)
        verbs = [child.tag for child in root]
        stream = root.find("Stream")
        speak = root.find("Speak")
        if stream is None or not (stream.text or "").strip():
            return Answer(verbs, say=speak.text if speak is not None else None)
        if stream.get("bidirectional") != "true":
            raise ValueError("the <Stream> is not bidirectional: the agent could not be heard")
        self.extra_headers = stream.get("extraHeaders", "")
        headers = parse_extra_headers(self.extra_headers)
        parameters = {}
        try:
            parameters["token"] = decode_token_alnum(headers.get(TOKEN_HEADER))
            parameters["call_id"] = bytes.fromhex(headers.get(CALL_ID_HEADER, "")).decode()
        except (InvalidToken, ValueError):
            pass  # no usable token or call id: the call goes on, the transcript is unavailable
        return Answer(verbs, stream.text.strip(), parameters)

    def stream_target(self, gateway: str, stream_url: str) -> tuple[str, dict[str, str]]:
        """Where to open the media socket (the gateway, with the stream URL's path and query)
        and the upgrade headers: a V3 signature of a GET of the stream URL's http(s) form, as
        Plivo's stream SDKs check it."""
        ws_url = media_socket_url(gateway, stream_url)
        if not self._auth_token:
            return ws_url, {}
        signed_url = "http" + stream_url.removeprefix("ws")
        return ws_url, signature_headers(self._auth_token, signed_url, None, "GET")

    def _message(self, event: str, **body: object) -> str:
        self._sequence += 1
        return json.dumps({"event": event, "sequenceNumber": self._sequence, **body})

    @staticmethod
    def connected() -> None:
        """Plivo greets with `start` alone."""
        return None

    def start(self, parameters: dict[str, str]) -> str:
        """Plivo's `start`; its `extra_headers` are the answer's, as written (not `parameters`,
        which is the phone's own reading of them)."""
        self._epoch_ms = int(time.time() * 1000)
        return self._message(
            "start",
            start={
                "callId": self.call_uuid,
                "streamId": self.stream_sid,
                "accountId": self.auth_id,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
            },
            extra_headers=self.extra_headers,
        )

    def media(self, ulaw: bytes | memoryview, chunk: int, timestamp_ms: int) -> str:
        return self._message(
            "media",
            streamId=self.stream_sid,
            media={
                "track": "inbound",
                "timestamp": str(self._epoch_ms + timestamp_ms),
                "chunk": chunk,
                "payload": base64.b64encode(ulaw).decode("ascii"),
            },
            extra_headers=self.extra_headers,
        )

    def mark(self, name: str) -> str:
        """`playedStream`: playback reached the checkpoint `name`."""
        return self._message("playedStream", streamId=self.stream_sid, name=name)

    def cleared(self, marks: list[str]) -> list[str]:
        """The answer to `clearAudio`: one `clearedAudio`, nothing for the dropped checkpoints."""
        return [self._message("clearedAudio", streamId=self.stream_sid)]

    def dtmf(self, digit: str) -> str:
        return self._message(
            "dtmf",
            streamId=self.stream_sid,
            dtmf={"track": "inbound", "digit": digit, "timestamp": str(int(time.time() * 1000))},
            extra_headers=self.extra_headers,
        )

    @staticmethod
    def stop() -> None:
        """Plivo sends no `stop`: the phone hangs up by closing the socket."""
        return None

    @staticmethod
    def parse(raw: str | bytes) -> Inbound:
        """One gateway message; raises ValueError on malformed JSON, audio or format."""
        try:
            msg = json.loads(raw)
            event = msg["event"]
            if event == "playAudio":
                media = msg["media"]
                audio_format = (media["contentType"], int(media["sampleRate"]))
                if audio_format != ("audio/x-mulaw", 8000):
                    raise ValueError(f"playAudio in an unexpected format {audio_format}")
                return Inbound("media", base64.b64decode(media["payload"], validate=True))
            if event == "checkpoint":
                return Inbound("mark", name=str(msg["name"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"bad message from gateway: {exc!r}") from exc
        return Inbound("clear" if event == "clearAudio" else "other")
