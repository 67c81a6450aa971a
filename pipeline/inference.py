"""Executors for model inference: never on the event loop, never oversubscribing the cores.

Long jobs (Whisper) share a pool sized to the cores. The VAD runs every 32 ms on every call,
and Smart Turn decides when the caller is done: neither may queue behind a second-long
transcription, or barge-in and end-of-turn detection would lag by that much, so each has a
thread of its own.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import cache


@cache
def inference_executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="inference")


@cache
def vad_executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="vad")


@cache
def turn_executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="turn")
