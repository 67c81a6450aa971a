"""The sending half of one call's RTP, without I/O: agent audio, marks and RFC 4733 digits in,
one packet per 20 ms tick out (the edge's clock calls `tick`).

Agent audio is queued as 20 ms payloads already in the negotiated law. While the peer may hear
us and nothing is queued, each tick sends comfort silence (the law's zero code), so the stream
never pauses between the agent's turns: carriers, PBXs (Asterisk's rtptimeout) and SBCs hang up
on RTP silence, and NAT pinholes close. Timestamps follow the tick, so they stay continuous;
the first packet of each agent talkspurt carries the marker bit (RFC 3551 §4.1). On hold
(`sending` false) nothing is sent, while queued audio and marks are still consumed in time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from providers.g711_audio import G711Audio
from providers.sip.jitter import FRAME_BYTES
from providers.sip.rfc4733 import EventPacket, digit_packets
from providers.sip.rtp import SILENCE, ULAW_TO_ALAW, RtpSender

DTMF_GAP_TICKS = 3  # 60 ms between two digits
LAWS = {"PCMU": "ulaw", "PCMA": "alaw"}

_Outgoing = bytes | EventPacket | str | None
"""Send queue item, one tick each except marks: audio payload (wire law), a telephone-event
packet, a mark's name (no tick: acknowledged once what came before is sent), a silent tick."""


class RtpOutput:
    """One call's outgoing stream; `marked(name)` is called as each mark is reached."""

    def __init__(
        self,
        codec: str,
        payload_type: int,
        dtmf_payload_type: int | None,
        marked: Callable[[str], None],
        sender: RtpSender | None = None,
    ) -> None:
        if codec not in LAWS:
            raise ValueError(f"codec {codec!r} is not PCMU or PCMA")
        self.codec = codec
        self.payload_type = payload_type
        self.dtmf_payload_type = dtmf_payload_type
        self.sender = sender or RtpSender()
        self._marked = marked
        self._queue: deque[_Outgoing] = deque()
        self._partial = bytearray()
        self._encoder = G711Audio(LAWS[codec])  # type: ignore[arg-type]
        self._resampling = False  # agent audio is held in the resampler since the last flush
        self._silence = bytes((SILENCE[codec],)) * FRAME_BYTES
        self._speaking = False  # the last packet sent was agent audio
        self._event_timestamp = 0

    def audio(self, audio: bytes, encoding: str = "pcm16k") -> None:
        """Queues agent audio: "pcm16k" (16 kHz PCM) or "ulaw8k" (8 kHz mu-law codes)."""
        if encoding == "pcm16k":
            self._partial += self._encoder.outbound(audio)
            self._resampling = True
        elif encoding == "ulaw8k":
            self._partial += audio if self.codec == "PCMU" else audio.translate(ULAW_TO_ALAW)
        else:
            raise ValueError(f"unknown audio encoding {encoding!r}")
        self._queue_whole_frames()

    def mark(self, name: str) -> None:
        """`marked(name)` once everything queued before it has been sent (at once if nothing)."""
        if self._resampling:
            self._partial += self._encoder.flush_outbound()
            self._resampling = False
        self._partial += self._silence[: -len(self._partial) % FRAME_BYTES]
        self._queue_whole_frames()
        self._queue.append(name)
        self._acknowledge()

    def clear(self) -> None:
        """Drops queued audio and marks before the next tick (a DTMF event still finishes)."""
        self._encoder.flush_outbound()
        self._resampling = False
        self._partial.clear()
        kept = [item for item in self._queue if isinstance(item, EventPacket)]
        self._queue.clear()
        self._queue.extend(kept)

    def dtmf(self, digits: str) -> int:
        """Queues RFC 4733 events for `digits` (all valid, or none queued); how many."""
        if self.dtmf_payload_type is None:
            raise RuntimeError("the peer did not negotiate telephone-event: no RFC 4733 DTMF")
        events = [digit_packets(digit) for digit in digits]
        for packets in events:
            self._queue.extend(packets)
            self._queue.extend([None] * DTMF_GAP_TICKS)
        return len(events)

    def tick(self, tick: int, sending: bool) -> bytes | None:
        """The packet for 20 ms tick number `tick` (None when not `sending`)."""
        self._acknowledge()
        item = self._queue.popleft() if self._queue else None
        packet = None
        if not sending:
            self._speaking = False  # the clock runs on, the audio goes nowhere
        elif isinstance(item, EventPacket):
            assert self.dtmf_payload_type is not None
            if item.marker:
                self._event_timestamp = self.sender.timestamp_at(tick)
            packet = self.sender.packet(
                item.payload, self.dtmf_payload_type, self._event_timestamp, item.marker
            )
            self._speaking = False
        elif item is None:
            packet = self.sender.audio(self._silence, self.payload_type, tick)
            self._speaking = False
        else:
            assert isinstance(item, bytes)
            packet = self.sender.audio(item, self.payload_type, tick, talkspurt=not self._speaking)
            self._speaking = True
        self._acknowledge()
        return packet

    def _queue_whole_frames(self) -> None:
        whole = len(self._partial) - len(self._partial) % FRAME_BYTES
        for start in range(0, whole, FRAME_BYTES):
            self._queue.append(bytes(self._partial[start : start + FRAME_BYTES]))
        del self._partial[:whole]

    def _acknowledge(self) -> None:
        queue = self._queue
        while queue and isinstance(queue[0], str):
            self._marked(queue.popleft())  # type: ignore[arg-type]
