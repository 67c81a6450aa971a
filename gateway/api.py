"""The `/v1` call API: bearer API key, JSON errors."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.security import InvalidToken, api_key_matches, verify_call_token
from gateway.state import Gateway

CALL_TOKEN_HEADER = "X-Callgate-Call-Token"


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def authorize(request: Request, call_id: str | None = None) -> JSONResponse | None:
    """None if the request may proceed, else the error to answer.

    The API key opens everything. A call's own token (held by whoever served that call's media)
    opens that one call's record only, so a simulated caller can read its transcript.
    """
    gateway: Gateway = request.app.state.gateway
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    configured = gateway.config.settings.api_key
    if header:
        if scheme.lower() != "bearer" or not presented:
            return error(401, "unauthorized", "use Authorization: Bearer <CALLGATE_API_KEY>")
        if configured and api_key_matches(configured, presented.strip()):
            return None
        return error(403, "forbidden", "the API key is not valid")
    token = request.headers.get(CALL_TOKEN_HEADER)
    if call_id and token:
        try:
            if verify_call_token(gateway.secret, token, now=0).call_id == call_id:
                return None
        except InvalidToken:
            pass
        return error(403, "forbidden", "the call token does not open this call")
    return error(401, "unauthorized", "missing Authorization: Bearer <CALLGATE_API_KEY>")


async def list_calls(request: Request) -> Response:
    if denied := authorize(request):
        return denied
    gateway: Gateway = request.app.state.gateway
    return JSONResponse({"calls": [record.to_json() for record in await gateway.registry.all()]})


async def get_call(request: Request) -> Response:
    call_id = request.path_params["call_id"]
    if denied := authorize(request, call_id):
        return denied
    gateway: Gateway = request.app.state.gateway
    record = await gateway.registry.get(call_id)
    if record is None:
        return error(404, "not_found", f"no call {call_id}")
    return JSONResponse(record.to_json())


routes = [
    Route("/v1/calls", list_calls, methods=["GET"]),
    Route("/v1/calls/{call_id}", get_call, methods=["GET"]),
]
