"""DTMF over RTP: the telephone-event payload (RFC 4733 section 2.3).

One key press is one event: a sender repeats its packets every ptime with a growing duration
(all with the event's start timestamp, the first one marked) and ends it with three packets
carrying the E bit. The receiver therefore counts events by timestamp, not by packet.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from providers.sip.rtp import SAMPLES_PER_FRAME

DIGITS = "0123456789*#ABCD"
"""Event codes 0-15 (RFC 4733 section 3.2); other events (flash, tones) are not digits."""
END_PACKETS = 3
_PAYLOAD = struct.Struct("!BBH")


class Rfc4733Error(ValueError):
    """A telephone-event payload that cannot be read."""


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    event: int
    end: bool = False
    volume: int = 10
    """Power level in -dBm0 (0..63)."""
    duration: int = 0
    """In RTP timestamp units since the event's timestamp."""

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        if len(payload) < _PAYLOAD.size:
            raise Rfc4733Error(f"telephone-event payload of {len(payload)} bytes, expected 4")
        event, flags, duration = _PAYLOAD.unpack_from(payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def serialize(self) -> bytes:
        if not (0 <= self.event <= 255 and 0 <= self.volume <= 63 and 0 <= self.duration <= 0xFFFF):
            raise Rfc4733Error(f"telephone-event field out of range: {self}")
        return _PAYLOAD.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)

    @property
    def digit(self) -> str | None:
        return DIGITS[self.event] if self.event < len(DIGITS) else None


class EventPacket(NamedTuple):
    payload: bytes
    marker: bool


def digit_packets(digit: str, duration_ms: int = 100, volume: int = 10) -> list[EventPacket]:
    """The payloads of one key press, one per 20 ms tick, all sent with the same timestamp."""
    code = DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if code < 0:
        raise Rfc4733Error(f"{digit!r} is not a DTMF digit (0-9, *, #, A-D)")
    ticks = max(1, duration_ms // 20)
    packets = [
        EventPacket(TelephoneEvent(code, False, volume, n * SAMPLES_PER_FRAME).serialize(), n == 1)
        for n in range(1, ticks + 1)
    ]
    end = TelephoneEvent(code, True, volume, ticks * SAMPLES_PER_FRAME).serialize()
    return packets + [EventPacket(end, False)] * END_PACKETS


class DtmfReceiver:
    """Turns the packets of telephone events into digits, exactly one per event.

    Packets of an event seen before (by timestamp) are repeats; so is a long event's next
    segment (RFC 4733 section 2.5.1.3: same event, new timestamp = previous one + its duration,
    previous one not ended). Any packet of a new event announces it, so a lost start packet
    does not lose the digit.
    """

    __slots__ = ("_last", "_last_timestamp", "_seen")

    def __init__(self) -> None:
        self._seen: deque[int] = deque(maxlen=16)
        self._last: TelephoneEvent | None = None
        self._last_timestamp = 0

    def receive(self, timestamp: int, payload: bytes) -> str | None:
        """The digit if this packet starts a new event, else None (Rfc4733Error if unreadable)."""
        event = TelephoneEvent.parse(payload)
        last = self._last
        if timestamp in self._seen:
            if timestamp == self._last_timestamp:
                self._last = event
            return None
        continuation = (
            last is not None
            and not last.end
            and last.event == event.event
            and timestamp == (self._last_timestamp + last.duration) & 0xFFFFFFFF
        )
        self._seen.append(timestamp)
        self._last, self._last_timestamp = event, timestamp
        return None if continuation else event.digit
