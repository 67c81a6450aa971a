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
from gateway.status_webhooks import sender_of
from pipeline.services import build_services
from providers.events import CallStarted, CallStopped

log = structlog.get_logger()

START_TIMEOUT_SECS = 10.0
UNKNOWN_AGENT_APOLOGY = "Sorry, this number is not set up to take calls yet. Goodbye."
BUSY_MESSAGE = "Sorry, all our agents are busy right now. Please call again later."
NOT_PLACED_MESSAGE = "Sorry, this call cannot be connected. Goodbye."

TokenOf = Callable[[CallStarted], str | None]
"""Where a provider's call token is, once the stream's `start` has arrived."""

HangUp = Callable[[str], Awaitable[None]]


def logged_hang_up(hang_up: HangUp, provider: str, errors: type[Exception]) -> HangUp:
    """The provider's REST hang-up; its failure is logged, the call ends on our side anyway."""

    async def attempt(provider_call_id: str) -> None:
        try:
            await hang_up(provider_call_id)
        except errors as exc:
            log.warning("hangup_failed", provider=provider, error=str(exc))

    return attempt

Transfer = Callable[[str, str, str | None], Awaitable[None]]
"""(provider call id, where to, caller id): hand the live call over to another number."""
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


async def admit(
    gateway: Gateway, provider: str, requested_agent: str | None, ringing: Ringing
) -> Admitted | str:
    """A call record and its call token, or the message to speak before hanging up instead.

    A draining, starting or full gateway (this instance or, with Redis, the cluster) answers
    with the busy message.
    """
    agent = gateway.config.agent_for(requested_agent, ringing.to_number)
    if agent not in gateway.config.agents:
        log.warning("agent_unknown", agent=agent[:64], provider=provider)
        return UNKNOWN_AGENT_APOLOGY
    call_id = new_call_id()
    if refusal := await gateway.admission(call_id):
        gateway.metrics.calls_rejected.labels(provider=provider, reason=refusal).inc()
        log.info("call_refused", provider=provider, reason=refusal)
        return BUSY_MESSAGE
    record = await gateway.registry.add(
        CallRecord(
            id=call_id,
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
    gateway.prewarmer.start(record.id, gateway.config.agents[agent], record.variables, ttl)
    return Admitted(record, token)


async def admit_outbound(
    gateway: Gateway, provider: str, call_id: str, token: str | None, ringing: Ringing
) -> Admitted | str:
    """The record `POST /v1/calls` made for this answered call, or the message to speak.

    The answer URL carries the call's token, so any instance can answer for it.
    """
    try:
        claims = verify_call_token(gateway.secret, token)
        if (claims.call_id, claims.provider) != (call_id, provider):
            raise InvalidToken("call token is not for this call")
        if claims.agent not in gateway.config.agents:
            raise InvalidToken("call token names an unknown agent")
    except InvalidToken as exc:
        log.warning("outbound_answer_refused", provider=provider, error=str(exc))
        return NOT_PLACED_MESSAGE
    record = await gateway.registry.get(call_id) or await gateway.registry.add(
        CallRecord(call_id, provider, claims.agent, direction="outbound")
    )
    if record.status not in ("initiated", "ringing"):
        log.warning("outbound_answer_refused", provider=provider, error="call already answered")
        return NOT_PLACED_MESSAGE
    if ringing.provider_call_id:
        await gateway.registry.link(record, ringing.provider_call_id)
    log.info("call_answered", call_id=record.id, provider=provider, agent=record.agent)
    ttl = gateway.config.settings.calls.token_ttl_secs
    agent = gateway.config.agents[record.agent]
    gateway.prewarmer.start(record.id, agent, record.variables, ttl)
    return Admitted(record, token or "")


def signature_refused(gateway: Gateway, provider: str, path: str) -> Response:
    gateway.metrics.calls_rejected.labels(provider=provider, reason="signature").inc()
    log.warning("webhook_signature_invalid", provider=provider, path=path)
    return Response("invalid signature", status_code=403)


async def record_provider_status(
    gateway: Gateway, provider_call_id: str, status: str | None, call_id: str | None = None
) -> CallRecord | None:
    """Note a provider's status callback on its call (by our id if the callback URL carries it,
    else by the provider's); the call's record if it is known here and a status was given."""
    record = await gateway.registry.get(call_id) if call_id else None
    record = record or await gateway.registry.by_provider_call_id(provider_call_id)
    if record is None or not status:
        return None
    record.provider_status = status[:64]
    await gateway.registry.save(record, "provider_status")
    log.info("provider_status", call_id=record.id, status=record.provider_status)
    return record


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
    transfer: Transfer | None = None,
) -> None:
    """Accept the media socket, check the call token at `start`, then run the call.

    A bad or missing token, no `start` in time, or a stream broken before `start` closes the
    socket with 1008 and starts no call.
    """
    await websocket.accept()
    session = WebSocketMediaSession(websocket, protocol)
    try:
        started = await asyncio.wait_for(_until_start(session), START_TIMEOUT_SECS)
        record = await _record_for(gateway, provider, started, token_of(started))
    except (InvalidToken, TimeoutError, CallEnded) as exc:
        gateway.metrics.calls_rejected.labels(provider=provider, reason="token").inc()
        log.warning("media_refused", provider=provider, error=str(exc))
        await close(websocket, 1008)
        return
    await _serve(gateway, websocket, session, record, hang_up, transfer)


async def _until_start(session: WebSocketMediaSession) -> CallStarted:
    while True:
        for event in await session.next_events():
            if isinstance(event, CallStarted):
                return event
            if isinstance(event, CallStopped):
                raise CallEnded("stream ended before start")


async def _record_for(
    gateway: Gateway, provider: str, started: CallStarted, token: str | None
) -> CallRecord:
    """The call's record; a token issued by another instance makes one here (with Redis, the
    record that instance stored). The call holds its slot here until it ends."""
    claims = verify_call_token(gateway.secret, token)
    if claims.provider != provider or claims.agent not in gateway.config.agents:
        raise InvalidToken(f"call token is not for a {provider} call of a known agent")
    record = await gateway.registry.get(claims.call_id)
    if record is None:
        record = await gateway.registry.add(CallRecord(claims.call_id, provider, claims.agent))
    if record.status not in ("initiated", "ringing"):
        raise InvalidToken("call token was already used")
    await gateway.registry.hold(record.id, None)
    await gateway.registry.link(record, started.provider_call_id)
    return record


async def _serve(
    gateway: Gateway,
    websocket: WebSocket,
    session: WebSocketMediaSession,
    record: CallRecord,
    hang_up: HangUp | None,
    transfer: Transfer | None,
) -> None:
    agent = gateway.config.agents[record.agent]

    async def hang_up_call() -> None:
        if hang_up is not None and record.provider_call_id:
            await hang_up(record.provider_call_id)
        await close(websocket, 1000)

    async def transfer_call(to: str) -> None:
        if transfer is None or not record.provider_call_id:
            raise RuntimeError(f"transfer is not available on {record.provider} calls")
        await transfer(record.provider_call_id, to, record.to_number)

    services = await gateway.prewarmer.take(record.id)
    call = Call(
        record,
        agent,
        services or build_services(agent, record.variables),
        session,
        gateway.metrics,
        hang_up_call,
        gateway.config.settings.calls.playout_lead_ms / 1000,
        transfer_provider=transfer_call,
        save_record=gateway.registry.save,
    )
    gateway.calls.add(call)
    try:
        await call.run()
    finally:
        gateway.calls.discard(call)
        await gateway.registry.release(record.id)
        await close(websocket, 1000)
        ended = "failed" if record.status == "failed" else "completed"
        sender_of(websocket.app).notify(record, ended)


async def close(websocket: WebSocket, code: int) -> None:
    """Close unless the peer already went away (then there is no one to tell)."""
    if websocket.application_state is WebSocketState.CONNECTED:
        with suppress(WebSocketDisconnect, RuntimeError, OSError):
            await websocket.close(code=code)
