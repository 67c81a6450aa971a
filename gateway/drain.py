"""Graceful drain for rolling deploys: what `callgate serve` does on SIGTERM.

The first SIGTERM turns the process not-ready at once (`/readyz` 503; voice webhooks answer
with the busy message; `POST /v1/calls` 503) and lets live calls go on for up to
`calls.drain_timeout_secs`. Calls still live then hear `calls.drain_message` and are hung up;
when the last has ended the server stops and the process exits 0. A second SIGTERM exits at
once with status 1 (`EXIT_FORCED`), calls cut. SIGINT keeps uvicorn's meaning (stop now,
gracefully for HTTP requests).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from types import FrameType

import structlog
import uvicorn

from gateway.state import Gateway

log = structlog.get_logger()

EXIT_FORCED = 1
GOODBYE_GRACE_SECS = 20.0
"""How long calls told goodbye may take to end before the server stops regardless."""
POLL_SECS = 0.1


class DrainingServer(uvicorn.Server):
    """uvicorn's server, with SIGTERM meaning "drain, then exit" instead of "exit now"."""

    def __init__(self, config: uvicorn.Config, gateway: Gateway):
        super().__init__(config)
        self._gateway = gateway
        self._drain: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            await super().serve(sockets)
        finally:
            if self._drain is not None and not self._drain.done():
                self._drain.cancel()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM:
            super().handle_exit(sig, frame)
            return
        assert self._loop is not None, "signal handlers are installed by serve()"
        if self._gateway.draining:
            log.warning("drain_forced", live_calls=len(self._gateway.calls))
            sys.stderr.flush()  # the log goes to stderr
            os._exit(EXIT_FORCED)
        self._gateway.draining = True  # readiness flips before the handler returns
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        settings = self._gateway.config.settings.calls
        self._drain = asyncio.create_task(
            drain(self._gateway, settings.drain_timeout_secs, settings.drain_message)
        )
        self._drain.add_done_callback(self._drained)

    def _drained(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("drain_failed", error=repr(task.exception()))
        self.should_exit = True


async def drain(gateway: Gateway, timeout_secs: float, goodbye: str) -> None:
    """Refuse new calls, wait for live ones to end, then say goodbye to the rest."""
    gateway.draining = True
    started = time.monotonic()
    log.info("drain_started", live_calls=len(gateway.calls), timeout_secs=timeout_secs)
    if not await _until_idle(gateway, timeout_secs):
        log.info("drain_goodbye", live_calls=len(gateway.calls))
        for call in list(gateway.calls):
            call.say_goodbye(goodbye)
        if not await _until_idle(gateway, GOODBYE_GRACE_SECS):
            log.warning("drain_calls_left", live_calls=len(gateway.calls))
    log.info("drain_done", secs=round(time.monotonic() - started, 2))


async def _until_idle(gateway: Gateway, timeout_secs: float) -> bool:
    """Whether every call ended within the timeout."""
    deadline = time.monotonic() + timeout_secs
    while gateway.calls:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL_SECS)
    return True
