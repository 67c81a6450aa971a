"""A stand-in text-to-speech for benchmarks: the same speech-shaped signal for every sentence.

The signal (a 150 Hz voice with harmonics, its loudness moving at a syllable rate of 4 Hz,
under a little noise) is computed once per process and handed out as ready 20 ms chunks, so
a sentence costs the gateway nothing but its own playout work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import cache
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipeline.frames import CANONICAL_FRAME_BYTES, CANONICAL_RATE, AudioEncoding


class StandinTTSConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Literal["standin"] = "standin"
    secs: float = Field(default=1.0, gt=0, le=10)
    """How long each sentence sounds, rounded to whole 20 ms frames."""


@cache
def speech_like_chunks(secs: float) -> tuple[bytes, ...]:
    """`secs` of the stand-in signal as 16 kHz PCM16 chunks of 20 ms (shared, immutable)."""
    frames = max(1, round(secs * 50))
    t = np.arange(frames * CANONICAL_FRAME_BYTES // 2) / CANONICAL_RATE
    voice = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t - np.pi / 2)
    noise = np.random.default_rng(0).standard_normal(len(t)) * 0.05
    signal = (voice * syllables + noise) * 6000
    pcm = np.clip(np.rint(signal), -32768, 32767).astype("<i2").tobytes()
    return tuple(
        pcm[start : start + CANONICAL_FRAME_BYTES]
        for start in range(0, len(pcm), CANONICAL_FRAME_BYTES)
    )


class StandinTTS:
    encoding: AudioEncoding = "pcm16k"

    def __init__(self, config: StandinTTSConfig | None = None):
        self._chunks = speech_like_chunks((config or StandinTTSConfig()).secs)

    async def warm_up(self) -> None:
        """Nothing to load (the signal is computed on first use and cached)."""

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk
