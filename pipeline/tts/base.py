"""Text-to-speech interface."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol


class TextToSpeech(Protocol):
    """Speaks text as a stream of 16 kHz PCM16 mono chunks of any length."""

    def synthesize(self, text: str) -> AsyncIterator[bytes]: ...
