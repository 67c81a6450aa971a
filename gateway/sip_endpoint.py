"""The SIP endpoint's edge: UDP datagrams, and TCP messages on the same port
(`gateway.sip_tcp`), in and out of the sans-I/O transaction layer, one timer task for its
retransmissions and timeouts, and routing of what arrives. What goes to an address that has a
TCP connection to us goes over it (responses and in-dialog requests); everything else is UDP.

Out-of-dialog requests pass the guard first (`gateway.sip_guard`); OPTIONS is answered here;
an INVITE goes to the `InviteHandler` (gateway.sip_calls); requests inside a dialog go to the
`DialogUser` registered for it. Malformed datagrams are counted and ignored (logged once per
source). Requests we send are awaited with `request()`, which returns the final response.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from contextlib import suppress
from typing import Protocol

import structlog

from gateway.sip_guard import SipGuard, Verdict
from gateway.sip_tcp import SipTcp
from providers.sip.message import (
    Request,
    Response,
    SipError,
    SipUri,
    parse,
    parse_name_addr,
    response_to,
)
from providers.sip.transaction import (
    Address,
    ClientTransaction,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    TransactionLayer,
    TransactionTimedOut,
)

log = structlog.get_logger()

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, REFER, NOTIFY"
MAX_LOGGED_SOURCES = 1024
BIND_ATTEMPTS = 5
"""For port 0: the UDP port the kernel picks may be taken for TCP; try another."""


class SipTimeout(Exception):
    """A request we sent got no final response (Timer B/F)."""


class DialError(Exception):
    """An outbound call could not be placed at all (no RTP port, trunk unresolvable)."""


class DialogUser(Protocol):
    """A call's side of its dialog: requests inside it, and its 2xx never ACKed."""

    def on_request(self, request: Request, tx: ServerTransaction | None) -> None: ...
    def on_timeout(self, tx: ServerTransaction) -> None: ...


class InviteHandler(Protocol):
    def on_invite(self, request: Request, tx: ServerTransaction) -> None: ...
    def on_cancel(self, invite: ServerTransaction) -> None: ...


def parse_hostport(text: str) -> tuple[str, int]:
    """`sip.listen`: "HOST:PORT" ("[::1]:5060" for IPv6); ValueError if bad."""
    host, colon, port = text.strip().rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


