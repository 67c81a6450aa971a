"""The ASGI application: routes, shared state and the model warm-up at start."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import structlog
from starlette.applications import Starlette

from gateway import api, health, outbound, plivo_routes, twilio_routes
from gateway.settings import Config
from gateway.state import Gateway
from gateway.status_webhooks import StatusWebhooks
from pipeline.services import warm_up

if TYPE_CHECKING:
    from gateway.sip_service import SipService

log = structlog.get_logger()


def create_app(config: Config) -> Starlette:
    gateway = Gateway.from_config(config)
    status_webhooks = StatusWebhooks(config.settings.api_key)
    sip = _sip_service(gateway, status_webhooks)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not config.settings.twilio.auth_token:
            log.warning("twilio_signatures_off", hint="set TWILIO_AUTH_TOKEN to verify webhooks")
        if not config.settings.plivo.auth_token:
            log.warning("plivo_signatures_off", hint="set PLIVO_AUTH_TOKEN to verify webhooks")
        if not config.settings.api_key:
            log.warning("api_key_unset", hint="set CALLGATE_API_KEY to use the /v1 API")
        await gateway.registry.start()  # Redis unreachable: fail at start, not on the first call
        await warm_up(config.agents)
        _freeze_startup_objects()
        gateway.models_ready = True
        status_webhooks.start()
        if sip is not None:
            await sip.start()
        try:
            yield
        finally:
            gateway.draining = True
            if sip is not None:
                await sip.close()
            await status_webhooks.aclose()
            await gateway.registry.close()

    routes = [
        *health.routes, *twilio_routes.routes, *plivo_routes.routes, *api.routes, *outbound.routes
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gateway
    app.state.status_webhooks = status_webhooks
    app.state.sip = sip
    return app


def _freeze_startup_objects() -> None:
    """Moves everything alive after start-up (modules, models, settings: ~90k objects) out
    of the collector's reach. A full collection over them stalled the event loop for 40 ms or
    more, long enough for a loaded call to miss a frame; calls' own objects are still
    collected as usual."""
    gc.collect()
    gc.freeze()


def _sip_service(gateway: Gateway, status_webhooks: StatusWebhooks) -> SipService | None:
    """The SIP endpoint when `sip.listen` is set (imported only then)."""
    if not gateway.config.settings.sip.listen:
        return None
    from gateway.sip_service import SipService

    return SipService(gateway, status_webhooks, gateway.config.settings.sip)
