"""Streaming sample-rate conversion of 16-bit PCM, one stream per call and direction."""

from __future__ import annotations

import numpy as np
import soxr

_EMPTY = np.zeros(0, dtype=np.int16)


class StreamResampler:
    """Converts a continuous PCM16 LE mono stream from `in_rate` to `out_rate`.

    Resampling each chunk on its own clicks at chunk borders (every chunk restarts the filter);
    this keeps the filter state across `process` calls, so the concatenated output equals a
    one-shot conversion of the whole signal (to within soxr's +-2 LSB of dither).

    Quality is soxr 'HQ' (passband flat to 3.7 kHz at 8 kHz). MQ measured the same delay and
    LQ/QQ lose 8 dB at 3.4 kHz or alias, so HQ costs nothing extra. soxr filters in DFT blocks,
    so output comes in bursts. Measured when fed 20 ms chunks (latency = input fed - output
    given): 8k<->16k mean 64 ms (12..115 ms), first output after 120 ms of input;
    22.05k/24k->16k mean 21-23 ms (6..39 ms), first output after 40 ms. Call `flush()` at the
    end of a stretch of audio (e.g. the end of a TTS utterance) to get the held-back tail.

    Equal rates pass bytes through untouched.
    """

    __slots__ = ("_stream",)

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ")
        )

    def process(self, pcm: bytes) -> bytes:
        """Feeds whole 16-bit samples; returns whatever output is ready (may be empty)."""
        if self._stream is None:
            return pcm
        return self._stream.resample_chunk(np.frombuffer(pcm, dtype=np.int16)).tobytes()

    def flush(self) -> bytes:
        """Returns the held-back tail and resets, ready for a new, unrelated stretch of audio."""
        if self._stream is None:
            return b""
        tail = self._stream.resample_chunk(_EMPTY, last=True).tobytes()
        self._stream.clear()
        return tail
