"""Far-end playout of the simulated phone: what the caller's handset actually plays.

Twilio buffers the audio a gateway sends and plays it at line rate; a `mark` comes back only
when playback reaches it, and `clear` drops whatever is still queued and returns every pending
mark at once. This class models exactly that on a caller-supplied clock (seconds since the
stream started), so it is tested without sleeping, and records what was played, time-aligned.
"""

from __future__ import annotations

import audioop
from collections import deque

from gateway.simulated_audio import LINE_RATE


class Playout:
    """Queue of mu-law audio and mark names, played out at 8000 bytes per second."""

    def __init__(self) -> None:
        self._items: deque[bytes | str] = deque()
        self._head_start = 0  # sample (media time x 8000) at which the queue's head starts
        self._queued_bytes = 0
        self._recording = bytearray()
        self.idle_since = 0.0
        """Media time at which the last played audio ended."""
        self.played_secs = 0.0
        self.dropped_secs = 0.0

    @property
    def playing(self) -> bool:
        return self._queued_bytes > 0

    def push_audio(self, ulaw: bytes, now: float) -> list[str]:
        """Queue agent audio; returns marks that playback reached by `now`."""
        reached = self.advance(now)
        if not self._items:
            self._head_start = round(now * LINE_RATE)
        self._items.append(ulaw)
        self._queued_bytes += len(ulaw)
        return reached

    def push_mark(self, name: str, now: float) -> list[str]:
        """Queue a mark; with nothing left to play it is reached at once."""
        reached = self.advance(now)
        if self._items:
            self._items.append(name)
        else:
            reached.append(name)
        return reached

    def advance(self, now: float) -> list[str]:
        """Play everything due by `now`; returns the marks reached on the way, in order."""
        reached: list[str] = []
        items, now_samples = self._items, now * LINE_RATE
        while items:
            head = items[0]
            if isinstance(head, str):
                reached.append(items.popleft())
                continue
            end = self._head_start + len(head)
            if end > now_samples:
                break
            self._play(items.popleft(), self._head_start)
            self._head_start = end
        return reached

    def clear(self, now: float) -> list[str]:
        """Drop the queued audio (keeping what already played) and return every pending mark."""
        self.advance(now)
        marks: list[str] = []
        head = True
        for item in self._items:
            if isinstance(item, str):
                marks.append(item)
                continue
            played = 0
            if head:  # the head is playing now: what it played so far stays heard
                played = max(0, min(len(item), round(now * LINE_RATE) - self._head_start))
            if played:
                self._play(item[:played], self._head_start)
            self._queued_bytes -= len(item) - played
            self.dropped_secs += (len(item) - played) / LINE_RATE
            head = False
        self._items.clear()
        return marks

    def _play(self, ulaw: bytes, at: int) -> None:
        start = at * 2
        if len(self._recording) < start:
            self._recording.extend(bytes(start - len(self._recording)))
        pcm = audioop.ulaw2lin(ulaw, 2)
        self._recording[start : start + len(pcm)] = pcm
        self._queued_bytes -= len(ulaw)
        self.played_secs += len(ulaw) / LINE_RATE
        self.idle_since = (at + len(ulaw)) / LINE_RATE

    def recording(self, until: float) -> bytearray:
        """16-bit PCM of what was played from media time 0 to `until`, silence in the gaps."""
        size = round(until * LINE_RATE) * 2
        rec = self._recording
        if len(rec) < size:
            rec.extend(bytes(size - len(rec)))
        return rec
