"""The call's writer: agent audio out in 20 ms frames, paced on a monotonic clock.

Providers that buffer (Twilio, Plivo) may be sent ahead of real time, but never more than
`lead_secs`, so a clear empties at most that much audio at the far end and barge-in stays crisp.
Marks follow the audio they close; their futures say whether the caller heard it.
Audio comes in one of two encodings (canonical PCM, or a vendor's telephone mu-law that goes to
the wire untouched); a frame is 20 ms of either, and the sink is told which.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from pipeline.frames import BYTES_PER_SEC, FRAME_BYTES, FRAME_MS, SILENCE_BYTE, AudioEncoding

FRAME_SECS = FRAME_MS / 1000


class MediaSink(Protocol):
    async def send_audio(self, audio: bytes, encoding: str = "pcm16k") -> None:
        """One 20 ms frame: "pcm16k" (640 bytes of PCM) or "ulaw8k" (160 mu-law codes)."""
        ...

    async def send_mark(self, name: str) -> None: ...
    async def send_clear(self) -> None: ...


class PlayoutListener(Protocol):
    """Sees the agent audio the far end will play (a call's recorder)."""

    def played(self, frame: bytes, encoding: AudioEncoding, plays_at: float) -> None: ...
    def cleared(self, at: float) -> None: ...


@dataclass(slots=True)
class _Mark:
    name: str
    heard: asyncio.Future[bool]
    plays_at: float = 0.0
    """When the far end should reach this mark (monotonic), set once it is sent."""


@dataclass(slots=True)
class _FirstFrame:
    sent: asyncio.Future[float]


class _Clear:
    """Queue item: send the provider's clear."""


_CLEAR = _Clear()


class Playout:
    def __init__(self, sink: MediaSink, lead_secs: float = 0.1):
        self._sink = sink
        # A frame goes out at most this long before it starts to play, so that right after it
        # is sent the far end holds no more than `lead_secs` (and never less than one frame).
        self._ahead = max(lead_secs - FRAME_SECS, 0.0)
        self._queue: deque[bytes | _Mark | _FirstFrame | _Clear | AudioEncoding] = deque()
        """Frames, marks and clears; an encoding applies to the frames after it."""
        self._partial = bytearray()
        self._encoding: AudioEncoding = "pcm16k"
        """Of the last audio queued (and of `_partial`)."""
        self._sending: AudioEncoding = "pcm16k"
        """Of the frames the writer sends now."""
        self._sent_marks: dict[str, _Mark] = {}
        self._awaiting_first_frame: list[asyncio.Future[float]] = []
        self._clears = 0
        self._names = (f"m{n}" for n in itertools.count(1))
        self._wakeup = asyncio.Event()
        self._clock_start = 0.0
        self._frames_on_clock = 0
        self.frames_sent = 0
        self.listener: PlayoutListener | None = None

    @property
    def far_end_plays_until(self) -> float:
        """Monotonic time at which the far end runs out of what was sent."""
        return self._clock_start + self._frames_on_clock * FRAME_SECS

    @property
    def idle(self) -> bool:
        return not self._queue and not self._partial

    def play(self, audio: bytes, encoding: AudioEncoding = "pcm16k") -> asyncio.Future[float]:
        """Queue audio; the future gets the monotonic time its first frame is sent."""
        sent: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if encoding != self._encoding:
            self._flush_partial(pad=True)  # a frame holds one encoding
            self._queue.append(encoding)
            self._encoding = encoding
        else:
            self._flush_partial(pad=False)
        self._queue.append(_FirstFrame(sent))
        self._partial += audio
        self._flush_partial(pad=False)
        self._wakeup.set()
        return sent

    def mark(self) -> asyncio.Future[bool]:
        """Queue a mark after all audio so far (its last frame padded with silence)."""
        heard: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._flush_partial(pad=True)
        self._queue.append(_Mark(next(self._names), heard))
        self._wakeup.set()
        return heard

    def clear(self) -> float:
        """Drop everything queued, tell the far end to drop what it buffered.

        Returns the seconds of agent audio the caller will never hear.
        """
        now = time.monotonic()
        unsent = sum(1 for item in self._queue if isinstance(item, bytes)) * FRAME_SECS
        dropped = unsent + len(self._partial) / BYTES_PER_SEC[self._encoding]
        dropped += max(0.0, self.far_end_plays_until - now)
        for item in self._queue:
            if isinstance(item, _Mark):
                _settle(item.heard, False)
            elif isinstance(item, _FirstFrame):
                item.sent.cancel()
        self._queue.clear()
        self._partial.clear()
        self._encoding = self._sending
        for sent in self._awaiting_first_frame:
            sent.cancel()
        self._awaiting_first_frame.clear()
        for mark in self._sent_marks.values():
            _settle(mark.heard, mark.plays_at <= now)
        self._sent_marks.clear()
        self._clears += 1
        self._frames_on_clock = 0
        self._clock_start = now
        if self.listener is not None:
            self.listener.cleared(now)
        self._queue.append(_CLEAR)
        self._wakeup.set()
        return dropped

    def marked(self, name: str) -> None:
        """The far end acknowledged a mark (marks of cleared audio are already settled)."""
        mark = self._sent_marks.pop(name, None)
        if mark is not None:
            _settle(mark.heard, True)

    async def run(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            item = self._queue.popleft()
            if isinstance(item, bytes):
                await self._send_frame(item)
            elif isinstance(item, _Clear):
                await self._sink.send_clear()
            elif isinstance(item, _FirstFrame):
                self._awaiting_first_frame.append(item.sent)
            elif isinstance(item, str):
                self._sending = item
            else:
                item.plays_at = self.far_end_plays_until
                self._sent_marks[item.name] = item
                await self._sink.send_mark(item.name)

    async def _send_frame(self, frame: bytes) -> None:
        now = time.monotonic()
        if self.far_end_plays_until < now:
            # The far end ran dry: restart the clock rather than bursting to catch up.
            self._clock_start, self._frames_on_clock = now, 0
        due = self.far_end_plays_until - self._ahead
        if due > now:
            clears = self._clears
            await asyncio.sleep(due - now)
            if clears != self._clears:
                return  # cleared while waiting: this frame is no longer wanted
        if self.listener is not None:
            self.listener.played(frame, self._sending, self.far_end_plays_until)
        self._frames_on_clock += 1
        self.frames_sent += 1
        if self._awaiting_first_frame:
            sent_at = time.monotonic()
            for sent in self._awaiting_first_frame:
                _settle(sent, sent_at)
            self._awaiting_first_frame.clear()
        await self._sink.send_audio(frame, self._sending)

    def _flush_partial(self, pad: bool) -> None:
        size = FRAME_BYTES[self._encoding]
        whole = len(self._partial) - len(self._partial) % size
        for start in range(0, whole, size):
            self._queue.append(bytes(self._partial[start : start + size]))
        del self._partial[:whole]
        if pad and self._partial:
            self._partial += SILENCE_BYTE[self._encoding] * (size - len(self._partial))
            self._queue.append(bytes(self._partial))
            self._partial.clear()


def _settle(future: asyncio.Future, result: object) -> None:
    """Resolve a future unless its awaiter gave up on it (cancelled it) already."""
    if not future.done():
        future.set_result(result)
