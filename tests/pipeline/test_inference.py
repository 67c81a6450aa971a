"""Inference pools: BLAS stays on the calling thread, and the pools yield to the audio path."""

from __future__ import annotations

import os
import sys
import threading

import pytest
from threadpoolctl import threadpool_info

from pipeline.inference import BACKGROUND_NICE, CORES, inference_executor, turn_executor


def test_blas_runs_single_threaded_once_a_pool_exists():
    turn_executor()
    blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert blas, "numpy's BLAS not found"
    assert all(pool["num_threads"] == 1 for pool in blas)


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice is Linux's")
@pytest.mark.parametrize("pool", [turn_executor, inference_executor])
def test_pool_threads_run_below_the_event_loop(pool):
    def niceness() -> tuple[int, str]:
        me = threading.current_thread()
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), me.name

    nice, name = pool().submit(niceness).result(timeout=10)
    loop_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert nice == min(19, loop_nice + BACKGROUND_NICE)
    assert name.startswith(("turn", "inference"))
    assert pool()._max_workers == CORES


@pytest.mark.skipif(sys.platform != "linux", reason="kernel thread names are read from /proc")
@pytest.mark.parametrize("pool", [turn_executor, inference_executor])
def test_pool_threads_carry_their_name_in_the_kernel(pool):
    """`top -H` and the benchmarks tell Smart Turn from Whisper from the event loop."""

    def names() -> tuple[str, str]:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm") as f:
            return f.read().strip(), threading.current_thread().name

    kernel_name, python_name = pool().submit(names).result(timeout=10)
    assert kernel_name == python_name[:15]
    assert kernel_name.startswith(("turn_", "inference_"))
