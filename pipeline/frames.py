"""The one audio format that crosses the provider/pipeline boundary."""

from __future__ import annotations

from dataclasses import dataclass

CANONICAL_RATE = 16_000
"""Sample rate of every frame inside the pipeline."""

FRAME_MS = 20
SAMPLE_WIDTH = 2
CANONICAL_FRAME_BYTES = CANONICAL_RATE * FRAME_MS // 1000 * SAMPLE_WIDTH  # 640


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """Signed 16-bit little-endian mono PCM with its rate and media timestamp (seconds)."""

    pcm: bytes
    sample_rate: int = CANONICAL_RATE
    timestamp: float = 0.0

    @property
    def samples(self) -> int:
        return len(self.pcm) // SAMPLE_WIDTH

    @property
    def duration(self) -> float:
        return self.samples / self.sample_rate


def frame_bytes(sample_rate: int, ms: int = FRAME_MS) -> int:
    """Bytes of 16-bit mono PCM in `ms` milliseconds at `sample_rate`."""
    return sample_rate * ms // 1000 * SAMPLE_WIDTH
