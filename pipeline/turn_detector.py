"""Is the caller's turn over? Smart Turn's audio verdict, weighed with the words heard.

Measured through the phone path at a 0.2-0.25 s VAD pause, Smart Turn v3.2 alone judges 93%
of complete utterances complete but also 44% of pauses after content words and about a third
of those after function words. A transcript that ends on a function word or a conjunction
("my number is", "and", "to the") is rarely a finished turn, whatever the audio says, so such
a verdict is overruled once the speculative transcript is in.
"""

from __future__ import annotations

import re

from pipeline.smart_turn import SmartTurn

UNFINISHED_ENDINGS = frozenset(
    {
        *("a", "an", "the", "to", "of", "for", "in", "on", "at", "by", "with", "from", "into"),
        *("and", "or", "but", "so", "because", "if", "than", "then", "that", "which", "who"),
        *("my", "your", "our", "their", "his", "her", "its", "this", "these", "those"),
        *("is", "are", "was", "were", "be", "am", "will", "would", "can", "could", "should"),
        *("i", "we", "you", "i'm", "it's", "uh", "um", "er", "like", "about", "please"),
    }
)
LAST_WORD = re.compile(r"([a-z']+)\W*$")


def sounds_unfinished(transcript: str) -> bool:
    """True when the words so far plainly continue: a trailing function word, a comma, '...'."""
    text = transcript.strip().lower()
    if not text:
        return False
    if text.endswith((",", "...", "-", "—")):
        return True
    match = LAST_WORD.search(text)
    return bool(match) and match.group(1) in UNFINISHED_ENDINGS


class TurnDetector:
    """The audio half of the decision, run at every VAD pause (the words half is above)."""

    def __init__(self, threshold: float):
        self._smart_turn = SmartTurn(threshold)

    async def audio_says_complete(self, pcm16k: bytes) -> tuple[bool, float]:
        return await self._smart_turn.is_complete(pcm16k)
