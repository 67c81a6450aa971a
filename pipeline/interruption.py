"""When caller speech over the agent is a real interruption (barge-in)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from pipeline.agent import InterruptionsConfig
from pipeline.stt.base import SpeechToText

BACKCHANNELS = frozenset(
    {
        *("uh", "huh", "uh-huh", "mhm", "mm", "mmm", "hmm", "hm", "mm-hmm", "yeah", "yes"),
        *("yep", "yup", "ok", "okay", "right", "sure", "alright", "aha", "ah", "oh"),
    }
)
"""Words a listener says to show they are listening, not to take the turn."""

WORD = re.compile(r"[a-z']+(?:-[a-z']+)*")
RECHECK_SECS = 0.25


def meaningful_words(text: str) -> list[str]:
    return [w for w in WORD.findall(text.lower()) if w not in BACKCHANNELS]


class BargeIn:
    """Speech over the agent interrupts once it lasts `min_speech_secs` and, if `min_words` is
    set, once its transcript holds that many words that are not backchannels."""

    def __init__(self, config: InterruptionsConfig, stt: SpeechToText):
        self._config = config
        self._stt = stt
        self._check: asyncio.Task[str] | None = None
        self._checked_at = 0.0

    def should_interrupt(self, speech_secs: float, audio: Callable[[], bytes]) -> bool:
        config = self._config
        if not config.enabled or speech_secs < config.min_speech_secs:
            return False
        if config.min_words == 0:
            return True
        check = self._check
        if check is not None and check.done():
            words = meaningful_words(check.result()) if not check.cancelled() else []
            if len(words) >= config.min_words:
                return True
            self._check = None
        if self._check is None and speech_secs - self._checked_at >= RECHECK_SECS:
            self._checked_at = speech_secs
            self._check = asyncio.create_task(self._stt.transcribe(audio()))
        return False

    def reset(self) -> None:
        if self._check is not None:
            self._check.cancel()
        self._check, self._checked_at = None, 0.0
