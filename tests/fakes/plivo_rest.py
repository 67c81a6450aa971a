"""A loopback fake of Plivo's REST API (Call resource), speaking the documented protocol.

`POST /v1/Account/{auth_id}/Call/` makes a call (201 `{"api_id","message","request_uuid"}`),
`POST .../Call/{call_uuid}/` transfers a live one (202), `DELETE .../Call/{call_uuid}/` hangs
it up (204). Bodies may be JSON (as the plivo SDK sends them) or a form. HTTP basic auth
(auth_id:auth_token) is checked; errors carry Plivo's body `{"api_id", "error"}`. Every request
is recorded, and `fail_next` makes the next requests answer a server error, as when Plivo's
voice API is down and the SDK falls back to its other hosts.

A call made to a number a test gave a `Callee` (`answer_with`) is placed: the fake fetches the
answer URL with a V3-signed POST (the callee has answered), runs the answer's `<Stream>` (signed
upgrade, `start` with the extra headers), drops it when the call is hung up through this API,
and then posts the signed hangup callback.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from gateway.simulated_plivo import PlivoDialect
from providers.plivo.signature import signature_headers
from tests.fakes.http_server import LoopbackHttpServer
from tests.fakes.phone import Callee, converse, in_thread

_ROUTE = re.compile(r"^/v1/Account/([^/]+)/Call/(?:([^/]+)/)?$")


@dataclass
class RecordedRequest:
    method: str
    path: str
    host: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeCall:
    call_uuid: str
    to: str
    from_: str
    status: str = "in-progress"
    aleg_url: str | None = None


class FakePlivoRest(LoopbackHttpServer):
    """`with FakePlivoRest() as fake:` serves on 127.0.0.1 at `fake.base_url`."""

    def __init__(self, auth_id: str | None = None, auth_token: str | None = None) -> None:
        self.auth_id = auth_id or "MA" + secrets.token_hex(9).upper()
        self.auth_token = auth_token or secrets.token_hex(20)
        self.requests: list[RecordedRequest] = []
        self.calls: dict[str, FakeCall] = {}
        self.created: list[dict[str, Any]] = []
        self.callees: dict[str, Callee] = {}
        self._failures: list[int] = []
        super().__init__()

    @property
    def base_url(self) -> str:
        return self.url

    def add_call(self, to: str = "14155550100", from_: str = "14155550199") -> FakeCall:
        """A live inbound call, as if Plivo had just connected it."""
        call = FakeCall(call_uuid=str(uuid.uuid4()), to=to, from_=from_)
        with self._lock:
            self.calls[call.call_uuid] = call
        return call

    def answer_with(self, to: str, callee: Callee) -> Callee:
        """The next call made to `to` (with or without its `+`) is answered by `callee`."""
        with self._lock:
            self.callees[to.removeprefix("+")] = callee
        return callee

    def fail_next(self, count: int, status: int = 500) -> None:
        """Answer the next `count` requests with `status` and Plivo's error body."""
        with self._lock:
            self._failures.extend([status] * count)

    # -- the API ---------------------------------------------------------------------------

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return secrets.compare_digest(user, self.auth_id) and secrets.compare_digest(
            password, self.auth_token
        )

    def _handle(self, req: RecordedRequest, auth: str | None) -> tuple[int, dict[str, Any] | None]:
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            return _error(failure, "internal server error")
        if not self._authorized(auth):
            return _error(401, "authentication failed")
        match = _ROUTE.match(req.path)
        if not match or match.group(1) != self.auth_id:
            return _error(404, "not found")
        call_uuid = match.group(2)
        if call_uuid is None:
            if req.method != "POST":
                return _error(405, "method not allowed")
            return self._create(req.body)
        with self._lock:
            call = self.calls.get(call_uuid)
        if call is None or call.status != "in-progress":
            return _error(404, "call not found")
        if req.method == "DELETE":
            with self._lock:
                call.status = "completed"
            return 204, None
        if req.method != "POST":
            return _error(405, "method not allowed")
        return self._transfer(call, req.body)

    def _create(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        for name in ("from", "to", "answer_url"):
            if not body.get(name):
                return _error(400, f"{name} parameter is required")
        request_uuid = str(uuid.uuid4())
        with self._lock:
            self.created.append(dict(body, request_uuid=request_uuid))
            callee = self.callees.pop(str(body["to"]).removeprefix("+"), None)
        if callee is not None:
            in_thread(lambda: self._place(dict(body), request_uuid, callee), callee)
        return 201, {"api_id": _api_id(), "message": "call fired", "request_uuid": request_uuid}

    async def _place(self, body: dict[str, Any], request_uuid: str, callee: Callee) -> None:
        """Answer: fetch the answer URL, stream, then post the hangup callback."""
        call = FakeCall(str(uuid.uuid4()), str(body["to"]), str(body["from"]))
        with self._lock:
            self.calls[call.call_uuid] = call
        form = {
            "ALegRequestUUID": request_uuid,
            "ALegUUID": call.call_uuid,
            "CallStatus": "in-progress",
            "CallUUID": call.call_uuid,
            "Direction": "outbound",
            "Event": "StartApp",
            "From": call.from_,
            "RequestUUID": request_uuid,
            "To": call.to,
        }
        async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
            await asyncio.sleep(0.05)  # the 201 goes out first, as with Plivo
            answer_url = str(body["answer_url"])
            headers = signature_headers(self.auth_token, answer_url, form)
            response = await http.post(answer_url, data=form, headers=headers)
            dialect = PlivoDialect(self.auth_token, call.to, call.from_, call.call_uuid)
            dialect.auth_id = self.auth_id
            answer = dialect.parse_answer(response.text)
            if answer.stream_url is not None:
                await converse(
                    dialect, answer.stream_url, answer.parameters, callee,
                    lambda: call.status == "in-progress",
                )
            with self._lock:
                call.status = "completed"
            hangup_url = body.get("hangup_url")
            if hangup_url:
                ended = dict(form, CallStatus="completed", Event="Hangup")
                ended["HangupCause"] = "NORMAL_CLEARING"
                headers = signature_headers(self.auth_token, hangup_url, ended)
                await http.post(hangup_url, data=ended, headers=headers)

    def _transfer(self, call: FakeCall, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        legs = body.get("legs", "aleg")
        if legs not in ("aleg", "bleg", "both"):
            return _error(400, "legs must be aleg, bleg or both")
        if legs in ("aleg", "both") and not body.get("aleg_url"):
            return _error(400, "aleg_url parameter is required")
        with self._lock:
            call.aleg_url = body.get("aleg_url")
        return 202, {"api_id": _api_id(), "message": "call transferred"}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                req = RecordedRequest(
                    method=self.command,
                    path=urlsplit(self.path).path,
                    host=self.headers.get("Host", ""),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=_parse_body(raw, self.headers.get("Content-Type", "")),
                )
                with fake._lock:
                    fake.requests.append(req)
                status, payload = fake._handle(req, self.headers.get("Authorization"))
                data = json.dumps(payload).encode() if payload is not None else b""
                self.send_response(status)
                if payload is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _api_id() -> str:
    return str(uuid.uuid4())


def _error(status: int, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"api_id": _api_id(), "error": message}


def _parse_body(raw: bytes, content_type: str) -> dict[str, Any]:
    if not raw:
        return {}
    if content_type.startswith("application/json"):
        try:
            decoded = json.loads(raw)
        except ValueError:
            return {}
        return decoded if isinstance(decoded, dict) else {}
    return dict(parse_qsl(raw.decode()))
