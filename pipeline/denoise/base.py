"""What every noise suppressor offers, and the 10 ms hop they all work in."""

from __future__ import annotations

from typing import Protocol

from pipeline.frames import CANONICAL_RATE, SAMPLE_WIDTH

HOP = CANONICAL_RATE // 100  # samples in the 10 ms hop every backend steps by (160)
HOP_BYTES = HOP * SAMPLE_WIDTH  # 320


class Denoiser(Protocol):
    """One call's noise suppressor for 16 kHz PCM16 LE mono.

    `process` works in whole 10 ms hops: fed 20 ms frames (or any multiple of 10 ms), it returns
    exactly as many bytes as it was given; a ragged tail waits for the next call. The output lags
    the input by `delay_samples` (the algorithm's own delay, no buffering).
    """

    delay_samples: int

    def process(self, pcm16k: bytes) -> bytes: ...


class PassThrough:
    """`denoise: none`: the audio as it came."""

    delay_samples = 0

    def process(self, pcm16k: bytes) -> bytes:
        return pcm16k


class HopSplitter:
    """Holds back the ragged tail of a chunk so that only whole hops go on."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def whole_hops(self, pcm: bytes) -> bytes:
        """`pcm` after what was held back, cut to whole hops; the rest is held back."""
        if self._pending:
            pcm = self._pending + pcm
        usable = len(pcm) - len(pcm) % HOP_BYTES
        if usable == len(pcm):
            self._pending = b""
            return pcm
        self._pending = pcm[usable:]
        return pcm[:usable]
