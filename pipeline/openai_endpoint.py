"""The HTTP plumbing of OpenAI-compatible APIs, shared by the LLM, STT and TTS clients.

One `httpx.AsyncClient` per base URL serves the whole process, so calls reuse warm (TLS)
connections: a fresh TLS handshake to a cloud API costs a caller 50-200 ms per turn.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import httpx
import structlog

from pipeline.cloud_errors import ServiceError, http_error

log = structlog.get_logger()

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_clients: dict[str, tuple[asyncio.AbstractEventLoop, httpx.AsyncClient]] = {}


def shared_client(base_url: str) -> httpx.AsyncClient:
    """The process's client for `base_url` (one per event loop: connections belong to one)."""
    loop = asyncio.get_running_loop()
    entry = _clients.get(base_url)
    if entry is None or entry[0] is not loop or entry[1].is_closed:
        client = httpx.AsyncClient(
            base_url=base_url,
            limits=httpx.Limits(max_connections=200, keepalive_expiry=60),
        )
        entry = _clients[base_url] = (loop, client)
    return entry[1]


async def close_shared_clients() -> None:
    """Closes this loop's shared clients (tests, between event loops; a server process just
    exits, and the kernel closes its connections)."""
    loop = asyncio.get_running_loop()
    for base_url, (owner, client) in list(_clients.items()):
        if owner is loop:
            del _clients[base_url]
            await client.aclose()


class OpenAIEndpoint:
    """Where an OpenAI-compatible API lives and how to authenticate to it."""

    __slots__ = ("_api_key", "base_url", "service")

    def __init__(self, service: str, base_url: str | None, api_key: str | None) -> None:
        self.service = service
        self.base_url = (
            base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        ).rstrip("/")
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")

    @property
    def client(self) -> httpx.AsyncClient:
        return shared_client(self.base_url)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def redact(self, text: str) -> str:
        """`text` without the key (some servers echo what they were sent)."""
        return text.replace(self._api_key, "[redacted]") if self._api_key else text

    async def error(self, response: httpx.Response) -> ServiceError:
        """The `ServiceError` of an HTTP error answer, with the server's message."""
        body = (await response.aread()).decode("utf-8", errors="replace")
        try:
            error = json.loads(body).get("error")
        except (ValueError, AttributeError):
            error = None
        if isinstance(error, dict):
            message = str(error.get("message") or error.get("type") or "")
            if error.get("code"):
                message += f" ({error['code']})"
        else:
            message = str(error) if error else body[:300] or response.reason_phrase
        return http_error(
            self.service, response.status_code, self.redact(message), response.headers
        )

    async def warm_up(self, timeout_secs: float = 5) -> None:
        """Opens a connection now (GET /models), so the caller's first turn finds it warm.
        Failures are logged, not raised: the call itself will report them."""
        started = time.perf_counter()
        try:
            response = await self.client.get("models", headers=self.headers, timeout=timeout_secs)
        except httpx.HTTPError as exc:
            log.warning("cloud_warm_up_failed", service=self.service, error=type(exc).__name__)
            return
        log.info(
            "cloud_warmed_up",
            service=self.service,
            status=response.status_code,
            ms=round((time.perf_counter() - started) * 1000),
        )
