"""RTP packets (RFC 3550) as values, and the sending side's sequence/timestamp/SSRC state.

Also the G.711 byte tables the RTP edge needs: silence codes and A-law <-> mu-law transcoding
with `bytes.translate` (one table lookup per byte, no PCM round trip per packet).
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass

from pipeline.codecs import alaw_to_pcm, pcm_to_alaw, pcm_to_ulaw, ulaw_to_pcm

VERSION = 2
HEADER_BYTES = 12
SAMPLES_PER_FRAME = 160
"""20 ms at the 8 kHz RTP clock of G.711 and telephone-event."""

PCMU, PCMA, COMFORT_NOISE = 0, 8, 13
"""Static payload types (RFC 3551)."""
SILENCE = {"PCMU": 0xFF, "PCMA": 0xD5}
"""The code of a zero sample in each law."""

ULAW_TO_ALAW = pcm_to_alaw(ulaw_to_pcm(bytes(range(256))))
ALAW_TO_ULAW = pcm_to_ulaw(alaw_to_pcm(bytes(range(256))))

_HEADER = struct.Struct("!BBHII")
_EXTENSION = struct.Struct("!HH")


class RtpError(ValueError):
    """A datagram that is not a well-formed RTP packet; str() says why."""


@dataclass(slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None
    """(profile-defined id, data whose length is a multiple of 4)."""
    padding: int = 0
    """Padding bytes after the payload (the last one holds the count), 0 for none."""

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < HEADER_BYTES:
            raise RtpError(f"{len(data)} bytes is shorter than an RTP header")
        first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
        if first >> 6 != VERSION:
            raise RtpError(f"RTP version {first >> 6}, expected 2")
        end = len(data)
        padding = 0
        if first & 0x20:
            padding = data[-1]
            if padding == 0:
                raise RtpError("padding bit set but the padding count is 0")
            end -= padding
        offset = HEADER_BYTES + 4 * (first & 0x0F)
        if offset > end:
            raise RtpError("CSRC list runs past the packet")
        csrc = struct.unpack_from(f"!{first & 0x0F}I", data, HEADER_BYTES)
        extension = None
        if first & 0x10:
            if offset + 4 > end:
                raise RtpError("header extension runs past the packet")
            profile, words = _EXTENSION.unpack_from(data, offset)
            offset += 4
            if offset + 4 * words > end:
                raise RtpError("header extension runs past the packet")
            extension = (profile, data[offset : offset + 4 * words])
            offset += 4 * words
        return cls(
            payload_type=second & 0x7F,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=data[offset:end],
            marker=bool(second & 0x80),
            csrc=csrc,
            extension=extension,
            padding=padding,
        )

    def serialize(self) -> bytes:
        if len(self.csrc) > 15:
            raise RtpError("at most 15 CSRCs fit in an RTP header")
        if not 0 <= self.padding <= 255:
            raise RtpError("padding must be 0..255 bytes")
        first = VERSION << 6 | len(self.csrc)
        if self.padding:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        second = self.payload_type & 0x7F | (0x80 if self.marker else 0)
        parts = [_HEADER.pack(first, second, self.sequence, self.timestamp, self.ssrc)]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            profile, data = self.extension
            if len(data) % 4:
                raise RtpError("header extension data must be a multiple of 4 bytes")
            parts.append(_EXTENSION.pack(profile, len(data) // 4))
            parts.append(data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)


class RtpSender:
    """One outgoing stream: random SSRC and initial sequence/timestamp (RFC 3550 section 5.1).

    The edge's pacer counts 20 ms ticks from the start of the stream; a packet's timestamp is
    derived from its tick, so timestamps keep advancing across pauses in which nothing is sent,
    and the first audio packet after such a pause carries the marker bit, as does the first
    packet of a talkspurt the caller says begins (after comfort silence, which is sent).
    """

    __slots__ = ("_base", "_last_audio_tick", "octets_sent", "packets_sent", "sequence", "ssrc")

    def __init__(self, ssrc: int | None = None) -> None:
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc
        self.sequence = secrets.randbits(16)
        self._base = secrets.randbits(32)
        self._last_audio_tick: int | None = None
        self.packets_sent = 0
        self.octets_sent = 0

    def timestamp_at(self, tick: int) -> int:
        return (self._base + tick * SAMPLES_PER_FRAME) & 0xFFFFFFFF

    def audio(
        self, payload: bytes, payload_type: int, tick: int, *, talkspurt: bool = False
    ) -> bytes:
        """The audio packet sent at `tick`; marked if it starts a talkspurt or if the previous
        tick sent no audio."""
        marker = talkspurt or self._last_audio_tick is None or tick != self._last_audio_tick + 1
        self._last_audio_tick = tick
        return self.packet(payload, payload_type, self.timestamp_at(tick), marker)

    def packet(self, payload: bytes, payload_type: int, timestamp: int, marker: bool) -> bytes:
        """Any packet of this stream (audio or telephone-event): takes the next sequence."""
        second = payload_type | (0x80 if marker else 0)
        header = _HEADER.pack(VERSION << 6, second, self.sequence, timestamp, self.ssrc)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return header + payload
