"""A loopback load balancer that routes each TCP connection by the path of its first request:
the way an L7 balancer may send a call's webhook to one instance and its media to another."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

from tests.gateway.server import free_port

Backend = Callable[[str], str]
"""Request path -> backend base URL (http://127.0.0.1:PORT)."""


class PathRouter:
    def __init__(self, choose: Backend):
        self._choose = choose
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.routed: list[tuple[str, str]] = []
        """(path, backend) of every connection, in order."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> PathRouter:
        self._thread.start()
        start = asyncio.start_server(self._connection, "127.0.0.1", self.port)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            request_line = await reader.readline()
            path = request_line.split(b" ")[1].decode() if request_line.count(b" ") >= 2 else "/"
            backend = self._choose(path)
            self.routed.append((path, backend))
            target = urlsplit(backend)
            up_reader, up_writer = await asyncio.open_connection(target.hostname, target.port)
        except (OSError, IndexError, UnicodeDecodeError):
            writer.close()
            return
        up_writer.write(request_line)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()
