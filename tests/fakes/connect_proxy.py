"""A loopback HTTP proxy that records where clients want to go and takes them nowhere.

An HTTPS client behind a proxy opens its tunnel with `CONNECT host:port`, naming the host it
chose. The proxy records that target and refuses the tunnel (403), so a test learns which host
a client would reach (a regional API host, say) without any traffic leaving the machine.
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.http_server import LoopbackHttpServer


class RecordingProxy(LoopbackHttpServer):
    """`with RecordingProxy() as proxy:` listens at `proxy.url`; `proxy.targets` is every
    CONNECT target (or absolute URL of a plain-HTTP request) in order."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        super().__init__()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _refuse(self) -> None:
                with proxy._lock:
                    proxy.targets.append(self.path)
                self.send_error(403, "recording proxy: no tunnels")

            do_CONNECT = do_GET = do_POST = do_DELETE = _refuse

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
