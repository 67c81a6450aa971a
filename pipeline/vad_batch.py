"""Every call's denoise and VAD on one thread, with Silero run once for all calls' chunks.

Each call hands over a 20 ms frame fifty times a second. Through a thread pool that cost a
future, a queue hand-off and a loop wake-up per frame, and a Silero run per 32 ms chunk at
~115 us, about half of it fixed cost (a batch of 16 or more takes ~57 us per chunk). Here the
thread takes whatever frames have queued since it last looked, denoises each, scores all
completed chunks in one session run and hands the results back to the event loop in one
callback. Calls' frames arrive at their own phases of the 20 ms period, so on their own the
batches stay small (measured at 50 calls spread over four phases: 6 frames, 290 us per chunk);
once `GATHER_FROM_STREAMS` calls are live the thread waits `GATHER_SECS` after the first frame
for the others, trading that much VAD latency for batches several times larger.
"""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from functools import cache
from queue import SimpleQueue

import numpy as np

from pipeline.denoise import Denoiser
from pipeline.inference import name_native_thread
from pipeline.vad import VadModel, VadStream

GATHER_SECS = 0.008
GATHER_FROM_STREAMS = 8
"""With fewer live calls than this, frames are scored as they come: CPU is not short then."""

Heard = tuple[bytes, list[float]]
"""The denoised frame and the speech probability of each chunk it completed."""


@dataclass(slots=True)
class Job:
    """One call's frame on its way through the batch, and what became of it."""

    stream: VadStream
    denoiser: Denoiser
    pcm: bytes
    future: asyncio.Future[Heard]
    loop: asyncio.AbstractEventLoop
    clean: bytes = b""
    probs: list[float] = field(default_factory=list)
    error: BaseException | None = None


class VadBatcher:
    """One model's batching thread, started on first use; it lives as long as the process."""

    def __init__(self, model: VadModel) -> None:
        self._model = model
        self._queue: SimpleQueue[Job] = SimpleQueue()
        name = f"vad-{type(model).__name__}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._start = threading.Lock()

    def submit(self, stream: VadStream, denoiser: Denoiser, pcm16k: bytes) -> asyncio.Future[Heard]:
        """Queues one call's audio; the future resolves on the caller's event loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Heard] = loop.create_future()
        if not self._thread.is_alive():
            with self._start:
                if not self._thread.is_alive():
                    self._thread.start()
        self._queue.put(Job(stream, denoiser, pcm16k, future, loop))
        return future

    def _run(self) -> None:
        name_native_thread()
        queue = self._queue
        live_streams, seen, counted_at = 0, set[int](), time.monotonic()
        while True:
            jobs = [queue.get()]
            if live_streams >= GATHER_FROM_STREAMS:
                time.sleep(GATHER_SECS)
            while not queue.empty():
                jobs.append(queue.get())
            self.process(jobs)
            _hand_back(jobs)
            seen.update(id(job.stream) for job in jobs)
            if (now := time.monotonic()) - counted_at >= 1.0:
                live_streams, seen, counted_at = len(seen), set(), now

    def process(self, jobs: list[Job]) -> None:
        """Denoises and scores `jobs`. A call's chunks are scored in order, one per model run
        (each needs the state the previous one left); run k scores every call's k-th chunk,
        so a call with frames queued up costs extra runs, not smaller batches."""
        lanes: dict[int, list[tuple[Job, np.ndarray]]] = {}
        for job in jobs:
            try:
                job.clean = job.denoiser.process(job.pcm)
                chunks = [chunk[0].copy() for chunk in job.stream.chunks(job.clean)]
            except Exception as exc:  # bad audio fails its own call, not the batch
                job.error = exc
                continue
            lanes.setdefault(id(job.stream), []).extend((job, chunk) for chunk in chunks)
        self._score(list(lanes.values()))

    def _score(self, lanes: list[list[tuple[Job, np.ndarray]]]) -> None:
        for k in range(max(map(len, lanes), default=0)):
            active = [lane[k] for lane in lanes if len(lane) > k]
            chunks = np.stack([chunk for _, chunk in active])
            states = np.concatenate([job.stream.state for job, _ in active], axis=1)
            try:
                probs, new_states = self._model.infer(chunks, states)
            except Exception as exc:
                for job, _ in active:
                    job.error = exc
                return
            for b, (job, _) in enumerate(active):
                job.stream.state = new_states[:, b : b + 1].copy()
                job.probs.append(float(probs[b]))


def _hand_back(jobs: list[Job]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[Job]] = {}
    for job in jobs:
        by_loop.setdefault(job.loop, []).append(job)
    for loop, done in by_loop.items():
        with suppress(RuntimeError):  # that loop has closed: nobody waits for these any more
            loop.call_soon_threadsafe(_resolve, done)


def _resolve(jobs: list[Job]) -> None:
    for job in jobs:
        if job.future.done():  # cancelled: its call has ended
            continue
        if job.error is not None:
            job.future.set_exception(job.error)
        else:
            job.future.set_result((job.clean, job.probs))


@cache
def batcher(model: VadModel) -> VadBatcher:
    """The process's batcher for `model` (one thread per model; calls share the model)."""
    return VadBatcher(model)


def listen(stream: VadStream, denoiser: Denoiser, pcm16k: bytes) -> asyncio.Future[Heard]:
    """One call's frame through its denoiser and VAD, off the event loop, batched with others."""
    return batcher(stream.model).submit(stream, denoiser, pcm16k)
