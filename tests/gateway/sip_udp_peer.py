"""A plain UDP SIP peer on loopback for unit tests of the endpoint: sends requests built from a
few fields, receives and parses what comes back."""

from __future__ import annotations

import asyncio

from providers.sip.message import Request, Response, new_branch, parse


class UdpPeer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[Request | Response] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls, host: str = "127.0.0.1") -> UdpPeer:
        loop = asyncio.get_running_loop()
        _, peer = await loop.create_datagram_endpoint(cls, local_addr=(host, 0))
        return peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.inbox.put_nowait(parse(data))

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[:2]

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, to)

    async def receive(self, timeout: float = 2.0) -> Request | Response:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def response(self, status: int | None = None, timeout: float = 2.0) -> Response:
        """The next response (skipping provisional ones unless `status` asks for one)."""
        while True:
            message = await self.receive(timeout)
            if isinstance(message, Response) and (
                message.status == status or (status is None and message.status >= 200)
            ):
                return message

    async def nothing(self, secs: float = 0.3) -> None:
        """Assert that nothing arrives for `secs`."""
        try:
            message = await asyncio.wait_for(self.inbox.get(), secs)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected {message}")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def request_bytes(
    method: str,
    peer: tuple[str, int],
    target: tuple[str, int],
    *,
    call_id: str = "call-1@test",
    seq: int = 1,
    from_tag: str = "caller",
    to_tag: str | None = None,
    branch: str | None = None,
    to_user: str = "bot",
    body: bytes = b"",
    extra: str = "",
) -> bytes:
    host, port = peer
    to = f"<sip:{to_user}@{target[0]}:{target[1]}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} sip:{to_user}@{target[0]}:{target[1]} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};branch={branch or new_branch()};rport",
        "Max-Forwards: 70",
        f"From: <sip:alice@{host}:{port}>;tag={from_tag}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {seq} {method}",
        f"Contact: <sip:alice@{host}:{port}>",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines += [line for line in extra.split("\r\n") if line]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
