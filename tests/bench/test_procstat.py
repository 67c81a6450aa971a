"""Per-thread CPU from /proc, and the per-call split the benchmark reports from it."""

from __future__ import annotations

import os
import threading
import time

import pytest

from bench.__main__ import _by_thread
from bench.procstat import thread_cpu_secs
from pipeline.inference import name_native_thread

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc")


def test_cpu_is_counted_per_named_thread() -> None:
    halfway = threading.Event()

    def burn() -> None:
        name_native_thread()
        start = time.thread_time()
        while time.thread_time() < start + 0.1:
            pass
        halfway.set()  # a loaded machine may not run this thread for a while: no fixed sleep
        while time.thread_time() < start + 0.3:
            pass

    before = thread_cpu_secs(os.getpid())
    worker = threading.Thread(target=burn, name="burner_3")
    worker.start()
    assert halfway.wait(timeout=30)
    during = thread_cpu_secs(os.getpid())  # read while the thread lives: ended ones vanish
    worker.join()
    assert "burner" not in before
    assert 0.05 <= during["burner"] <= 0.3 + 0.02  # "_3", a pool index, groups by role
    assert "main" in during and during["main"] >= before["main"]


def test_per_call_cpu_is_split_in_the_threads_proportions() -> None:
    split = _by_thread({"main": 3.0, "turn": 1.0, "idle": 0.0}, per_call_pct=2.0)
    assert split == {"main": 1.5, "turn": 0.5}
    assert list(split) == ["main", "turn"]  # largest first
    assert _by_thread({"main": 0.0}, 2.0) == {}
    assert _by_thread({"main": 1.0}, None) == {}
