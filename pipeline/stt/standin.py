"""A stand-in speech-to-text for benchmarks: no model, an answer at once.

`make bench` measures the gateway itself (codecs, denoise, VAD, turn detection, pacing,
protocol), so recognition must cost nothing and say the same thing every time: either a fixed
transcript or, by default, one made-up word per 0.4 s of audio (never empty for real audio).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.frames import CANONICAL_RATE

BYTES_PER_SEC = CANONICAL_RATE * 2
WORD_SECS = 0.4
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")


class StandinSTTConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Literal["standin"] = "standin"
    text: str | None = Field(default=None, max_length=1000)
    """The transcript of every turn; unset: one word per 0.4 s of the turn's audio."""


class StandinSTT:
    def __init__(self, config: StandinSTTConfig | None = None):
        self._text = (config or StandinSTTConfig()).text

    async def warm_up(self) -> None:
        """Nothing to load."""

    async def transcribe(self, pcm: bytes) -> str:
        if self._text is not None:
            return self._text
        words = max(1, round(len(pcm) / BYTES_PER_SEC / WORD_SECS))
        return " ".join(WORDS[i % len(WORDS)] for i in range(words))
