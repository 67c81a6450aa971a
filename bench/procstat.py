"""CPU, memory, threads and file descriptors of a process, sampled from /proc."""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # monotonic
    cpu_secs: float  # user + system, all threads
    rss_mb: float
    threads: int
    fds: int


def _cpu_secs(stat_path: str) -> float:
    with open(stat_path) as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def sample(pid: int) -> Sample:
    cpu = _cpu_secs(f"/proc/{pid}/stat")
    rss_kb = threads = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return Sample(time.monotonic(), cpu, rss_kb / 1024, threads, fds)


class Sampler:
    """Samples `pid` every `interval` seconds while `run()` is running."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[Sample] = []

    async def run(self) -> None:
        while True:
            try:
                self.samples.append(sample(self.pid))
            except (FileNotFoundError, ProcessLookupError):
                return
            await asyncio.sleep(self.interval)

    def window(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.at <= end]


def cpu_percent(samples: list[Sample]) -> float | None:
    """Mean CPU over the samples, in % of one core."""
    if len(samples) < 2 or samples[-1].at <= samples[0].at:
        return None
    busy = samples[-1].cpu_secs - samples[0].cpu_secs
    return 100 * busy / (samples[-1].at - samples[0].at)


_POOL_INDEX = re.compile(r"_\d+$")


def thread_cpu_secs(pid: int) -> dict[str, float]:
    """CPU seconds by thread role: the kernel name of each thread (the server names its
    worker threads, see `pipeline.inference.name_native_thread`), pool numbers dropped, and
    "main" for the event loop's thread. A thread that ended is no longer counted."""
    roles: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            secs = _cpu_secs(f"/proc/{pid}/task/{tid}/stat")
        except (FileNotFoundError, ProcessLookupError):  # the thread just ended
            continue
        role = "main" if int(tid) == pid else _POOL_INDEX.sub("", name)
        roles[role] = roles.get(role, 0.0) + secs
    return roles


def own_cpu_secs() -> float:
    times = os.times()
    return times.user + times.system


def host_busy_secs() -> float:
    """CPU seconds the whole host has spent busy (all cores, /proc/stat), to tell how much of
    a step's CPU went to processes other than the server and the load generator."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS
