"""Speech-to-text interface."""

from __future__ import annotations

from typing import Protocol


class SpeechToText(Protocol):
    """Turns one caller turn (16 kHz PCM16 mono) into text."""

    async def transcribe(self, pcm: bytes) -> str: ...
