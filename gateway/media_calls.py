"""What every media-stream provider's edge shares: admitting a ringing call, refusing what fails
a signature or token check, and serving the media socket with one `Call`.

The provider modules (`twilio_routes`, `plivo_routes`) keep only what differs: how a request is
signed, what the answer document looks like, where the call token travels and how to hang up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass

import structlog
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from gateway.call import Call
from gateway.media_session import CallEnded, MediaProtocol, WebSocketMediaSession
from gateway.registry import CallRecord, new_call_id
from gateway.security import InvalidToken, issue_call_token, verify_call_token
from gateway.state import Gateway
from pipeline.services import build_services
from providers.events import CallStarted, CallStopped

log = structlog.get_logger()

START_TIMEOUT_SECS = 10.0
UNKNOWN_AGENT_APOLOGY = "Sorry, this number is not set up to take calls yet. Goodbye."
BUSY_MESSAGE = "Sorry, all our agents are busy right now. Please call again later."

TokenOf = Callable[[CallStarted], str | None]
"""Where a provider's call token is, once the stream's `start` has arrived."""

HangUp = Callable[[str], Awaitable[None]]
"""Ends the call at the provider (by its call id); logs its own API errors, never raises them."""


@dataclass(frozen=True, slots=True)
class Ringing:
    """What a provider's answer webhook says about a ringing inbound call."""

    provider_call_id: str | None
    from_number: str | None
    to_number: str | None


@dataclass(frozen=True, slots=True)
class Admitted:
    record: CallRecord
    token: str


def admit(
    gateway: Gateway, provider: str, requested_agent: str | None, ringing: Ringing
) -> Admitted | str:
    """A call record and its call token, or the message to speak before hanging up instead."""
    if not gateway.ready:
        gateway.metrics.calls_rejected.labels(provider=provider, reason="not_ready").inc()
        return BUSY_MESSAGE
    if gateway.at_capacity:
        gateway.metrics.calls_rejected.labels(provider=provider, reason="capacity").inc()
        return BUSY_MESSAGE
    agent = gateway.config.agent_for(requested_agent, ringing.to_number)
    if agent not in gateway.config.agents:
        log.warning("agent_unknown", agent=agent[:64], provider=provider)
        return UNKNOWN_AGENT_APOLOGY
    record = gateway.registry.add(
        CallRecord(
            id=new_call_id(),
            provider=provider,
            agent=agent,
            provider_call_id=ringing.provider_call_id,
            from_number=ringing.from_number,
            to_number=ringing.to_number,
            status="ringing",
        )
    )
    ttl = gateway.config.settings.calls.token_ttl_secs
    token = issue_call_token(gateway.secret, record.id, provider, agent, ttl)
    log.info("call_answered", call_id=record.id, provider=provider, agent=agent)
    return Admitted(record, token)


def signature_refused(gateway: Gateway, provider: str, path: str) -> Response:
    gateway.metrics.calls_rejected.labels(provider=provider, reason="signature").inc()
    log.warning("webhook_signature_invalid", provider=provider, path=path)
    return Response("invalid signature", status_code=403)


def record_provider_status(gateway: Gateway, provider_call_id: str, status: str | None) -> None:
    """Note a provider's status callback on its call, if the call is known here."""
    record = gateway.registry.by_provider_call_id(provider_call_id)
    if record is not None and status:
        record.provider_status = status[:64]
        log.info("provider_status", call_id=record.id, status=record.provider_status)


async def refuse_upgrade(gateway: Gateway, websocket: WebSocket, provider: str) -> None:
    gateway.metrics.calls_rejected.labels(provider=provider, reason="signature").inc()
    log.warning("upgrade_signature_invalid", provider=provider)
    await websocket.close(code=1008)  # before accept: the client sees HTTP 403


async def serve_media(
    gateway: Gateway,
    websocket: WebSocket,
    protocol: MediaProtocol,
    provider: str,
    token_of: TokenOf,
    hang_up: HangUp | None,
) -> None:
    """Accept the media socket, check the call token at `start`, then run the call.

    A bad or missing token, no `start` in time, or a stream broken before `start` closes the
    socket with 1008 and starts no call.
    """
    await websocket.accept()
    session = WebSocketMediaSession(websocket, protocol)
    try:
        started = await asyncio.wait_for(_until_start(session), START_TIMEOUT_SECS)
        record = _record_for(gateway, provider, started, token_of(started))
    except (InvalidToken, TimeoutError, CallEnded) as exc:
        gateway.metrics.calls_rejected.labels(provider=provider, reason="token").inc()
        log.warning("media_refused", provider=provider, error=str(exc))
        await close(websocket, 1008)
        return
    await _serve(gateway, websocket, session, record, hang_up)


async def _until_start(session: WebSocketMediaSession) -> CallStarted:
    while True:
        for event in await session.next_events():
            if isinstance(event, CallStarted):
                return event
            if isinstance(event, CallStopped):
                raise CallEnded("stream ended before start")


def _record_for(
    gateway: Gateway, provider: str, started: CallStarted, token: str | None
) -> CallRecord:
    """The call's record; a token issued by another instance makes one here."""
    claims = verify_call_token(gateway.secret, token)
    if claims.provider != provider or claims.agent not in gateway.config.agents:
        raise InvalidToken(f"call token is not for a {provider} call of a known agent")
    record = gateway.registry.get(claims.call_id)
    if record is None:
        record = gateway.registry.add(CallRecord(claims.call_id, provider, claims.agent))
    if record.status not in ("initiated", "ringing"):
        raise InvalidToken("call token was already used")
    gateway.registry.link(record, started.provider_call_id)
    return record


async def _serve(
    gateway: Gateway,
    websocket: WebSocket,
    session: WebSocketMediaSession,
    record: CallRecord,
    hang_up: HangUp | None,
) -> None:
    agent = gateway.config.agents[record.agent]

    async def hang_up_call() -> None:
        if hang_up is not None and record.provider_call_id:
            await hang_up(record.provider_call_id)
        await close(websocket, 1000)

    call = Call(
        record,
        agent,
        build_services(agent),
        session,
        gateway.metrics,
        hang_up_call,
        gateway.config.settings.calls.playout_lead_ms / 1000,
    )
    try:
        await call.run()
    finally:
        await close(websocket, 1000)


async def close(websocket: WebSocket, code: int) -> None:
    """Close unless the peer already went away (then there is no one to tell)."""
    if websocket.application_state is WebSocketState.CONNECTED:
        with suppress(WebSocketDisconnect, RuntimeError, OSError):
            await websocket.close(code=code)
