"""Pre-warming: a cloud agent's connections open when the voice webhook arrives, so the
greeting and the first answer don't pay the handshakes (TLS, WebSocket upgrade).

The services built then wait here, keyed by call id, until the call's media starts on this
instance and takes them; if it never does (token TTL), their sockets are closed.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from dataclasses import dataclass

import structlog

from pipeline.agent import AgentConfig
from pipeline.conversation import Services
from pipeline.services import build_services, close_services, uses_cloud, warm_connections

log = structlog.get_logger()

TAKE_WAIT_SECS = 2.0
"""The longest a starting call waits for its connections to finish opening (it would wait as
long opening them itself; a slower vendor fails at first use, with the apology)."""


@dataclass(slots=True)
class _Warming:
    services: Services
    task: asyncio.Task[None]
    expiry: asyncio.TimerHandle


class Prewarmer:
    def __init__(self) -> None:
        self._calls: dict[str, _Warming] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def start(
        self, call_id: str, agent: AgentConfig, variables: dict[str, str], ttl_secs: float
    ) -> None:
        """Build `agent`'s services for the call and start opening their connections."""
        if not uses_cloud(agent) or call_id in self._calls:
            return
        services = build_services(agent, variables)
        loop = asyncio.get_running_loop()
        with structlog.contextvars.bound_contextvars(call_id=call_id):  # the clients' logs
            task = loop.create_task(warm_connections(services), name=f"prewarm-{call_id}")
        expiry = loop.call_later(ttl_secs, self._expire, call_id)
        self._calls[call_id] = _Warming(services, task, expiry)
        log.info("prewarm_started", call_id=call_id, agent=agent.name)

    async def take(self, call_id: str) -> Services | None:
        """The call's warmed services (None if none were warmed here), once warm."""
        warming = self._calls.pop(call_id, None)
        if warming is None:
            return None
        warming.expiry.cancel()
        with suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(warming.task), TAKE_WAIT_SECS)
        if not warming.task.done():  # the call's own first use waits for (or fails) it
            warming.task.cancel()
        return warming.services

    def _expire(self, call_id: str) -> None:
        warming = self._calls.pop(call_id, None)
        if warming is None:
            return
        warming.task.cancel()
        log.info("prewarm_expired", call_id=call_id)
        closing = asyncio.get_running_loop().create_task(close_services(warming.services))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
