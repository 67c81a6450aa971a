"""The one audio format that crosses the provider/pipeline boundary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CANONICAL_RATE = 16_000
"""Sample rate of every frame inside the pipeline."""

FRAME_MS = 20
SAMPLE_WIDTH = 2
CANONICAL_FRAME_BYTES = CANONICAL_RATE * FRAME_MS // 1000 * SAMPLE_WIDTH  # 640

AudioEncoding = Literal["pcm16k", "ulaw8k"]
"""How agent audio travels to the wire: canonical PCM, or telephone mu-law that a vendor made
(ElevenLabs, Cartesia) and that goes out untouched."""
BYTES_PER_SEC: dict[AudioEncoding, int] = {"pcm16k": CANONICAL_RATE * SAMPLE_WIDTH, "ulaw8k": 8000}
FRAME_BYTES: dict[AudioEncoding, int] = {
    encoding: rate * FRAME_MS // 1000 for encoding, rate in BYTES_PER_SEC.items()
}
"""Bytes of a 20 ms frame: 640 of PCM, 160 of mu-law."""
SILENCE_BYTE: dict[AudioEncoding, bytes] = {"pcm16k": b"\x00", "ulaw8k": b"\xff"}


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
