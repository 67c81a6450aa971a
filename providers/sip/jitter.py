"""Receive jitter buffer for 20 ms mu-law RTP packets: one frame out per 20 ms tick.

Packets are keyed by sequence number, unwrapped past 65535 into an ever-growing index, so
reordering is undone and duplicates and packets that come after their turn are dropped.

Playout starts once `depth` packets are buffered (or the first has waited that many ticks).
A missing packet while later ones are buffered is lost: the last frame is repeated, quieter
each time, then silence. An empty buffer is an underrun (the network was slow, or the sender
paused, as in silence suppression, where the sequence goes on but the timestamp jumps): we play
silence for as long as it lasts, then go on from the first packet that arrives, so a pause never
turns into latency. An underrun that ends with the very packet we were waiting for means jitter
outgrew the buffer: the depth grows by a frame (up to `max_depth`), and shrinks back by one after
`SHRINK_AFTER_TICKS` without an underrun. A new SSRC, or a jump of the sequence further than
`MAX_JUMP` either way (a restarted sender), starts over as a new stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.codecs import pcm_to_ulaw, ulaw_to_pcm

FRAME_BYTES = 160
ULAW_SILENCE = b"\xff" * FRAME_BYTES
MAX_JUMP = 1000
"""Sequence numbers (20 s of packets) beyond which a packet starts a new stream."""
SHRINK_AFTER_TICKS = 500
CONCEALED_REPEATS = 3
"""Lost frames covered by repeating the last one (each at half the level), before silence."""


def _halving_table() -> bytes:
    samples = memoryview(bytearray(ulaw_to_pcm(bytes(range(256))))).cast("h")
    for i, sample in enumerate(samples):
        samples[i] = sample // 2
    return pcm_to_ulaw(samples.tobytes())


_HALVE = _halving_table()


@dataclass(slots=True)
class JitterStats:
    received: int = 0
    duplicates: int = 0
    late: int = 0
    lost: int = 0
    concealed: int = 0
    resets: int = 0


class JitterBuffer:
    def __init__(self, depth: int = 3, min_depth: int = 2, max_depth: int = 8) -> None:
        if not 1 <= min_depth <= depth <= max_depth:
            raise ValueError("need 1 <= min_depth <= depth <= max_depth")
        self._min_depth, self._max_depth = min_depth, max_depth
        self.depth = depth
        self.stats = JitterStats()
        self._start_depth = depth
        self._reset(None)

    def _reset(self, ssrc: int | None) -> None:
        self._ssrc = ssrc
        self._packets: dict[int, bytes] = {}
        self._highest: int | None = None  # unwrapped index of the highest sequence seen
        self._highest_timestamp = 0
        self._next: int | None = None  # index of the next frame to play; None until playing
        self._waited = 0  # ticks since the first packet, while not yet playing
        self._underrun = False
        self._calm_ticks = 0
        self._last = ULAW_SILENCE
        self._repeats = 0
        self.depth = self._start_depth

    @property
    def buffered(self) -> int:
        return len(self._packets)

    def push(self, sequence: int, timestamp: int, ssrc: int, payload: bytes) -> None:
        """Files one received packet's payload (mu-law) under its sequence number."""
        stats = self.stats
        stats.received += 1
        if ssrc != self._ssrc:
            if self._ssrc is not None:
                stats.resets += 1
            self._reset(ssrc)
        index = self._unwrap(sequence)
        if self._highest is not None and abs(index - self._highest) > MAX_JUMP:
            stats.resets += 1
            self._reset(ssrc)
            index = sequence
        if self._underrun and self._next is not None and index >= self._next:
            if index == self._next and not self._paused(index, timestamp):
                self._grow()
            else:
                stats.lost += index - self._next
            self._next, self._underrun = index, False
        if self._next is not None and index < self._next:
            stats.late += 1
            return
        if index in self._packets:
            stats.duplicates += 1
            return
        self._packets[index] = payload
        if self._highest is None or index > self._highest:
            self._highest, self._highest_timestamp = index, timestamp

    def pull(self) -> bytes | None:
        """The next 20 ms frame; None while no stream has started playing."""
        index = self._next if self._next is not None else self._start()
        if index is None:
            return None
        frame = self._packets.pop(index, None)
        if frame is not None:
            self._next = index + 1
            self._last, self._repeats = frame, 0
            self._settle()
            return frame
        if self._packets:  # later packets are here: this one is lost
            self.stats.lost += 1
            self._next = index + 1
        else:
            self._underrun = True
            self._calm_ticks = 0
        return self._conceal()

    def _start(self) -> int | None:
        """Where playout begins, once enough is buffered (None: not yet)."""
        if not self._packets:
            return None
        self._waited += 1
        if len(self._packets) < self.depth and self._waited < self.depth:
            return None
        self._next = min(self._packets)
        return self._next

    def _settle(self) -> None:
        """Keep latency bounded: drop the oldest frames past max_depth, shrink when calm."""
        next_index = self._next
        assert next_index is not None
        excess = len(self._packets) - self._max_depth
        if excess > 0:
            for index in sorted(self._packets)[:excess]:
                del self._packets[index]
            self.stats.lost += excess
            next_index = min(self._packets)
        self._calm_ticks += 1
        if self._calm_ticks >= SHRINK_AFTER_TICKS and self.depth > self._min_depth:
            self.depth -= 1
            self._calm_ticks = 0
            if len(self._packets) > self.depth:  # play one frame less of buffered audio
                self._packets.pop(next_index, None)
                next_index += 1
                self.stats.lost += 1
        self._next = next_index

    def _paused(self, index: int, timestamp: int) -> bool:
        """Did the timestamp run ahead of the sequence (the sender paused, silence suppression)?"""
        assert self._highest is not None
        expected = self._highest_timestamp + (index - self._highest) * FRAME_BYTES
        return (timestamp - expected) & 0xFFFFFFFF != 0

    def _grow(self) -> None:
        if self.depth < self._max_depth:
            self.depth += 1

    def _conceal(self) -> bytes:
        self.stats.concealed += 1
        if self._repeats >= CONCEALED_REPEATS:
            return ULAW_SILENCE
        self._repeats += 1
        self._last = self._last.translate(_HALVE)
        return self._last

    def _unwrap(self, sequence: int) -> int:
        """The sequence number as an index that keeps counting past 65535 (and back)."""
        if self._highest is None:
            return sequence
        delta = (sequence - self._highest) & 0xFFFF
        if delta >= 0x8000:
            delta -= 0x10000
        return self._highest + delta
