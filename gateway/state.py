"""What every route of one process shares."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import structlog

from gateway.metrics import Metrics
from gateway.prewarm import Prewarmer
from gateway.registry import MemoryRegistry, Registry
from gateway.settings import Config

if TYPE_CHECKING:
    from gateway.call import Call

log = structlog.get_logger()

Refusal = Literal["draining", "not_ready", "capacity"]


@dataclass
class Gateway:
    config: Config
    registry: Registry
    metrics: Metrics = field(default_factory=Metrics)
    models_ready: bool = False
    calls: set[Call] = field(default_factory=set)
    """The calls whose media this process serves."""
    prewarmer: Prewarmer = field(default_factory=Prewarmer)
    """Cloud connections opened at the webhook, waiting for their call's media."""
    _draining: bool = False

    def __post_init__(self) -> None:
        self.secret = self.config.settings.secret or self._ephemeral_secret()

    @classmethod
    def from_config(cls, config: Config) -> Gateway:
        settings = config.settings
        ttl = settings.calls.finished_ttl_secs
        if settings.redis_url:
            from gateway.redis_registry import RedisRegistry

            return cls(config, RedisRegistry(settings.redis_url, ttl))
        return cls(config, MemoryRegistry(ttl))

    @property
    def draining(self) -> bool:
        return self._draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self._draining = value
        self.metrics.draining.set(int(value))

    @property
    def ready(self) -> bool:
        return self.models_ready and not self.draining

    async def admission(self, call_id: str) -> Refusal | None:
        """Take a slot for a new call, or say why not.

        The slot counts against `calls.max_concurrent` here and `calls.max_concurrent_cluster`
        everywhere (Redis only) for `calls.token_ttl_secs`, until the call's media starts (then
        until it ends), so a call that never connects frees its slot. Whoever gets None and
        then fails to place the call gives the slot back with `registry.release(call_id)`.
        """
        if self.draining:
            return "draining"
        if not self.models_ready:
            return "not_ready"
        calls = self.config.settings.calls
        if self.registry.local_count() >= calls.max_concurrent:
            return "capacity"
        limit = calls.max_concurrent_cluster if self.config.settings.redis_url else None
        if not await self.registry.hold(call_id, calls.token_ttl_secs, limit):
            return "capacity"
        return None

    @staticmethod
    def _ephemeral_secret() -> str:
        log.warning(
            "secret_ephemeral",
            hint="set CALLGATE_SECRET (the same on every instance) so call tokens survive "
            "restarts and work across instances",
        )
        return secrets.token_urlsafe(32)
