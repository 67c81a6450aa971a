"""The phone (Twilio) end of Media Streams, lean enough for 200 calls in one process.

Outbound media messages are filled into a template around payloads that were base64-encoded
once for all calls; inbound agent audio is recognised and measured without decoding it.
Webhook, TwiML and SIDs come from `gateway.simulated_twilio.TwilioDialect`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Literal

from gateway.simulated_audio import FRAME_SAMPLES, ULAW_SILENCE, CallerAudio

SILENCE_B64 = base64.b64encode(ULAW_SILENCE).decode("ascii")
MEDIA_EVENT = '{"event":"media"'
PAYLOAD_KEY = '"payload":"'


@dataclass(frozen=True, slots=True)
class EncodedTurn:
    """One caller WAV as ready base64 payloads of 20 ms mu-law frames."""

    name: str
    payloads: tuple[str, ...]
    onset_frame: int
    last_voiced_frame: int


def encode_turn(name: str, audio: CallerAudio) -> EncodedTurn:
    payloads = tuple(
        base64.b64encode(audio.frame(i)).decode("ascii") for i in range(audio.frames)
    )
    return EncodedTurn(name, payloads, audio.onset_frame, audio.last_voiced_frame)


class TwilioWire:
    """Messages of one stream, numbered the way Twilio numbers them (`sequenceNumber`)."""

    def __init__(self, account_sid: str, call_sid: str, stream_sid: str) -> None:
        self.account_sid, self.call_sid, self.stream_sid = account_sid, call_sid, stream_sid
        self._sequence = 0
        self._chunk = 0

    def _next(self) -> int:
        self._sequence += 1
        return self._sequence

    def _message(self, event: str, **body: object) -> str:
        message = {"event": event, "sequenceNumber": str(self._next()), **body}
        return json.dumps({**message, "streamSid": self.stream_sid}, separators=(",", ":"))

    def connected(self) -> str:
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

    def media(self, payload: str) -> str:
        self._chunk += 1
        return (
            f'{{"event":"media","sequenceNumber":"{self._next()}","media":{{"track":"inbound",'
            f'"chunk":"{self._chunk}","timestamp":"{(self._chunk - 1) * 20}",'
            f'"payload":"{payload}"}},"streamSid":"{self.stream_sid}"}}'
        )

    def mark(self, name: str) -> str:
        return self._message("mark", mark={"name": name})

    def stop(self) -> str:
        ids = {"accountSid": self.account_sid, "callSid": self.call_sid}
        return self._message("stop", stop=ids)


Inbound = tuple[Literal["media", "mark", "clear", "other"], int | str]
"""(kind, audio bytes for media | mark name | 0)."""


def classify(raw: str | bytes) -> Inbound:
    """One gateway message. Media takes a fast path: its audio length from the base64 length.

    Raises ValueError on a message that is not the JSON Twilio's protocol allows.
    """
    if isinstance(raw, bytes):
        raise ValueError("binary frame from the gateway")
    if raw.startswith(MEDIA_EVENT):
        start = raw.find(PAYLOAD_KEY)
        end = raw.find('"', start + len(PAYLOAD_KEY)) if start >= 0 else -1
        if end > 0:
            size = end - start - len(PAYLOAD_KEY)
            padding = (raw[end - 1] == "=") + (raw[end - 2] == "=")
            return "media", size * 3 // 4 - padding
    msg = json.loads(raw)
    event = msg.get("event")
    if event == "media":
        return "media", len(base64.b64decode(msg["media"]["payload"], validate=True))
    if event == "mark":
        return "mark", str(msg["mark"]["name"])
    if event == "clear":
        return "clear", 0
    return "other", 0


FRAME_BYTES = FRAME_SAMPLES
"""Bytes of one 20 ms mu-law frame."""
