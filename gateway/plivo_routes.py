"""Plivo's edge: the answer, hangup and stream-status callbacks and the Audio Streaming socket.

Plivo signs its callbacks and the media socket's upgrade with `X-Plivo-Signature-V3` (and its
nonce). The call token rides in `<Stream extraHeaders>`, whose keys and values may hold letters
and digits only, so it travels in its alphanumeric form (`encode_token_alnum`). Plivo hands the
extra headers back in the `start` message (`extra_headers`); a token header on the upgrade
request itself is used first when present. Plivo's stream has no `stop`: the socket closing
ends the call.

A transfer moves the call's A leg to `/plivo/transfer` (Call Transfer API), which answers a
`<Dial>`. Where to dial travels in that URL as a signed, short-lived token bound to the call:
a bare number in the URL would let anyone who can reach us make us dial it.
"""

from __future__ import annotations

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from gateway.media_calls import (
    Admitted,
    Ringing,
    Transfer,
    admit,
    admit_outbound,
    logged_hang_up,
    record_provider_status,
    refuse_upgrade,
    serve_media,
    signature_refused,
)
from gateway.public_url import public_http_url, public_url_of, stream_url
from gateway.security import (
    InvalidToken,
    decode_token_alnum,
    encode_token_alnum,
    sign_claims,
    verify_claims,
)
from gateway.state import Gateway
from gateway.status_webhooks import sender_of
from providers.events import CallStarted
from providers.plivo.media import PlivoMediaProtocol
from providers.plivo.rest import PlivoApiError, PlivoRest
from providers.plivo.signature import NONCE_HEADER, SIGNATURE_HEADER, verify_webhook
from providers.plivo.xml import dial_xml, speak_and_hangup_xml, stream_xml

log = structlog.get_logger()

PROVIDER = "plivo"
MEDIA_PATH = "/plivo/media"
STATUS_PATH = "/plivo/status"
TRANSFER_PATH = "/plivo/transfer"
TRANSFER_PURPOSE = "plivo-transfer"
TRANSFER_TOKEN_TTL_SECS = 120
"""Plivo fetches the transfer URL at once; the token need not outlive that."""
TOKEN_HEADER = "calltoken"
"""Extra header carrying the call token (alphanumeric form)."""
CALL_ID_HEADER = "callid"
"""Extra header carrying our call id as hex of its text: informational, the token is what counts."""


def _xml(document: str) -> Response:
    return Response(document, media_type="application/xml")


def _e164(number: str | None) -> str | None:
    """Plivo writes numbers without the leading `+`; routes are keyed by E.164."""
    return f"+{number}" if number and number.isascii() and number.isdigit() else number


def _signed(auth_token: str, url: str, request: WebSocket | Request, params: dict | None) -> bool:
    nonce = request.headers.get(NONCE_HEADER, "")
    signature = request.headers.get(SIGNATURE_HEADER, "")
    method = "GET" if params is None else "POST"
    return verify_webhook(auth_token, url, nonce, signature, params, method)


async def _verified_form(request: Request, gateway: Gateway) -> dict[str, str] | None:
    """The callback's form params, or None if the signature check fails."""
    form = await request.form()
    params = {key: str(value) for key, value in form.items()}
    auth_token = gateway.config.settings.plivo.auth_token
    if not auth_token or _signed(auth_token, public_http_url(gateway, request), request, params):
        return params
    return None


