"""SIP over TCP on the endpoint's port (RFC 3261 §18): a listener whose connections are framed
by Content-Length (`providers.sip.stream`), each keyed by the peer's address, so that responses
and in-dialog requests to that address go back over the connection the peer opened.

A connection that cannot be framed is closed; connections beyond `MAX_CONNECTIONS` are refused
at once, and one idle for `IDLE_SECS` is closed, so open sockets cost a stranger more than us.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import structlog

from providers.sip.message import SipError
from providers.sip.stream import StreamFramer

log = structlog.get_logger()

MAX_CONNECTIONS = 512
IDLE_SECS = 300.0
"""RFC 5626 keep-alives every ~2 minutes keep a registered phone's connection open."""

Address = tuple[str, int]
Received = Callable[[bytes, Address], None]


class _Connection(asyncio.Protocol):
    def __init__(self, streams: SipTcp) -> None:
        self._streams = streams
        self._framer = StreamFramer()
        self._transport: asyncio.Transport | None = None
        self._peer: Address = ("", 0)
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        host, port = transport.get_extra_info("peername")[:2]
        self._peer = (host, port)
        if not self._streams.opened(self._peer, self._transport):  # type: ignore[arg-type]
            transport.close()
            return
        self._touch()

    def data_received(self, data: bytes) -> None:
        self._touch()
        try:
            messages = self._framer.feed(data)
        except SipError as exc:
            self._streams.malformed(self._peer, str(exc))
            assert self._transport is not None
            self._transport.close()
            return
        for message in messages:
            self._streams.received(message, self._peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._streams.closed(self._peer, self._transport)  # type: ignore[arg-type]

    def _touch(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        assert self._transport is not None
        self._idle = asyncio.get_running_loop().call_later(IDLE_SECS, self._transport.close)


class SipTcp:
    """The TCP side of one endpoint: `received(message, peer)` for each whole message."""

    def __init__(self, received: Received, malformed: Callable[[Address, str], None]) -> None:
        self.received = received
        self.malformed = malformed
        self._connections: dict[Address, asyncio.Transport] = {}
        self._server: asyncio.Server | None = None
        self._full = False  # at MAX_CONNECTIONS (logged once until there is room again)

    async def start(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Connection(self), host, port, family=family, reuse_address=True
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for transport in list(self._connections.values()):
            transport.close()
        if self._server is not None:
            await self._server.wait_closed()

    def __contains__(self, peer: object) -> bool:
        return peer in self._connections

    def send(self, data: bytes, to: Address) -> bool:
        """Writes to the connection `to` opened; False if there is none."""
        transport = self._connections.get(to)
        if transport is None or transport.is_closing():
            return False
        transport.write(data)
        return True

    # for the connections

    def opened(self, peer: Address, transport: asyncio.Transport) -> bool:
        if len(self._connections) >= MAX_CONNECTIONS:
            if not self._full:
                self._full = True
                log.warning("sip_tcp_full", connections=len(self._connections))
            return False
        self._connections[peer] = transport
        return True

    def closed(self, peer: Address, transport: asyncio.Transport) -> None:
        if self._connections.get(peer) is transport:
            del self._connections[peer]
            self._full = False
