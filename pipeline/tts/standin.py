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

from pipeline.codecs import pcm_to_ulaw
from pipeline.frames import BYTES_PER_SEC, FRAME_BYTES, AudioEncoding


class StandinTTSConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Literal["standin"] = "standin"
    secs: float = Field(default=1.0, gt=0, le=10)
    """How long each sentence sounds, rounded to whole 20 ms frames."""
    encoding: AudioEncoding = "pcm16k"
    """"ulaw8k" stands in for a cloud voice that speaks the phone's own codec (ElevenLabs,
    Cartesia), which the gateway passes through untouched."""


@cache
def speech_like_chunks(secs: float, encoding: AudioEncoding = "pcm16k") -> tuple[bytes, ...]:
    """`secs` of the stand-in signal as 20 ms chunks in `encoding` (shared, immutable)."""
    rate = BYTES_PER_SEC[encoding] // (2 if encoding == "pcm16k" else 1)
    frames = max(1, round(secs * 50))
    t = np.arange(frames * rate // 50) / rate
    voice = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t - np.pi / 2)
    noise = np.random.default_rng(0).standard_normal(len(t)) * 0.05
    signal = (voice * syllables + noise) * 6000
    pcm = np.clip(np.rint(signal), -32768, 32767).astype("<i2").tobytes()
    audio = pcm if encoding == "pcm16k" else pcm_to_ulaw(pcm)
    size = FRAME_BYTES[encoding]
    return tuple(audio[start : start + size] for start in range(0, len(audio), size))


class StandinTTS:
    def __init__(self, config: StandinTTSConfig | None = None):
        config = config or StandinTTSConfig()
        self.encoding: AudioEncoding = config.encoding
        self._chunks = speech_like_chunks(config.secs, config.encoding)

    async def warm_up(self) -> None:
        """Nothing to load (the signal is computed on first use and cached)."""

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk
