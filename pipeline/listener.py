"""One call's frames through denoise and VAD, several in flight at once, results in order.

Awaiting each frame's result before reading the next caps a call at one frame per round trip
to the VAD thread. Under load a round trip (a gathered batch of a hundred calls) can outlast
the 20 ms a frame lasts, and then the call's socket backs up: measured at 100 calls, 3.7 MB
unread on the server side and answers heard 1.4 s late while the server's own clock said 0.3 s.
Here the reader hands a frame over and goes on, and the results are passed on in order.
At most `MAX_IN_FLIGHT` frames wait, so a peer that sends faster than real time is slowed to
the VAD's pace instead of growing a queue.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from pipeline.denoise import Denoiser
from pipeline.frames import AudioFrame
from pipeline.vad import VadStream
from pipeline.vad_batch import Heard, listen

MAX_IN_FLIGHT = 25
"""Half a second of frames between the socket and the VAD's results."""

OnHeard = Callable[[float, bytes, list[float]], None]
"""(frame seconds, denoised PCM, speech probability of each chunk the frame completed)."""


class Listener:
    """Feeds one call's frames to the shared VAD thread and hands results back in order.

    Results are taken in the futures' done-callbacks (no task of its own: a task would cost a
    wake-up per frame on the event loop)."""

    def __init__(self, vad: VadStream, denoiser: Denoiser, on_heard: OnHeard) -> None:
        self._vad = vad
        self._denoiser = denoiser
        self._on_heard = on_heard
        self._pending: deque[tuple[float, asyncio.Future[Heard]]] = deque()
        self._failure: BaseException | None = None
        self._closed = False

    async def hear(self, frame: AudioFrame) -> None:
        """Hands `frame` over; waits only while `MAX_IN_FLIGHT` frames are unanswered.

        Raises what went wrong with an earlier frame (bad audio, a failing model): the call
        ends as it would have had it waited for that frame.
        """
        while len(self._pending) >= MAX_IN_FLIGHT and self._failure is None:
            await asyncio.wait([self._pending[0][1]])
        if self._failure is not None:
            raise self._failure
        if self._closed:
            return
        result = listen(self._vad, self._denoiser, frame.pcm)
        self._pending.append((frame.duration, result))
        result.add_done_callback(self._take_ready)

    def _take_ready(self, _: asyncio.Future[Heard]) -> None:
        """Passes on every result at the head of the line that has come back, in order."""
        pending = self._pending
        while pending and pending[0][1].done():
            secs, result = pending.popleft()
            try:
                pcm, probabilities = result.result()
                self._on_heard(secs, pcm, probabilities)
            except asyncio.CancelledError:
                continue
            except Exception as exc:
                self._failure = exc
                self.close()
                return

    def close(self) -> None:
        """Stops passing results on (the frames still in flight are dropped) and frames."""
        self._closed = True
        while self._pending:
            self._pending.popleft()[1].cancel()
