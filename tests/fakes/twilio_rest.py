"""A loopback fake of Twilio's REST API (Calls resource), speaking the documented protocol.

`POST /2010-04-01/Accounts/{AccountSid}/Calls.json` creates a call (201),
`POST .../Calls/{CallSid}.json` updates one (Status=completed hangs up, Twiml/Url redirects),
`GET .../Calls/{CallSid}.json` fetches one. HTTP basic auth (AccountSid:AuthToken) is checked;
errors carry Twilio's JSON error body. Every request is recorded for tests to assert on.

A call created for a number a test gave a `Callee` (`answer_with`) is placed: the fake posts
signed status callbacks (the events asked for; `completed` always), runs the inline TwiML's
`<Connect><Stream>` as Twilio would (signed upgrade, `start` with the `<Parameter>`s), and
drops the stream when the call is hung up through this API.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from twilio.request_validator import RequestValidator

from gateway.simulated_twilio import SIGNATURE_HEADER, TwilioDialect
from tests.fakes.http_server import LoopbackHttpServer
from tests.fakes.phone import Callee, converse, in_thread

API_VERSION = "2010-04-01"
_ROUTE = re.compile(rf"^/{API_VERSION}/Accounts/([^/]+)/Calls(?:/([^/]+))?\.json$")
LIVE_STATUSES = frozenset({"queued", "ringing", "in-progress"})
_CALLBACK_STATUS = {"initiated": "initiated", "ringing": "ringing", "answered": "in-progress"}


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    form_pairs: list[tuple[str, str]]

    @property
    def form(self) -> dict[str, str]:
        return dict(self.form_pairs)

    def getlist(self, name: str) -> list[str]:
        return [v for k, v in self.form_pairs if k == name]


@dataclass
class FakeCall:
    sid: str
    to: str
    from_: str
    status: str = "in-progress"
    direction: str = "inbound"
    twiml: str | None = None
    status_callback: str | None = None
    status_events: list[str] = field(default_factory=list)
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    ended: datetime | None = None


def _error(status: int, code: int, message: str) -> tuple[int, dict[str, Any]]:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return status, body


class FakeTwilioRest(LoopbackHttpServer):
    """`with FakeTwilioRest() as fake:` serves on 127.0.0.1 at `fake.base_url`."""

    def __init__(self, account_sid: str | None = None, auth_token: str | None = None) -> None:
        self.account_sid = account_sid or "AC" + secrets.token_hex(16)
        self.auth_token = auth_token or secrets.token_hex(16)
        self.requests: list[RecordedRequest] = []
        self.calls: dict[str, FakeCall] = {}
        self.callees: dict[str, Callee] = {}
        super().__init__()

    @property
    def base_url(self) -> str:
        return self.url

    def add_call(self, to: str = "+15005550006", from_: str = "+15005550001") -> FakeCall:
        """A live inbound call, as if Twilio had just connected it."""
        call = FakeCall(sid="CA" + secrets.token_hex(16), to=to, from_=from_)
        with self._lock:
            self.calls[call.sid] = call
        return call

    def answer_with(self, to: str, callee: Callee) -> Callee:
        """The next call created to `to` is answered by `callee`."""
        with self._lock:
            self.callees[to] = callee
        return callee

    # -- the API ---------------------------------------------------------------------------

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return secrets.compare_digest(user, self.account_sid) and secrets.compare_digest(
            password, self.auth_token
        )

    def _handle(self, req: RecordedRequest, auth: str | None) -> tuple[int, dict[str, Any]]:
        if not self._authorized(auth):
            return _error(401, 20003, "Authenticate")
        match = _ROUTE.match(req.path)
        if not match or match.group(1) != self.account_sid:
            return _error(404, 20404, f"The requested resource {req.path} was not found")
        call_sid = match.group(2)
        if call_sid is None:
            if req.method != "POST":
                return _error(405, 20004, "Method not allowed")
            return self._create(req.form, req.getlist("StatusCallbackEvent"))
        with self._lock:
            call = self.calls.get(call_sid)
        if call is None:
            return _error(404, 20404, f"The requested resource {req.path} was not found")
        if req.method == "GET":
            return 200, self._resource(call)
        if req.method != "POST":
            return _error(405, 20004, "Method not allowed")
        return self._update(call, req.form)

    def _create(self, form: dict[str, str], events: list[str]) -> tuple[int, dict[str, Any]]:
        if not form.get("To"):
            return _error(400, 21201, "No 'To' number is specified")
        if not form.get("From"):
            return _error(400, 21213, "No 'From' number is specified")
        if not (form.get("Url") or form.get("Twiml") or form.get("ApplicationSid")):
            return _error(400, 21205, "Url parameter is required")
        call = FakeCall(
            sid="CA" + secrets.token_hex(16),
            to=form["To"],
            from_=form["From"],
            status="queued",
            direction="outbound-api",
            twiml=form.get("Twiml"),
            status_callback=form.get("StatusCallback"),
            status_events=events,
        )
        with self._lock:
            self.calls[call.sid] = call
            callee = self.callees.pop(call.to, None)
        if callee is not None:
            in_thread(lambda: self._place(call, callee), callee)
        return 201, self._resource(call)

    async def _place(self, call: FakeCall, callee: Callee) -> None:
        """Ring, answer, stream the TwiML's media, then report the call completed."""
        async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
            await asyncio.sleep(0.05)  # the 201 goes out first, as with Twilio
            await self._callback(http, call, "initiated")
            call.status = "ringing"
            await self._callback(http, call, "ringing")
            call.status = "in-progress"
            await self._callback(http, call, "answered")
            answer = TwilioDialect.parse_answer(call.twiml or "")
            if answer.stream_url is not None:
                dialect = TwilioDialect(self.auth_token, call.to, call.from_, call.sid)
                dialect.account_sid = self.account_sid
                await converse(
                    dialect, answer.stream_url, answer.parameters, callee,
                    lambda: call.status in LIVE_STATUSES,
                )
            with self._lock:
                if call.status in LIVE_STATUSES:
                    call.status, call.ended = "completed", datetime.now(UTC)
            await self._callback(http, call, "completed")

    async def _callback(self, http: httpx.AsyncClient, call: FakeCall, event: str) -> None:
        """A status callback, signed, if the call asked for this event."""
        if not call.status_callback or (event != "completed" and event not in call.status_events):
            return
        form = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "CallSid": call.sid,
            "CallStatus": _CALLBACK_STATUS.get(event, call.status),
            "CallbackSource": "call-progress-events",
            "Called": call.to,
            "Caller": call.from_,
            "Direction": call.direction,
            "From": call.from_,
            "To": call.to,
            "Timestamp": format_datetime(datetime.now(UTC)),
        }
        if event == "completed":
            form["CallDuration"] = str(int((datetime.now(UTC) - call.created).total_seconds()))
        signature = RequestValidator(self.auth_token).compute_signature(call.status_callback, form)
        await http.post(call.status_callback, data=form, headers={SIGNATURE_HEADER: signature})

    def _update(self, call: FakeCall, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        status = form.get("Status")
        if status is not None and status not in ("completed", "canceled"):
            return _error(400, 21218, f"Invalid value for Status: {status}")
        redirect = form.get("Twiml") or form.get("Url")
        if redirect is not None and call.status not in LIVE_STATUSES:
            return _error(400, 21220, "Call is not in-progress. Cannot redirect.")
        with self._lock:
            if status and call.status in LIVE_STATUSES:
                call.status = status
                call.ended = datetime.now(UTC)
            elif form.get("Twiml"):
                call.twiml = form["Twiml"]
        return 200, self._resource(call)

    def _resource(self, call: FakeCall) -> dict[str, Any]:
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{call.sid}"
        start = format_datetime(call.created) if call.status != "queued" else None
        return {
            "sid": call.sid,
            "date_created": format_datetime(call.created),
            "date_updated": format_datetime(call.ended or call.created),
            "parent_call_sid": None,
            "account_sid": self.account_sid,
            "to": call.to,
            "to_formatted": call.to,
            "from": call.from_,
            "from_formatted": call.from_,
            "phone_number_sid": None,
            "status": call.status,
            "start_time": start,
            "end_time": format_datetime(call.ended) if call.ended else None,
            "duration": str(int((call.ended - call.created).total_seconds()))
            if call.ended
            else None,
            "price": None,
            "price_unit": "USD",
            "direction": call.direction,
            "answered_by": None,
            "api_version": API_VERSION,
            "forwarded_from": None,
            "group_sid": None,
            "caller_name": None,
            "queue_time": "0",
            "trunk_sid": None,
            "uri": uri + ".json",
            "subresource_uris": {
                "notifications": uri + "/Notifications.json",
                "recordings": uri + "/Recordings.json",
                "streams": uri + "/Streams.json",
            },
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                target = urlsplit(self.path)
                req = RecordedRequest(
                    method=self.command,
                    path=target.path,
                    query=target.query,
                    headers=dict(self.headers.items()),
                    form_pairs=parse_qsl(body, keep_blank_values=True),
                )
                with fake._lock:
                    fake.requests.append(req)
                status, payload = fake._handle(req, self.headers.get("Authorization"))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="Twilio API"')
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
