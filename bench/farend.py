"""The caller's handset as the load generator models it, and what one call measures.

`FarEnd` is the provider's playout buffer reduced to arithmetic: audio is heard at 8000 bytes
a second from when it arrives (or when the audio before it ends), a mark comes back when
playback reaches it, `clear` empties the buffer and returns every pending mark. It keeps no
audio, so hundreds of calls cost next to nothing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

LINE_RATE = 8000
LEAD_FRAMES = 6
"""Frames of an answer that may arrive in a burst (the gateway sends up to `playout_lead_ms`
ahead): gaps before them are not steady playout and are not counted."""


class FarEnd:
    def __init__(self) -> None:
        self.plays_until = 0.0
        self._pending: deque[tuple[float, str]] = deque()

    def playing(self, now: float) -> bool:
        return self.plays_until > now

    def audio(self, nbytes: int, now: float) -> bool:
        """Queue agent audio arriving at `now`; True if the buffer had run dry before it."""
        dry = self.plays_until < now
        self.plays_until = max(self.plays_until, now) + nbytes / LINE_RATE
        return dry

    def mark(self, name: str, now: float) -> list[str]:
        """Queue a mark; returned at once when nothing is left to play."""
        if self.plays_until <= now:
            return [name]
        self._pending.append((self.plays_until, name))
        return []

    def reached(self, now: float) -> list[str]:
        pending, names = self._pending, []
        while pending and pending[0][0] <= now:
            names.append(pending.popleft()[1])
        return names

    def clear(self, now: float) -> list[str]:
        names = [name for _, name in self._pending]
        self._pending.clear()
        self.plays_until = min(self.plays_until, now)
        return names


@dataclass
class CallStats:
    """Everything one simulated call measured (times in ms)."""

    index: int
    failed: str | None = None
    greeting_ms: float | None = None
    turns_spoken: int = 0
    turns_answered: int = 0
    answer_ms: list[float] = field(default_factory=list)
    """Caller's end of speech to the first agent audio back, per answered turn."""
    gaps_ms: list[float] = field(default_factory=list)
    """Inter-arrival of agent media messages during steady playout."""
    underruns: int = 0
    """Agent audio that arrived after the far end had run dry in the middle of an answer."""
    segments: int = 0
    dropped_frames: int = 0
    """Frames missing from answers that ended with a mark (were not cleared)."""
    barge_ins: int = 0
    clear_ms: list[float] = field(default_factory=list)
    """Caller's barge-in speech onset to the gateway's `clear`."""
    barge_missed: int = 0
    clears_unexpected: int = 0
    bad_messages: int = 0


class AnswerTracker:
    """Splits the agent's audio into answers (a mark closes each sentence) and measures them."""

    def __init__(self, stats: CallStats, expected_frames: int) -> None:
        self._stats = stats
        self._expected = expected_frames
        self._open = False
        self._bytes = 0
        self._messages = 0
        self._last = 0.0

    @property
    def open(self) -> bool:
        return self._open

    def media(self, nbytes: int, now: float, dry: bool) -> bool:
        """Agent audio at `now`; True if it starts a new answer."""
        started = not self._open
        if started:
            self._open, self._bytes, self._messages = True, 0, 0
        else:
            if self._messages >= LEAD_FRAMES:
                self._stats.gaps_ms.append((now - self._last) * 1000)
            if dry:
                self._stats.underruns += 1
        self._bytes += nbytes
        self._messages += 1
        self._last = now
        return started

    def closed(self, cleared: bool) -> None:
        """A mark (the sentence is complete) or a clear ends the answer in progress."""
        if not self._open:
            return
        self._open = False
        self._stats.segments += 1
        if not cleared:
            frames = round(self._bytes / (LINE_RATE // 50))
            self._stats.dropped_frames += max(0, self._expected - frames)
