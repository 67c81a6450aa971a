"""Twilio call control (hang up, redirect, dial out) through the twilio SDK.

The SDK's requests-based client runs in a worker thread (`asyncio.to_thread`): call control
is a handful of requests per call, the client needs no event-loop-bound session to open and
close (the SDK's aiohttp client does), and errors come back as the SDK's own exceptions.

`edge` and `region` (env TWILIO_EDGE, TWILIO_REGION) pick Twilio's regional host, e.g. edge
`dublin` and region `ie1` send requests to `api.dublin.ie1.twilio.com`: an instance serving
callers in one region talks to that region's Twilio. `api_base` (env TWILIO_API_BASE) sends
every request the SDK makes, whatever Twilio domain or edge/region host it targets, to that
base instead: the rewrite happens in the HTTP client, the one place all requests pass. Tests
point it at a loopback fake.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import requests
import structlog
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

log = structlog.get_logger()

T = TypeVar("T")


class TwilioApiError(Exception):
    """Twilio's REST API refused a request (`status`, Twilio `code`) or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class _BaseOverrideHttpClient(TwilioHttpClient):
    """Sends each request to `api_base`, keeping the SDK's path and query."""

    def __init__(self, api_base: str, timeout: float) -> None:
        super().__init__(timeout=timeout)
        base = urlsplit(api_base)
        if base.scheme not in ("http", "https") or not base.netloc:
            raise ValueError("api_base must be an http:// or https:// URL")
        self._scheme = base.scheme
        self._netloc = base.netloc
        self._prefix = base.path.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        target = urlsplit(url)
        url = urlunsplit((self._scheme, self._netloc, self._prefix + target.path, target.query, ""))
        return super().request(method, url, *args, **kwargs)


class TwilioRest:
    """Call control for one Twilio account."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        api_base: str | None = None,
        edge: str | None = None,
        region: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        http_client = (
            _BaseOverrideHttpClient(api_base, timeout)
            if api_base
            else TwilioHttpClient(timeout=timeout)
        )
        self._client = Client(
            account_sid, auth_token, http_client=http_client, edge=edge, region=region
        )
        self._calls = self._client.api.v2010.account.calls

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> TwilioRest:
        """TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and the optional TWILIO_API_BASE,
        TWILIO_EDGE and TWILIO_REGION."""
        return cls(
            environ["TWILIO_ACCOUNT_SID"],
            environ["TWILIO_AUTH_TOKEN"],
            api_base=environ.get("TWILIO_API_BASE") or None,
            edge=environ.get("TWILIO_EDGE") or None,
            region=environ.get("TWILIO_REGION") or None,
        )

    async def hangup(self, call_sid: str) -> None:
        """End a live call (status=completed)."""
        await self._run("hangup", call_sid, self._calls(call_sid).update, status="completed")

    async def redirect(self, call_sid: str, twiml: str) -> None:
        """Replace what a live call is doing with `twiml` (transfer: a `<Dial>`)."""
        await self._run("redirect", call_sid, self._calls(call_sid).update, twiml=twiml)

    async def create_call(
        self,
        to: str,
        from_: str,
        twiml: str,
        status_callback: str | None = None,
        status_events: Sequence[str] | None = None,
    ) -> str:
        """Dial `to` from `from_`; the answered call runs `twiml`. Returns the new CallSid."""
        optional: dict[str, Any] = {}
        if status_callback:
            optional["status_callback"] = status_callback
            if status_events:
                optional["status_callback_event"] = list(status_events)
        call = await self._run(
            "create_call", None, self._calls.create, to=to, from_=from_, twiml=twiml, **optional
        )
        return call.sid

    async def _run(
        self, action: str, call_sid: str | None, fn: Callable[..., T], **kwargs: Any
    ) -> T:
        try:
            result = await asyncio.to_thread(fn, **kwargs)
        except TwilioRestException as exc:
            log.warning(
                "twilio_api_error",
                action=action,
                call_sid=call_sid,
                status=exc.status,
                code=exc.code,
            )
            raise TwilioApiError(
                f"twilio {action} failed: HTTP {exc.status}, code {exc.code}: {exc.msg}",
                status=exc.status,
                code=exc.code,
            ) from exc
        except requests.RequestException as exc:
            log.warning("twilio_api_unreachable", action=action, call_sid=call_sid)
            raise TwilioApiError(f"twilio {action} failed: {exc}") from exc
        log.info("twilio_api_call", action=action, call_sid=getattr(result, "sid", call_sid))
        return result
