"""An answer spoken on one vendor stream (`AnswerStream`): the LLM's text goes out in whole
words as it is written, with a flush at each sentence end, and each chunk of audio that comes
back is placed in the sentence it speaks, by counting the characters the vendor says it spoke.

Placing audio in sentences keeps what the rest of the conversation relies on: a mark after each
sentence, and after a barge-in the heard part of the answer (`Response.heard_text`).
"""

from __future__ import annotations

import re

from pipeline.response import Response, SpokenSentence
from pipeline.sentences import SentenceChunker
from pipeline.tts.base import AnswerStream

_LAST_SPACE = re.compile(r"\s(?=\S*$)")


def _chars(text: str) -> int:
    """The characters a vendor's alignment counts: all but blanks."""
    return sum(1 for ch in text if not ch.isspace())


class AnswerFeed:
    """The text side: `push` LLM text, `finish` at its end. Sentences appear in `response` as
    soon as their first words go out (their text is set once they are complete)."""

    def __init__(self, answer: AnswerStream, response: Response) -> None:
        self._answer = answer
        self._response = response
        self._chunker = SentenceChunker()
        self._text = ""
        """Text not yet part of a complete sentence (with what went out of it already)."""
        self._sent = 0
        """How much of `_text` went out."""
        self._current: SpokenSentence | None = None
        self._ends: list[int] = []
        """Characters (`_chars`) from the answer's start to the end of each sentence."""

    async def push(self, delta: str) -> list[str]:
        """Forward `delta`'s whole words; returns the sentences it completes."""
        self._text += delta
        sentences = self._chunker.push(delta)
        for sentence in sentences:
            end = self._text.index(sentence, 0) + len(sentence)
            await self._forward(end, flush=True)
            self._close_sentence(sentence)
            self._text, self._sent = self._text[end:], 0
        space = _LAST_SPACE.search(self._text, self._sent)
        if space is not None:
            await self._forward(space.end(), flush=False)
        return sentences

    async def finish(self) -> str | None:
        """The end of the LLM's text: the rest goes out and the vendor's input is closed.
        Returns the last sentence, if any text was left."""
        rest = self._chunker.flush()
        if rest:
            await self._forward(len(self._text), flush=False)
            self._close_sentence(rest)
        self._text, self._sent = "", 0
        await self._answer.close()
        return rest

    def sentence_at(self, chars: int) -> int:
        """Index of the sentence holding the answer's character `chars` (the last one past
        the end: audio of text the vendor had before the sentence's end is known)."""
        for index, end in enumerate(self._ends):
            if chars < end:
                return index
        return len(self._ends) - 1

    async def _forward(self, end: int, flush: bool) -> None:
        piece = self._text[self._sent : end]
        self._sent = end
        if not piece.strip() and not flush:
            return
        if self._current is None:
            self._current = self._response.start("")
            self._ends.append(self._ends[-1] if self._ends else 0)
        self._ends[-1] += _chars(piece)
        await self._answer.send(piece.lstrip(), flush=flush)

    def _close_sentence(self, text: str) -> None:
        assert self._current is not None, "a sentence with text has had its words sent"
        self._current.text = text
        self._current = None
