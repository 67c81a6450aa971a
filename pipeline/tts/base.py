"""Text-to-speech interface.

A TTS speaks in one `encoding`: the local ones in canonical 16 kHz PCM, the vendors that speak
telephone mu-law (ElevenLabs, Cartesia) in their own bytes, which go to the wire untouched.
A TTS that can take a whole answer on one stream (`StreamingTextToSpeech`) gets the LLM's text
as it is written and says which text each chunk of audio speaks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from pipeline.frames import AudioEncoding


class TextToSpeech(Protocol):
    encoding: AudioEncoding
    """What `synthesize` yields."""

    def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """`text` as audio chunks of any length, as they are made."""
        ...


class AnswerStream(Protocol):
    """One answer on one vendor stream. Text goes in from one task while `audio()` is read in
    another; `cancel()` (barge-in) ends both at once."""

    async def send(self, text: str, flush: bool = False) -> None:
        """More of the answer; `flush` when a sentence ends, to have it spoken now."""
        ...

    async def close(self) -> None:
        """No more text: the vendor finishes the audio and ends the stream."""
        ...

    async def cancel(self) -> None: ...

    def audio(self) -> AsyncIterator[tuple[bytes, int | None]]:
        """Chunks with how many non-blank characters of the text they speak (None: unknown)."""
        ...


@runtime_checkable
class StreamingTextToSpeech(TextToSpeech, Protocol):
    async def open_answer(self) -> AnswerStream: ...
