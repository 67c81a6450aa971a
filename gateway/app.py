"""The ASGI application: routes, shared state and the model warm-up at start."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from starlette.applications import Starlette

from gateway import api, health, outbound, plivo_routes, twilio_routes
from gateway.settings import Config
from gateway.state import Gateway
from gateway.status_webhooks import StatusWebhooks
from pipeline.services import warm_up

log = structlog.get_logger()


def create_app(config: Config) -> Starlette:
    gateway = Gateway.from_config(config)
    status_webhooks = StatusWebhooks(config.settings.api_key)

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
        gateway.models_ready = True
        status_webhooks.start()
        try:
            yield
        finally:
            gateway.draining = True
            await status_webhooks.aclose()
            await gateway.registry.close()

    routes = [
        *health.routes, *twilio_routes.routes, *plivo_routes.routes, *api.routes, *outbound.routes
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gateway
    app.state.status_webhooks = status_webhooks
    return app
