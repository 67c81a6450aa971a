"""The phone (Twilio) end of Media Streams, lean enough for 200 calls in one process.

Outbound media messages are filled into a template around payloads that were base64-encoded
once for all calls; inbound agent audio is recognised and measured without decoding it.
Webhook, TwiML, SIDs and the other messages come from `gateway.simulated_twilio.TwilioDialect`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Literal

from gateway.simulated_audio import FRAME_SAMPLES, ULAW_SILENCE, CallerAudio
from gateway.simulated_twilio import TwilioDialect

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
    """The media messages of one stream, filled into a template; its other messages, and the
    `sequenceNumber` they all share, come from the call's `TwilioDialect`."""

    def __init__(self, dialect: TwilioDialect) -> None:
        self.dialect = dialect
        self._chunk = 0

    def media(self, payload: str) -> str:
        self._chunk += 1
        return (
            f'{{"event":"media","sequenceNumber":"{self.dialect.next_sequence()}",'
            f'"media":{{"track":"inbound","chunk":"{self._chunk}",'
            f'"timestamp":"{(self._chunk - 1) * 20}","payload":"{payload}"}},'
            f'"streamSid":"{self.dialect.stream_sid}"}}'
        )


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
