"""Twilio's edge: the voice and status webhooks and the Media Streams WebSocket."""

from __future__ import annotations

import asyncio
from contextlib import suppress

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketState

from gateway.call import Call
from gateway.media_session import CallEnded, WebSocketMediaSession
from gateway.public_url import public_http_url, stream_url
from gateway.registry import CallRecord, new_call_id
from gateway.security import InvalidToken, issue_call_token, verify_call_token
from gateway.state import Gateway
from pipeline.services import build_services
from providers.events import CallStarted, CallStopped
from providers.twilio.media import TwilioMediaProtocol
from providers.twilio.rest import TwilioApiError, TwilioRest
from providers.twilio.signature import SIGNATURE_HEADER, verify_stream_upgrade, verify_webhook
from providers.twilio.twiml import connect_stream_twiml, say_and_hangup_twiml

log = structlog.get_logger()

MEDIA_PATH = "/twilio/media"
START_TIMEOUT_SECS = 10.0
UNKNOWN_AGENT_APOLOGY = "Sorry, this number is not set up to take calls yet. Goodbye."
BUSY_MESSAGE = "Sorry, all our agents are busy right now. Please call again later."


def _twiml(document: str, status_code: int = 200) -> Response:
    return Response(document, status_code=status_code, media_type="application/xml")


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
    gateway.metrics.calls_rejected.labels(provider="twilio", reason="signature").inc()
    log.warning("webhook_signature_invalid", provider="twilio", path=request.url.path)
    return None


async def voice(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    params = await _verified_form(request, gateway)
    if params is None:
        return Response("invalid signature", status_code=403)
    if not gateway.ready:
        gateway.metrics.calls_rejected.labels(provider="twilio", reason="not_ready").inc()
        return _twiml(say_and_hangup_twiml(BUSY_MESSAGE))
    if gateway.at_capacity:
        gateway.metrics.calls_rejected.labels(provider="twilio", reason="capacity").inc()
        return _twiml(say_and_hangup_twiml(BUSY_MESSAGE))
    agent = gateway.config.agent_for(request.query_params.get("agent"), params.get("To"))
    if agent not in gateway.config.agents:
        log.warning("agent_unknown", agent=agent[:64], provider="twilio")
        return _twiml(say_and_hangup_twiml(UNKNOWN_AGENT_APOLOGY))
    record = gateway.registry.add(
        CallRecord(
            id=new_call_id(),
            provider="twilio",
            agent=agent,
            provider_call_id=params.get("CallSid"),
            from_number=params.get("From"),
            to_number=params.get("To"),
            status="ringing",
        )
    )
    settings = gateway.config.settings
    token = issue_call_token(
        gateway.secret, record.id, "twilio", agent, settings.calls.token_ttl_secs
    )
    log.info("call_answered", call_id=record.id, provider="twilio", agent=agent)
    url = stream_url(gateway, request, MEDIA_PATH)
    return _twiml(connect_stream_twiml(url, {"token": token, "call_id": record.id}))


async def status(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    params = await _verified_form(request, gateway)
    if params is None:
        return Response("invalid signature", status_code=403)
    record = gateway.registry.by_provider_call_id(params.get("CallSid", ""))
    if record is not None:
        record.provider_status = params.get("CallStatus")
        log.info("provider_status", call_id=record.id, status=record.provider_status)
    return Response(status_code=204)


async def media(websocket: WebSocket) -> None:
    gateway: Gateway = websocket.app.state.gateway
    auth_token = gateway.config.settings.twilio.auth_token
    expected_url = stream_url(gateway, websocket, MEDIA_PATH)
    if auth_token and not verify_stream_upgrade(
        auth_token, expected_url, websocket.headers.get(SIGNATURE_HEADER)
    ):
        gateway.metrics.calls_rejected.labels(provider="twilio", reason="signature").inc()
        log.warning("upgrade_signature_invalid", provider="twilio")
        await websocket.close(code=1008)  # before accept: the client sees HTTP 403
        return
    await websocket.accept()
    session = WebSocketMediaSession(websocket, TwilioMediaProtocol())
    try:
        started = await asyncio.wait_for(_until_start(session), START_TIMEOUT_SECS)
        record = _record_for(gateway, started)
    except (InvalidToken, TimeoutError, CallEnded) as exc:
        gateway.metrics.calls_rejected.labels(provider="twilio", reason="token").inc()
        log.warning("media_refused", provider="twilio", error=str(exc))
        await _close(websocket, 1008)
        return
    await _serve(gateway, websocket, session, record)


async def _until_start(session: WebSocketMediaSession) -> CallStarted:
    while True:
        for event in await session.next_events():
            if isinstance(event, CallStarted):
                return event
            if isinstance(event, CallStopped):
                raise CallEnded("stream ended before start")


def _record_for(gateway: Gateway, started: CallStarted) -> CallRecord:
    """The call's record; a token issued by another instance makes one here."""
    claims = verify_call_token(gateway.secret, started.parameters.get("token"))
    if claims.provider != "twilio" or claims.agent not in gateway.config.agents:
        raise InvalidToken("call token is not for a Twilio call of a known agent")
    record = gateway.registry.get(claims.call_id)
    if record is None:
        record = gateway.registry.add(CallRecord(claims.call_id, "twilio", claims.agent))
    if record.status not in ("initiated", "ringing"):
        raise InvalidToken("call token was already used")
    gateway.registry.link(record, started.provider_call_id)
    return record


async def _serve(
    gateway: Gateway, websocket: WebSocket, session: WebSocketMediaSession, record: CallRecord
) -> None:
    agent = gateway.config.agents[record.agent]
    rest = _rest_client(gateway)

    async def hang_up() -> None:
        if rest is not None and record.provider_call_id:
            try:
                await rest.hangup(record.provider_call_id)
            except TwilioApiError as exc:
                log.warning("hangup_failed", provider="twilio", error=str(exc))
        await _close(websocket, 1000)

    call = Call(
        record,
        agent,
        build_services(agent),
        session,
        gateway.metrics,
        hang_up,
        gateway.config.settings.calls.playout_lead_ms / 1000,
    )
    try:
        await call.run()
    finally:
        await _close(websocket, 1000)


def _rest_client(gateway: Gateway) -> TwilioRest | None:
    twilio = gateway.config.settings.twilio
    if not (twilio.account_sid and twilio.auth_token):
        return None
    return TwilioRest(
        twilio.account_sid, twilio.auth_token, twilio.api_base, twilio.edge, twilio.region
    )


async def _close(websocket: WebSocket, code: int) -> None:
    if websocket.application_state is WebSocketState.CONNECTED:
        with suppress(RuntimeError, OSError):
            await websocket.close(code=code)


routes = [
    Route("/twilio/voice", voice, methods=["POST"]),
    Route("/twilio/status", status, methods=["POST"]),
    WebSocketRoute(MEDIA_PATH, media),
]
