"""Twilio's edge: the voice and status webhooks and the Media Streams WebSocket."""

from __future__ import annotations

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from gateway.media_calls import (
    Ringing,
    Transfer,
    admit,
    logged_hang_up,
    record_provider_status,
    refuse_upgrade,
    serve_media,
    signature_refused,
)
from gateway.public_url import public_http_url, stream_url
from gateway.state import Gateway
from gateway.status_webhooks import sender_of
from providers.events import CallStarted
from providers.twilio.media import TwilioMediaProtocol
from providers.twilio.rest import TwilioApiError, TwilioRest
from providers.twilio.signature import SIGNATURE_HEADER, verify_stream_upgrade, verify_webhook
from providers.twilio.twiml import connect_stream_twiml, dial_twiml, say_and_hangup_twiml

log = structlog.get_logger()

PROVIDER = "twilio"
MEDIA_PATH = "/twilio/media"


def _twiml(document: str) -> Response:
    return Response(document, media_type="application/xml")


async def _verified_form(request: Request, gateway: Gateway) -> dict[str, str] | None:
    """The webhook's form params, or None if the signature check fails."""
    form = await request.form()
    params = {key: str(value) for key, value in form.items()}
    token = gateway.config.settings.twilio.auth_token
    if token is None:
        return params
    url = public_http_url(gateway, request)
    if verify_webhook(token, url, form, request.headers.get(SIGNATURE_HEADER)):
        return params
    return None


async def voice(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    params = await _verified_form(request, gateway)
    if params is None:
        return signature_refused(gateway, PROVIDER, request.url.path)
    ringing = Ringing(params.get("CallSid"), params.get("From"), params.get("To"))
    admitted = await admit(gateway, PROVIDER, request.query_params.get("agent"), ringing)
    if isinstance(admitted, str):
        return _twiml(say_and_hangup_twiml(admitted))
    url = stream_url(gateway, request, MEDIA_PATH)
    parameters = {"token": admitted.token, "call_id": admitted.record.id}
    return _twiml(connect_stream_twiml(url, parameters))


async def status(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    params = await _verified_form(request, gateway)
    if params is None:
        return signature_refused(gateway, PROVIDER, request.url.path)
    status = params.get("CallStatus")
    call_id = request.query_params.get("call_id")
    record = await record_provider_status(gateway, params.get("CallSid", ""), status, call_id)
    events = sender_of(request.app)
    if record is not None and status and (changed := events.provider_status(record, status)):
        await gateway.registry.save(record, *changed)
    return Response(status_code=204)


async def media(websocket: WebSocket) -> None:
    gateway: Gateway = websocket.app.state.gateway
    auth_token = gateway.config.settings.twilio.auth_token
    expected_url = stream_url(gateway, websocket, MEDIA_PATH)
    if auth_token and not verify_stream_upgrade(
        auth_token, expected_url, websocket.headers.get(SIGNATURE_HEADER)
    ):
        await refuse_upgrade(gateway, websocket, PROVIDER)
        return
    rest = _rest_client(gateway)
    await serve_media(
        gateway,
        websocket,
        TwilioMediaProtocol(),
        PROVIDER,
        _token_of,
        logged_hang_up(rest.hangup, PROVIDER, TwilioApiError) if rest else None,
        _rest_transfer(rest) if rest else None,
    )


def _token_of(started: CallStarted) -> str | None:
    return started.parameters.get("token")


def _rest_client(gateway: Gateway) -> TwilioRest | None:
    twilio = gateway.config.settings.twilio
    if not (twilio.account_sid and twilio.auth_token):
        return None
    return TwilioRest(
        twilio.account_sid, twilio.auth_token, twilio.api_base, twilio.edge, twilio.region
    )


def _rest_transfer(rest: TwilioRest) -> Transfer:
    async def transfer(call_sid: str, to: str, caller_id: str | None) -> None:
        """The live call leaves the stream for a `<Dial>`: Twilio ends our media stream."""
        await rest.redirect(call_sid, dial_twiml(to, caller_id=caller_id))

    return transfer



routes = [
    Route("/twilio/voice", voice, methods=["POST"]),
    Route("/twilio/status", status, methods=["POST"]),
    WebSocketRoute(MEDIA_PATH, media),
]
