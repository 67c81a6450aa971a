"""Outbound calls: `POST /v1/calls` places one, `DELETE /v1/calls/{id}` hangs one up.

Twilio gets the answer document inline (`calls.create` with `Twiml`), so the answered call goes
straight to our media socket with its call token, no voice-webhook round trip; its status
callbacks come to `/twilio/status?call_id=…`. Plivo fetches its answer URL, which carries the
call id and the call token (alphanumeric form); `/plivo/answer` then reuses this call's record.
SIP sends an INVITE through the configured trunk (`gateway.sip_dial`); the call runs here.
"""

from __future__ import annotations

import json
import re
import time
from typing import Literal
from urllib.parse import urlencode, urlsplit

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.api import authorize, error
from gateway.public_url import public_url_of, stream_url
from gateway.registry import CallRecord, new_call_id
from gateway.security import encode_token_alnum, issue_call_token
from gateway.sip_endpoint import DialError
from gateway.state import Gateway
from gateway.status_webhooks import sender_of
from providers.plivo.rest import PlivoApiError, PlivoRest
from providers.twilio.rest import TwilioApiError, TwilioRest
from providers.twilio.twiml import connect_stream_twiml

log = structlog.get_logger()

MAX_BODY_BYTES = 64 * 1024
MAX_VARIABLES = 50
MAX_VARIABLE_CHARS = 1000
VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
TWILIO_STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")


