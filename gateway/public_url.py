"""The URLs providers use to reach this process, as they see them."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from gateway.state import Gateway


def _base(gateway: Gateway, connection: HTTPConnection) -> str:
    """CALLGATE_PUBLIC_URL, else what the request itself was addressed to."""
    configured = gateway.config.settings.public_url
    if configured:
        return configured
    scheme = {"ws": "http", "wss": "https"}.get(connection.url.scheme, connection.url.scheme)
    return f"{scheme}://{connection.url.netloc}"


def public_http_url(gateway: Gateway, connection: HTTPConnection) -> str:
    """The full URL a provider requested (path and query string included): what it signed."""
    query = connection.url.query
    return _base(gateway, connection) + connection.url.path + (f"?{query}" if query else "")


def stream_url(gateway: Gateway, connection: HTTPConnection, path: str) -> str:
    """The wss:// (or ws:// for a plain-http base) URL of a media path."""
    base = _base(gateway, connection)
    return "ws" + base.removeprefix("http") + path


def public_url_of(gateway: Gateway, connection: HTTPConnection, path: str) -> str:
    """The public http(s) URL of one of our paths (e.g. a callback URL for an answer document)."""
    return _base(gateway, connection) + path
