"""Plivo call control (hang up, transfer, dial out) through the plivo SDK.

The SDK picks its host per request from module constants (the main API, the voice API and the
voice fallbacks it retries after a 5xx, the call-insights host, ...). An `api_base` override
must cover all of them, so it is applied where every request leaves the SDK
(`Client.send_request`): whatever host the SDK chose, the request goes to `api_base`.

`api_hosts` picks Plivo's regional API hosts for one instance, nearest first: a voice request
goes to the first and, when that answers a 5xx, to the next (the SDK's own voice fallback,
with our hosts in place of its built-in ones); other requests go to the first. `api_base`
wins over it.

The SDK is blocking and keeps per-request state on the client (current host, retry count), so
each operation gets its own client and runs in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import plivo
import requests
import structlog
from plivo import exceptions as plivo_errors

log = structlog.get_logger()


class PlivoApiError(Exception):
    """A call-control request failed; `not_found` when the call is unknown or already over."""

    def __init__(self, message: str, *, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


def rebase_url(url: str, api_base: str) -> str:
    """`url` with its scheme and host replaced by `api_base`'s (and its path prefixed)."""
    base = urlsplit(api_base)
    parts = urlsplit(url)
    path = base.path.rstrip("/") + parts.path
    return urlunsplit((base.scheme, base.netloc, path, parts.query, parts.fragment))


SDK_API_HOST = "api.plivo.com"
"""The host of the SDK's main and voice API base URLs, which `api_hosts` replaces."""


def parse_hosts(api_hosts: str | Sequence[str] | None) -> tuple[str, ...]:
    """`api_hosts` (a list, or comma-separated) as checked http(s) base URLs."""
    if api_hosts is None:
        return ()
    items = api_hosts.split(",") if isinstance(api_hosts, str) else api_hosts
    hosts = tuple(item.strip().rstrip("/") for item in items if item.strip())
    for host in hosts:
        parts = urlsplit(host)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"PLIVO_API_HOSTS entries must be http(s) URLs, got {host!r}")
    return hosts


class _Client(plivo.RestClient):
    """The SDK client with requests sent to `api_base`, or to our `api_hosts` in place of the
    SDK's API host (its n-th voice attempt to the n-th host, the last one repeated)."""

    def __init__(
        self,
        auth_id: str,
        auth_token: str,
        api_base: str | None,
        api_hosts: tuple[str, ...],
        timeout: float,
    ):
        super().__init__(auth_id, auth_token, timeout=timeout)
        self._api_base = api_base
        self._api_hosts = api_hosts

    def send_request(self, request: Any, **kwargs: Any) -> Any:
        if self._api_base is not None:
            request.url = rebase_url(request.url, self._api_base)
        elif self._api_hosts and urlsplit(request.url).hostname == SDK_API_HOST:
            attempt = min(self.voice_retry_count, len(self._api_hosts) - 1)
            request.url = rebase_url(request.url, self._api_hosts[attempt])
        return super().send_request(request, **kwargs)


class PlivoRest:
    """Call control for one Plivo account. Safe to share between calls and tasks."""

    def __init__(
        self,
        auth_id: str,
        auth_token: str,
        api_base: str | None = None,
        timeout: float = 5.0,
        *,
        api_hosts: str | Sequence[str] | None = None,
    ) -> None:
        if api_base is not None and urlsplit(api_base).scheme not in ("http", "https"):
            raise ValueError(f"PLIVO_API_BASE must be an http(s) URL, got {api_base!r}")
        self._auth_id = auth_id
        self._auth_token = auth_token
        self._api_base = api_base
        self._api_hosts = parse_hosts(api_hosts)
        self._timeout = timeout

    async def hangup(self, call_uuid: str) -> None:
        """End a live call (`DELETE /v1/Account/{auth_id}/Call/{call_uuid}/`)."""
        await self._run("hangup", call_uuid, lambda c: c.calls.hangup(call_uuid))

    async def transfer(self, call_uuid: str, aleg_url: str) -> None:
        """Make the call fetch and run the Plivo XML at `aleg_url` (Call Transfer API)."""
        await self._run(
            "transfer",
            call_uuid,
            lambda c: c.calls.transfer(
                call_uuid, legs="aleg", aleg_url=aleg_url, aleg_method="POST"
            ),
        )

    async def create_call(self, from_: str, to: str, answer_url: str, hangup_url: str) -> str:
        """Dial out; returns Plivo's `request_uuid` (the call's UUID comes with the answer)."""
        response = await self._run(
            "create_call",
            None,
            lambda c: c.calls.create(
                from_=from_,
                to_=to,
                answer_url=answer_url,
                answer_method="POST",
                hangup_url=hangup_url,
                hangup_method="POST",
            ),
        )
        request_uuid = getattr(response, "request_uuid", None)
        if not isinstance(request_uuid, str):
            raise PlivoApiError("Plivo accepted the call but returned no request_uuid")
        return request_uuid

    async def _run(self, operation: str, call_uuid: str | None, action: Any) -> Any:
        def blocking() -> Any:
            with _Client(
                self._auth_id, self._auth_token, self._api_base, self._api_hosts, self._timeout
            ) as c:
                return action(c)

        try:
            return await asyncio.to_thread(blocking)
        except plivo_errors.ResourceNotFoundError as exc:
            log.info("plivo_call_not_found", operation=operation, call_uuid=call_uuid)
            raise PlivoApiError(f"{operation}: {exc}", not_found=True) from exc
        except (plivo_errors.PlivoRestError, requests.RequestException) as exc:
            log.warning(
                "plivo_api_failed",
                operation=operation,
                call_uuid=call_uuid,
                error=type(exc).__name__,
            )
            raise PlivoApiError(f"{operation}: {type(exc).__name__}: {exc}") from exc
