"""An agent answer being spoken, and how much of it the caller has heard."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass(slots=True)
class SpokenSentence:
    text: str
    audio_secs: float = 0.0
    heard: asyncio.Future[bool] | None = None
    """Set once the sentence is fully queued: its mark's future."""


@dataclass(slots=True)
class Response:
    sentences: list[SpokenSentence] = field(default_factory=list)
    committed: bool = False
    """Its first audio went out: the caller's turn it answers is in the context."""

    def start(self, text: str) -> SpokenSentence:
        sentence = SpokenSentence(text)
        self.sentences.append(sentence)
        return sentence

    @property
    def audio_secs(self) -> float:
        return sum(s.audio_secs for s in self.sentences)

    def heard_text(self, dropped_secs: float | None = None) -> str:
        """What the caller heard.

        Without `dropped_secs`: the sentences whose marks came back. After a clear, the audio
        that was played (all but `dropped_secs`) is laid over the sentences in order, and the
        sentence cut in the middle keeps the share of its words that was played.
        """
        if dropped_secs is None:
            return " ".join(s.text for s in self.sentences if _was_heard(s.heard))
        remaining = max(0.0, self.audio_secs - dropped_secs)
        heard: list[str] = []
        for sentence in self.sentences:
            if remaining >= sentence.audio_secs - 1e-6:
                heard.append(sentence.text)
                remaining -= sentence.audio_secs
                continue
            words = sentence.text.split()
            share = int(len(words) * remaining / sentence.audio_secs)
            if share:
                heard.append(" ".join(words[:share]))
            break
        return " ".join(heard)

    def unheard_text(self, heard: str) -> str:
        """The rest of the answer after `heard`, to resume a falsely interrupted answer."""
        full = " ".join(s.text for s in self.sentences)
        return full[len(heard) :].strip() if full.startswith(heard) else full


def _was_heard(heard: asyncio.Future[bool] | None) -> bool:
    return heard is not None and heard.done() and not heard.cancelled() and heard.result()