class OutboundCall(BaseModel):
    """The body of `POST /v1/calls`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    to: str = Field(pattern=r"^\+[1-9]\d{6,14}$")
    from_: str = Field(alias="from", pattern=r"^\+[1-9]\d{6,14}$")
    provider: Literal["twilio", "plivo", "sip"]
    agent: str = Field(default="default", min_length=1, max_length=64)
    variables: dict[str, str] = Field(default_factory=dict)
    status_webhook: str | None = Field(default=None, max_length=2048)

    @field_validator("variables")
    @classmethod
    def _variables_fit(cls, variables: dict[str, str]) -> dict[str, str]:
        if len(variables) > MAX_VARIABLES:
            raise ValueError(f"at most {MAX_VARIABLES} variables")
        for name, value in variables.items():
            if not VARIABLE_NAME.match(name):
                raise ValueError(f"{name[:70]!r} is not a name of letters, digits and _")
            if len(value) > MAX_VARIABLE_CHARS:
                raise ValueError(f"{name!r} is longer than {MAX_VARIABLE_CHARS} characters")
        return variables

    @field_validator("status_webhook")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http:// or https:// URL")
        return url


_FRIENDLY = {
    "string_pattern_mismatch": "must be an E.164 number such as +14155550123",
    "literal_error": "must be one of: twilio, plivo, sip",
    "missing": "is required",
    "extra_forbidden": "is not a field of this request",
}


def _invalid(field: str | None, message: str) -> JSONResponse:
    body = {"code": "validation_error", "message": message, "field": field}
    return JSONResponse({"error": body}, status_code=422)


def _validation_error(exc: ValidationError) -> JSONResponse:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    message = _FRIENDLY.get(first["type"], first["msg"].removeprefix("Value error, "))
    return _invalid(field, f"{field}: {message}" if field else message)


async def _parse(request: Request) -> OutboundCall | Response:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        return error(413, "too_large", f"the request body exceeds {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(body)
    except ValueError:
        return _invalid(None, "the body is not JSON")
    if not isinstance(data, dict):
        return _invalid(None, "the body must be a JSON object")
    try:
        return OutboundCall.model_validate(data)
    except ValidationError as exc:
        return _validation_error(exc)


async def create_call(request: Request) -> Response:
    if denied := authorize(request):
        return denied
    gateway: Gateway = request.app.state.gateway
    parsed = await _parse(request)
    if isinstance(parsed, Response):
        return parsed
    if parsed.agent not in gateway.config.agents:
        return _invalid("agent", f"agent: no agent named {parsed.agent!r}")
    if not _configured(gateway, parsed.provider, request):
        what = "trunk" if parsed.provider == "sip" else "credentials"
        return error(503, "provider_not_configured", f"{parsed.provider} {what} not set")
    call_id = new_call_id()
    if refusal := await gateway.admission(call_id):
        if refusal == "capacity":
            return error(429, "at_capacity", "too many calls in progress; try again later")
        return error(503, "unavailable", "this instance is not taking calls (starting or draining)")
    record = await gateway.registry.add(
        CallRecord(
            id=call_id,
            provider=parsed.provider,
            agent=parsed.agent,
            direction="outbound",
            from_number=parsed.from_,
            to_number=parsed.to,
            status="initiated",
            variables=parsed.variables,
            status_webhook=parsed.status_webhook,
        )
    )
    ttl = gateway.config.settings.calls.token_ttl_secs
    token = issue_call_token(gateway.secret, record.id, record.provider, record.agent, ttl)
    try:
        if parsed.provider == "twilio":
            provider_call_id = await _dial_twilio(gateway, request, record, token)
        elif parsed.provider == "sip":
            provider_call_id = await request.app.state.sip.dialer.dial(record)
        else:
            provider_call_id = await _dial_plivo(gateway, request, record, token)
    except (TwilioApiError, PlivoApiError, DialError) as exc:
        record.status, record.end_reason, record.ended_at = "failed", "provider_error", time.time()
        await gateway.registry.release(record.id)
        await gateway.registry.save(record)
        sender_of(request.app).notify(record, "failed")
        return error(502, "provider_error", str(exc))
    if record.provider_call_id is None:  # Plivo's answer may have linked the call's own UUID
        await gateway.registry.link(record, provider_call_id)
    sender_of(request.app).notify(record, "initiated")
    log.info("call_dialed", call_id=record.id, provider=record.provider, agent=record.agent)
    body = {
        "id": record.id,
        "provider": record.provider,
        "provider_call_id": record.provider_call_id,
        "status": record.status,
    }
    return JSONResponse(body, status_code=201)


async def hang_up_call(request: Request) -> Response:
    call_id = request.path_params["call_id"]
    if denied := authorize(request):
        return denied
    gateway: Gateway = request.app.state.gateway
    record = await gateway.registry.get(call_id)
    if record is None:
        return error(404, "not_found", f"no call {call_id}")
    if record.ended_at is not None or record.status in ("completed", "failed"):
        return Response(status_code=204)
    if not record.provider_call_id or not _configured(gateway, record.provider, request):
        return error(409, "not_controllable", "the provider cannot be asked to end this call")
    hangup_by, record.hangup_by = record.hangup_by, record.hangup_by or "api"
    await gateway.registry.save(record, "hangup_by")
    try:
        if record.provider == "sip":
            request.app.state.sip.hang_up(record.id)
        elif record.provider == "twilio":
            await _twilio(gateway).hangup(record.provider_call_id)
        else:
            await _plivo(gateway).hangup(record.provider_call_id)
    except (PlivoApiError, TwilioApiError) as exc:
        if not getattr(exc, "not_found", False):
            record.hangup_by = hangup_by
            await gateway.registry.save(record, "hangup_by")
            return error(502, "provider_error", str(exc))
    log.info("call_hangup_requested", call_id=record.id, provider=record.provider)
    return JSONResponse({"id": record.id, "status": record.status}, status_code=202)


def _configured(gateway: Gateway, provider: str, request: Request) -> bool:
    settings = gateway.config.settings
    if provider == "sip":
        sip = getattr(request.app.state, "sip", None)
        return sip is not None and sip.dialer.configured
    if provider == "twilio":
        return bool(settings.twilio.account_sid and settings.twilio.auth_token)
    return bool(settings.plivo.auth_id and settings.plivo.auth_token)


def _twilio(gateway: Gateway) -> TwilioRest:
    twilio = gateway.config.settings.twilio
    assert twilio.account_sid and twilio.auth_token
    return TwilioRest(
        twilio.account_sid, twilio.auth_token, twilio.api_base, twilio.edge, twilio.region
    )


def _plivo(gateway: Gateway) -> PlivoRest:
    plivo = gateway.config.settings.plivo
    assert plivo.auth_id and plivo.auth_token
    return PlivoRest(plivo.auth_id, plivo.auth_token, plivo.api_base, api_hosts=plivo.api_hosts)


async def _dial_twilio(gateway: Gateway, request: Request, record: CallRecord, token: str) -> str:
    twiml = connect_stream_twiml(
        stream_url(gateway, request, "/twilio/media"), {"token": token, "call_id": record.id}
    )
    status_callback = public_url_of(gateway, request, "/twilio/status?") + urlencode(
        {"call_id": record.id}
    )
    assert record.to_number and record.from_number
    return await _twilio(gateway).create_call(
        record.to_number, record.from_number, twiml, status_callback, TWILIO_STATUS_EVENTS
    )


async def _dial_plivo(gateway: Gateway, request: Request, record: CallRecord, token: str) -> str:
    query = {"call_id": record.id, "token": encode_token_alnum(token)}
    answer_url = public_url_of(gateway, request, "/plivo/answer?") + urlencode(query)
    hangup_url = public_url_of(gateway, request, "/plivo/hangup?") + urlencode(
        {"call_id": record.id}
    )
    assert record.to_number and record.from_number
    return await _plivo(gateway).create_call(
        record.from_number.removeprefix("+"),
        record.to_number.removeprefix("+"),
        answer_url,
        hangup_url,
    )


routes = [
    Route("/v1/calls", create_call, methods=["POST"]),
    Route("/v1/calls/{call_id}", hang_up_call, methods=["DELETE"]),
]
