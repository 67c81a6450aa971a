"""Executors for model inference: never on the event loop, never oversubscribing the cores.

Long jobs (Whisper) share a pool sized to the cores. Smart Turn decides when the caller is
done: it must not queue behind a second-long transcription, so it has a pool of its own, also
sized to the cores (under load several calls pause at once). The VAD has its own batching
thread (`pipeline.vad_batch`).

Both pools run at a lower priority (nice +5) than the event loop and the VAD thread: when the
cores are short, a Smart Turn verdict or a transcript may come late, but the audio every call
plays and hears (pacing, barge-in) keeps its 20 ms rhythm.

numpy's OpenBLAS starts a thread per core and lets each spin for a while after every matrix
product; one log-mel product per Smart Turn question kept the second core busy-waiting, a third
of the server's CPU at 10 calls (measured with per-thread CPU from /proc). Every product here
is small, so BLAS runs on the calling thread: `single_threaded_blas()` runs when any of these
executors is first made.

Each worker thread also carries its Python name in the kernel (`/proc/<pid>/task/*/comm`), so
`top -H` and the benchmarks tell the Smart Turn, VAD and event-loop threads' CPU apart.
"""

from __future__ import annotations

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from functools import cache

from threadpoolctl import threadpool_limits

CORES = os.cpu_count() or 2
BACKGROUND_NICE = 5


@cache
def single_threaded_blas() -> None:
    threadpool_limits(limits=1, user_api="blas")


_PR_SET_NAME = 15


def name_native_thread() -> None:
    """Gives the calling thread its Python name in the kernel too (Linux keeps 15 bytes)."""
    name = threading.current_thread().name.encode()[:15]
    with suppress(OSError, AttributeError):  # not Linux: the name stays Python's own
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


def _background() -> None:
    """Names the calling thread and lowers its priority (Linux: nice is per thread)."""
    name_native_thread()
    with suppress(OSError):  # not permitted, or not Linux: run at the process's priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)


def _pool(name: str) -> ThreadPoolExecutor:
    single_threaded_blas()
    return ThreadPoolExecutor(CORES, thread_name_prefix=name, initializer=_background)


@cache
def inference_executor() -> ThreadPoolExecutor:
    return _pool("inference")


@cache
def turn_executor() -> ThreadPoolExecutor:
    return _pool("turn")
