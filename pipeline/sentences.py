"""Cut a streamed LLM answer into sentences, so TTS can start before the answer is complete."""

from __future__ import annotations

import re

SENTENCE_END = re.compile(r"(?<=[.!?;:])[\"')\]]*\s+")
MIN_CHARS = 12
"""A 'sentence' shorter than this ("Hi." "Mr.") waits for more text, to keep prosody natural."""


class SentenceChunker:
    def __init__(self) -> None:
        self._pending = ""

    def push(self, delta: str) -> list[str]:
        """Add streamed text; return the sentences it completes."""
        self._pending += delta
        sentences: list[str] = []
        start = 0
        for match in SENTENCE_END.finditer(self._pending):
            candidate = self._pending[start : match.end()].strip()
            if len(candidate) >= MIN_CHARS:
                sentences.append(candidate)
                start = match.end()
        self._pending = self._pending[start:]
        return sentences

    def flush(self) -> str | None:
        """The remaining text at the end of the answer, if any."""
        rest, self._pending = self._pending.strip(), ""
        return rest or None
