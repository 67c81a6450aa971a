"""The SIP side of one process, started and stopped by the app's lifespan: the guard, the UDP
endpoint, inbound calls, outbound dialling and the optional trunk registration.

SIP is off unless `sip.listen` is set. A bad SIP setting fails the start with a clear error.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress

import structlog

from gateway.config_loader import ConfigError
from gateway.settings import SipSettings
from gateway.sip_calls import SipCalls
from gateway.sip_dial import SipDialer
from gateway.sip_endpoint import SipEndpoint, parse_hostport
from gateway.sip_guard import SipGuard, parse_networks, parse_users
from gateway.state import Gateway
from gateway.status_webhooks import StatusWebhooks

log = structlog.get_logger()


class SipService:
    def __init__(self, gateway: Gateway, webhooks: StatusWebhooks, settings: SipSettings) -> None:
        assert settings.listen
        try:
            parse_hostport(settings.listen)
            guard = SipGuard(
                parse_networks(settings.allow), parse_users(settings.users), settings.realm
            )
            low, dash, high = settings.rtp_ports.partition("-")
            if not (dash and low.isdigit() and high.isdigit() and 1024 <= int(low) < int(high)):
                raise ValueError(f"rtp_ports {settings.rtp_ports!r} is not LOW-HIGH")
        except ValueError as exc:
            raise ConfigError(f"sip: {exc}") from exc
        self.endpoint = SipEndpoint(settings.listen, guard, settings.public_host)
        self.calls = SipCalls(gateway, self.endpoint, webhooks, settings)
        self.dialer = SipDialer(self.calls)
        self._registration: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls, gateway: Gateway, webhooks: StatusWebhooks
    ) -> SipService | None:
        settings = gateway.config.settings.sip
        return cls(gateway, webhooks, settings) if settings.listen else None

    def hang_up(self, call_id: str) -> bool:
        """`DELETE /v1/calls/{id}`: BYE a live call, CANCEL a ringing one."""
        return self.calls.hang_up(call_id) or self.dialer.cancel(call_id)

    async def start(self) -> None:
        await self.endpoint.start()
        settings = self.calls.settings
        if settings.register_to_trunk and self.dialer.configured:
            self._registration = asyncio.create_task(self.dialer.keep_registered())

    async def close(self) -> None:
        if self._registration is not None:
            self._registration.cancel()
            with suppress(asyncio.CancelledError):
                await self._registration
        await self.calls.close()
        await self.endpoint.close()