class SipEndpoint(asyncio.DatagramProtocol):
    def __init__(self, listen: str, guard: SipGuard, public_host: str | None = None) -> None:
        self._bind = parse_hostport(listen)
        self.guard = guard
        self.public_host = public_host
        self.layer = TransactionLayer()
        self.invites: InviteHandler | None = None
        self.dialogs: dict[tuple[str, str], DialogUser] = {}
        """(Call-ID, our tag) -> the call in that dialog."""
        self.malformed = 0
        self._logged_malformed: set[str] = set()
        self._transport: asyncio.DatagramTransport | None = None
        self.tcp = SipTcp(self._stream_received, self._malformed)
        self._pending: dict[ClientTransaction, asyncio.Queue[Response | None]] = {}
        self._acks: dict[ClientTransaction, tuple[Request, Address]] = {}
        self._wake = asyncio.Event()
        self._timer_task: asyncio.Task[None] | None = None

    # lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self._bind[0] else socket.AF_INET
        host, port = self._bind
        for attempt in range(BIND_ATTEMPTS):
            await loop.create_datagram_endpoint(
                lambda: self, local_addr=(host, port), family=family
            )
            try:
                await self.tcp.start(host, self.address[1])
                break
            except OSError:
                assert self._transport is not None
                self._transport.close()
                if port or attempt == BIND_ATTEMPTS - 1:
                    raise
        self._timer_task = asyncio.create_task(self._timers(), name="sip_timers")
        log.info("sip_listening", address=f"{self.address[0]}:{self.address[1]}")

    async def close(self) -> None:
        if self._timer_task is not None:
            self._timer_task.cancel()
            with suppress(asyncio.CancelledError):
                await self._timer_task
        if self._transport is not None:
            self._transport.close()
        await self.tcp.close()
        for queue in self._pending.values():
            queue.put_nowait(None)

    @property
    def bind_host(self) -> str:
        return self._bind[0]

    @property
    def address(self) -> Address:
        assert self._transport is not None, "start() first"
        host, port = self._transport.get_extra_info("sockname")[:2]
        return host, port

    def host_for(self, peer_host: str) -> str:
        """Our address as `peer_host` should see it: `sip.public_host`, else the bound address,
        else (bound to any) the local address the kernel routes to the peer from."""
        if self.public_host:
            return self.public_host
        host = self.address[0]
        if not ipaddress.ip_address(host).is_unspecified:
            return host
        return _route_source(peer_host)

    def sent_by(self, peer_host: str) -> str:
        return _hostport(self.host_for(peer_host), self.address[1])

    def contact(self, peer_host: str, user: str = "callgate") -> str:
        return f"sip:{user}@{self.sent_by(peer_host)}"

    # asyncio.DatagramProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if data.strip(b"\r\n"):  # else a keep-alive
            self._receive(data, (addr[0], addr[1]), reliable=False)

    def _stream_received(self, data: bytes, source: Address) -> None:
        self._receive(data, source, reliable=True)

    def _receive(self, data: bytes, source: Address, reliable: bool) -> None:
        try:
            message = parse(data)
            events = self.layer.receive(message, source, self._now(), reliable)
        except SipError as exc:
            self._malformed(source, str(exc))
            return
        for event in events:
            try:
                self._dispatch(event)
            except SipError as exc:
                self._malformed(source, str(exc))
        self._flush()

    def error_received(self, exc: Exception) -> None:
        log.debug("sip_socket_error", error=str(exc))  # e.g. ICMP port unreachable

    # sending

    def respond(self, tx: ServerTransaction, response: Response) -> None:
        self.layer.respond(tx, response, self._now())
        self._flush()

    def send(self, message: Request | Response, to: Address) -> None:
        self.layer.send(message, to)
        self._flush()

    def send_request(self, request: Request, to: Address) -> None:
        """A request whose answer nobody waits for (a BYE): the layer still retransmits it."""
        self.layer.send_request(request, to, self._now(), to in self.tcp)
        self._flush()

    async def request(
        self,
        request: Request,
        to: Address,
        on_provisional: Callable[[Response], None] | None = None,
    ) -> tuple[ClientTransaction, Response]:
        """Send `request` in a client transaction; its final response (SipTimeout if none)."""
        tx = self.layer.send_request(request, to, self._now(), to in self.tcp)
        queue: asyncio.Queue[Response | None] = asyncio.Queue()
        self._pending[tx] = queue
        self._flush()
        try:
            while True:
                response = await queue.get()
                if response is None:
                    raise SipTimeout(f"no answer to {request.method} from {to[0]}:{to[1]}")
                if response.status >= 200:
                    return tx, response
                if on_provisional is not None:
                    on_provisional(response)
        finally:
            self._pending.pop(tx, None)

    def send_ack(self, tx: ClientTransaction, ack: Request, to: Address) -> None:
        """ACK a 2xx; retransmissions of that 2xx are ACKed again while the transaction lives."""
        self._acks = {t: a for t, a in self._acks.items() if t.state != "terminated"}
        self._acks[tx] = (ack, to)
        self.send(ack, to)

    # routing

    def _dispatch(self, event: object) -> None:
        if isinstance(event, RequestReceived):
            self._on_request(event)
        elif isinstance(event, ResponseReceived):
            tx = event.transaction
            if tx is None:
                return  # stray (e.g. a 2xx after its transaction ended)
            if tx in self._acks and 200 <= event.response.status < 300:
                self.send(*self._acks[tx])
            elif (queue := self._pending.get(tx)) is not None:
                queue.put_nowait(event.response)
        elif isinstance(event, TransactionTimedOut):
            self._on_timeout(event.transaction)

    def _on_timeout(self, tx: ClientTransaction | ServerTransaction) -> None:
        if isinstance(tx, ClientTransaction):
            self._acks.pop(tx, None)
            if (queue := self._pending.get(tx)) is not None:
                queue.put_nowait(None)
            return
        user = self._dialog_of(tx.request, tx.response)
        if user is not None:
            user.on_timeout(tx)

    def _on_request(self, event: RequestReceived) -> None:
        request, tx = event.request, event.transaction
        user = self._dialog_of(request)
        if user is not None:
            user.on_request(request, tx)
            return
        if request.method == "CANCEL" and tx is not None:
            self._on_cancel(request, tx)
            return
        verdict = self.guard.check(request, event.source)
        if verdict is not Verdict.ALLOW:
            self._refuse(request, event.source, tx, verdict)
        elif tx is None:
            return  # an ACK outside any dialog we know: nothing to do
        elif _to_tag(request):
            self.respond(tx, response_to(request, 481))
        elif request.method == "OPTIONS":
            response = response_to(request, 200)
            response.headers.add("Allow", ALLOW)
            response.headers.add("Accept", "application/sdp")
            self.respond(tx, response)
        elif request.method == "INVITE" and self.invites is not None:
            self.invites.on_invite(request, tx)
        else:
            self.respond(tx, response_to(request, 405 if request.method != "BYE" else 481))

    def _on_cancel(self, cancel: Request, tx: ServerTransaction) -> None:
        invite = self.layer.invite_for(cancel)
        if invite is None:
            self.respond(tx, response_to(cancel, 481))
            return
        self.respond(tx, response_to(cancel, 200))
        if invite.state == "proceeding" and self.invites is not None:
            self.invites.on_cancel(invite)

    def _refuse(
        self, request: Request, source: Address, tx: ServerTransaction | None, verdict: Verdict
    ) -> None:
        if verdict is Verdict.DROP or tx is None:
            return
        if verdict is Verdict.CHALLENGE:
            response = response_to(request, 401)
            response.headers.add("WWW-Authenticate", self.guard.challenge())
        else:
            response = response_to(request, 403)
        self.respond(tx, response)

    def _dialog_of(self, request: Request, response: Response | None = None) -> DialogUser | None:
        tag = _to_tag(response or request)
        if not tag:
            return None
        return self.dialogs.get((request.headers.get("Call-ID") or "", tag))

    def _malformed(self, source: Address, error: str) -> None:
        self.malformed += 1
        if source[0] not in self._logged_malformed and len(self._logged_malformed) < (
            MAX_LOGGED_SOURCES
        ):
            self._logged_malformed.add(source[0])
            log.warning("sip_malformed", source=source[0][:64], error=error[:120])

    # timers

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _flush(self) -> None:
        transport = self._transport
        for data, to in self.layer.data_to_send():
            if self.tcp.send(data, to):
                continue
            if transport is not None and not transport.is_closing():
                transport.sendto(data, to)
        self._wake.set()

    async def _timers(self) -> None:
        while True:
            self._wake.clear()
            deadline = self.layer.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self._now())
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            for event in self.layer.poll(self._now()):
                try:
                    self._dispatch(event)
                except Exception:  # one call's bug must not stop every retransmission
                    log.exception("sip_timer_event_failed")
            self._flush()


def _to_tag(message: Request | Response) -> str | None:
    return parse_name_addr(message.headers.get("To") or "").tag


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _route_source(peer_host: str) -> str:
    """The local address used to reach `peer_host` (a UDP connect sends nothing)."""
    try:
        family = socket.AF_INET6 if ":" in peer_host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((peer_host, 9))
            return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"


async def resolve(uri: SipUri) -> Address:
    """Where to send a request for `uri` (UDP; no NAPTR/SRV, an A/AAAA lookup at most)."""
    port = uri.port or 5060
    try:
        ipaddress.ip_address(uri.host)
        return uri.host, port
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(uri.host, port, type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"cannot resolve {uri.host}")
    host, resolved_port = infos[0][4][:2]
    return host, resolved_port
