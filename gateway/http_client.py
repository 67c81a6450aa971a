"""One pooled HTTP client per event loop, for the calls' outbound requests (HTTP tools)."""

from __future__ import annotations

import asyncio
import weakref

import httpx

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def http_client() -> httpx.AsyncClient:
    """Connections are reused across calls: a new TLS handshake per tool call costs ~100 ms."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = httpx.AsyncClient(follow_redirects=False)
    return client
