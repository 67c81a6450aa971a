"""A loopback HTTP proxy that records where clients want to go and takes them nowhere.

An HTTPS client behind a proxy opens its tunnel with `CONNECT host:port`, naming the host it
chose. The proxy records that target and refuses the tunnel (403), so a test learns which host
a client would reach (a regional API host, say) without any traffic leaving the machine.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class RecordingProxy:
    """`with RecordingProxy() as proxy:` listens at `proxy.url`; `proxy.targets` is every
    CONNECT target (or absolute URL of a plain-HTTP request) in order."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

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