async def answer(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    params = await _verified_form(request, gateway)
    if params is None:
        return signature_refused(gateway, PROVIDER, request.url.path)
    ringing = Ringing(params.get("CallUUID"), _e164(params.get("From")), _e164(params.get("To")))
    if call_id := request.query_params.get("call_id"):
        token = _token_or_none(request.query_params.get("token"))
        admitted = await admit_outbound(gateway, PROVIDER, call_id, token, ringing)
        if isinstance(admitted, Admitted):
            sender_of(request.app).notify(admitted.record, "answered")
    else:
        admitted = await admit(gateway, PROVIDER, request.query_params.get("agent"), ringing)
    if isinstance(admitted, str):
        return _xml(speak_and_hangup_xml(admitted))
    headers = {
        TOKEN_HEADER: encode_token_alnum(admitted.token),
        CALL_ID_HEADER: admitted.record.id.encode().hex(),
    }
    document = stream_xml(
        stream_url(gateway, request, MEDIA_PATH),
        headers,
        status_callback_url=public_url_of(gateway, request, STATUS_PATH),
    )
    return _xml(document)


def _token_or_none(alnum: str | None) -> str | None:
    """An outbound call's answer URL carries its call token in the alphanumeric form."""
    try:
        return decode_token_alnum(alnum)
    except InvalidToken:
        return None


async def hangup(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    params = await _verified_form(request, gateway)
    if params is None:
        return signature_refused(gateway, PROVIDER, request.url.path)
    status = params.get("CallStatus") or "completed"
    record = await record_provider_status(
        gateway, params.get("CallUUID", ""), status, request.query_params.get("call_id")
    )
    events = sender_of(request.app)
    if record is not None and (changed := events.provider_status(record, status)):
        await gateway.registry.save(record, *changed)
    return Response(status_code=204)


async def status(request: Request) -> Response:
    """Stream status callbacks (stream started, stopped, failed) and call status updates."""
    gateway: Gateway = request.app.state.gateway
    params = await _verified_form(request, gateway)
    if params is None:
        return signature_refused(gateway, PROVIDER, request.url.path)
    state = params.get("CallStatus") or params.get("Event")
    await record_provider_status(gateway, params.get("CallUUID", ""), state)
    return Response(status_code=204)


async def transfer(request: Request) -> Response:
    """The `<Dial>` a transferred call's A leg runs: its target comes from the signed `t`."""
    gateway: Gateway = request.app.state.gateway
    params = await _verified_form(request, gateway)
    if params is None:
        return signature_refused(gateway, PROVIDER, request.url.path)
    try:
        claims = verify_claims(gateway.secret, TRANSFER_PURPOSE, request.query_params.get("t"))
        if params.get("CallUUID") != claims.get("call"):
            raise InvalidToken("transfer token is for another call")
        document = dial_xml(claims["to"], claims.get("caller_id") or None)
    except (InvalidToken, KeyError, ValueError) as exc:
        log.warning("transfer_refused", provider=PROVIDER, error=str(exc))
        return Response("invalid transfer token", status_code=403)
    log.info("transfer_dialed", provider=PROVIDER, call_uuid=params.get("CallUUID"))
    return _xml(document)


def _upgrade_signed(gateway: Gateway, websocket: WebSocket, auth_token: str) -> bool:
    """Plivo signs the upgrade as a GET without params over the stream URL it was given.

    Plivo's own stream SDKs check it over the http(s) form of that URL; the ws(s) form is
    accepted too: both name this one URL, and only the auth token signs either.
    """
    url = stream_url(gateway, websocket, MEDIA_PATH)
    http_url = "http" + url.removeprefix("ws")
    return any(_signed(auth_token, candidate, websocket, None) for candidate in (http_url, url))


async def media(websocket: WebSocket) -> None:
    gateway: Gateway = websocket.app.state.gateway
    auth_token = gateway.config.settings.plivo.auth_token
    if auth_token and not _upgrade_signed(gateway, websocket, auth_token):
        await refuse_upgrade(gateway, websocket, PROVIDER)
        return
    upgrade_token = websocket.headers.get(TOKEN_HEADER)

    def token_of(started: CallStarted) -> str:
        return decode_token_alnum(upgrade_token or started.parameters.get(TOKEN_HEADER))

    rest = _rest_client(gateway)
    transfer_url = public_url_of(gateway, websocket, TRANSFER_PATH)
    await serve_media(
        gateway,
        websocket,
        PlivoMediaProtocol(),
        PROVIDER,
        token_of,
        logged_hang_up(rest.hangup, PROVIDER, PlivoApiError) if rest else None,
        _rest_transfer(rest, gateway.secret, transfer_url) if rest else None,
    )


def _rest_client(gateway: Gateway) -> PlivoRest | None:
    plivo = gateway.config.settings.plivo
    if not (plivo.auth_id and plivo.auth_token):
        return None
    return PlivoRest(plivo.auth_id, plivo.auth_token, plivo.api_base, api_hosts=plivo.api_hosts)


def _rest_transfer(rest: PlivoRest, secret: str, transfer_url: str) -> Transfer:
    async def transfer(call_uuid: str, to: str, caller_id: str | None) -> None:
        """The A leg leaves the stream for `/plivo/transfer`'s `<Dial>`: Plivo ends the stream."""
        dial_xml(to, caller_id)  # a target Plivo could not dial fails here, before the API call
        claims = {"to": to, "caller_id": caller_id or "", "call": call_uuid}
        token = sign_claims(secret, TRANSFER_PURPOSE, claims, TRANSFER_TOKEN_TTL_SECS)
        await rest.transfer(call_uuid, aleg_url=f"{transfer_url}?t={token}")

    return transfer



routes = [
    Route("/plivo/answer", answer, methods=["POST"]),
    Route("/plivo/hangup", hangup, methods=["POST"]),
    Route(STATUS_PATH, status, methods=["POST"]),
    Route(TRANSFER_PATH, transfer, methods=["POST"]),
    WebSocketRoute(MEDIA_PATH, media),
]
