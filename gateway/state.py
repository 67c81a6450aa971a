"""What every route of one process shares."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import structlog

from gateway.metrics import Metrics
from gateway.registry import CallRegistry
from gateway.settings import Config

log = structlog.get_logger()


@dataclass
class Gateway:
    config: Config
    registry: CallRegistry
    metrics: Metrics = field(default_factory=Metrics)
    models_ready: bool = False
    draining: bool = False

    def __post_init__(self) -> None:
        self.secret = self.config.settings.secret or self._ephemeral_secret()

    @classmethod
    def from_config(cls, config: Config) -> Gateway:
        return cls(config, CallRegistry(config.settings.calls.finished_ttl_secs))

    @property
    def ready(self) -> bool:
        return self.models_ready and not self.draining

    @property
    def at_capacity(self) -> bool:
        return self.registry.active_count() >= self.config.settings.calls.max_concurrent

    @staticmethod
    def _ephemeral_secret() -> str:
        log.warning(
            "secret_ephemeral",
            hint="set CALLGATE_SECRET (the same on every instance) so call tokens survive "
            "restarts and work across instances",
        )
        return secrets.token_urlsafe(32)
