"""RFC 3261 §17 transactions over UDP, without I/O: messages and a clock in, events and
datagrams out.

The endpoint feeds every parsed message to `TransactionLayer.receive(message, source, now)`,
calls `poll(now)` when `next_deadline()` has come, and sends what `data_to_send()` hands out.
Retransmissions are absorbed here: the transaction user (TU) sees each request and response once.

Two departures from the letter of RFC 3261, both from RFC 6026: an INVITE transaction that
sends or receives a 2xx stays in an "accepted" state for 64*T1, absorbing retransmitted INVITEs
(answered again with the 2xx) and passing retransmitted 2xx responses up so that the UAC can ACK
them again. The 2xx retransmission of a UAS (§13.3.1.4, Timer G/H rules, the TU's job) is done
here as well, until the ACK for it arrives, keyed by Call-ID and CSeq number, since an ACK for a
2xx is a transaction of its own with a new branch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from providers.sip.message import (
    Headers,
    Request,
    Response,
    SipError,
    parse_cseq,
    parse_name_addr,
    parse_via,
    serialize,
)

T1 = 0.5
"""RTT estimate (s)."""
T2 = 4.0
"""Longest retransmit interval of non-INVITE requests and INVITE responses (s)."""
T4 = 5.0
"""Longest time a message stays in the network (s)."""
MAGIC_COOKIE = "z9hG4bK"

Address = tuple[str, int]
Key = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request; `transaction` is None for an ACK to a 2xx (it has none)."""

    request: Request
    source: Address
    transaction: ServerTransaction | None


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response for a client transaction (None: a stray one, e.g. a late 2xx)."""

    response: Response
    transaction: ClientTransaction | None


@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    """A client transaction got no final response (Timer B/F), or a server transaction's final
    response was never ACKed (Timer H; for a 2xx, the TU should send BYE)."""

    transaction: ClientTransaction | ServerTransaction


Event = RequestReceived | ResponseReceived | TransactionTimedOut


class _Timers:
    """Named deadlines of one transaction."""

    def __init__(self) -> None:
        self.deadlines: dict[str, float] = {}

    def set(self, name: str, at: float) -> None:
        self.deadlines[name] = at

    def cancel(self, *names: str) -> None:
        for name in names:
            self.deadlines.pop(name, None)

    def due(self, now: float) -> str | None:
        """The earliest timer due by `now` (removed), or None."""
        if not self.deadlines:
            return None
        name = min(self.deadlines, key=self.deadlines.__getitem__)
        if self.deadlines[name] > now:
            return None
        del self.deadlines[name]
        return name

    def next(self) -> float | None:
        return min(self.deadlines.values(), default=None)


class ClientTransaction:
    """One request we sent, until its final response (§17.1)."""

    def __init__(self, layer: TransactionLayer, key: Key, request: Request, to: Address) -> None:
        self.key = key
        self.request = request
        self.destination = to
        self.is_invite = request.method == "INVITE"
        self.state = "calling" if self.is_invite else "trying"
        self.final: Response | None = None
        self._layer = layer
        self._data = serialize(request)
        self._interval = layer.t1
        self._timers = _Timers()
        self._ack: bytes | None = None

    def _start(self, now: float) -> None:
        t1 = self._layer.t1
        self._layer.transmit(self._data, self.destination)
        self._timers.set("A" if self.is_invite else "E", now + t1)
        self._timers.set("B" if self.is_invite else "F", now + 64 * t1)

    def _on_response(self, response: Response, now: float) -> Event | None:
        status, layer = response.status, self._layer
        if self.state in ("completed", "terminated"):
            if self._ack is not None:  # a retransmitted final: ACK again (§17.1.1.2)
                layer.transmit(self._ack, self.destination)
            return None
        if self.state == "accepted":  # RFC 6026: 2xx retransmissions go to the TU (re-ACK)
            return ResponseReceived(response, self) if 200 <= status < 300 else None
        if status < 200:
            if self.state in ("calling", "trying"):
                self.state = "proceeding"
                if self.is_invite:
                    self._timers.cancel("A", "B")
            return ResponseReceived(response, self)
        self.final = response
        self._timers.cancel("A", "B", "E", "F")
        if self.is_invite and status < 300:
            self.state = "accepted"
            self._timers.set("M", now + 64 * layer.t1)
        elif self.is_invite:
            self.state = "completed"
            self._ack = serialize(_ack_for(self.request, response))
            layer.transmit(self._ack, self.destination)
            self._timers.set("D", now + 32.0)
        else:
            self.state = "completed"
            self._timers.set("K", now + layer.t4)
        return ResponseReceived(response, self)

    def _fire(self, timer: str, now: float) -> Event | None:
        layer = self._layer
        if timer == "A":
            self._interval *= 2
            layer.transmit(self._data, self.destination)
            self._timers.set("A", now + self._interval)
        elif timer == "E":
            self._interval = layer.t2 if self.state == "proceeding" else min(
                self._interval * 2, layer.t2
            )
            layer.transmit(self._data, self.destination)
            self._timers.set("E", now + self._interval)
        elif timer in ("B", "F"):
            self._terminate()
            return TransactionTimedOut(self)
        else:  # D, K, M: the transaction's work is done
            self._terminate()
        return None

    def _terminate(self) -> None:
        self.state = "terminated"
        self._timers.deadlines.clear()
        self._layer.forget(self)


class ServerTransaction:
    """One request we received, until our final response is safely delivered (§17.2)."""

    def __init__(self, layer: TransactionLayer, key: Key, request: Request, source: Address):
        self.key = key
        self.request = request
        self.source = source
        self.is_invite = request.method == "INVITE"
        self.state = "proceeding" if self.is_invite else "trying"
        self.response: Response | None = None
        """The last response sent."""
        self.acked = False
        self._layer = layer
        self._data: bytes | None = None
        self._interval = layer.t1
        self._timers = _Timers()
        self._answered_at = 0.0

    @property
    def dialog_key(self) -> tuple[str, int]:
        """(Call-ID, CSeq number): what an ACK for our 2xx is matched by."""
        return _call_id(self.request), parse_cseq(_header(self.request, "CSeq"))[0]

    def _respond(self, response: Response, now: float) -> None:
        if self.state not in ("trying", "proceeding"):
            raise ValueError(f"a final response was already sent ({self.state})")
        layer, status = self._layer, response.status
        self.response = response
        self._data = serialize(response)
        layer.transmit(self._data, self.source)
        if status < 200:
            self.state = "proceeding"
            return
        if not self.is_invite:
            self.state = "completed"
            self._timers.set("J", now + 64 * layer.t1)
            return
        self.state = "accepted" if status < 300 else "completed"
        self._timers.set("G", now + layer.t1)  # for a 2xx: §13.3.1.4, same schedule
        self._timers.set("H", now + 64 * layer.t1)
        if status < 300:
            self._answered_at = now
            layer.awaiting_ack[self.dialog_key] = self

    def _on_request(self, request: Request, source: Address, now: float) -> Event | None:
        """A retransmission, or the ACK for our final response."""
        if request.method == "ACK":
            if self.state == "accepted":  # a UA that reuses the INVITE's branch for it
                return self._on_ack_for_2xx(request, source)
            if self.state == "completed":
                self.state = "confirmed"
                self.acked = True
                self._timers.cancel("G", "H")
                self._timers.set("I", now + self._layer.t4)
            return None
        if self._data is not None and self.state != "confirmed":
            self._layer.transmit(self._data, self.source)
        return None

    def _on_ack_for_2xx(self, request: Request, source: Address) -> Event | None:
        if self.acked:
            return None  # a retransmitted ACK
        self.acked = True
        self._timers.cancel("G", "H")
        self._timers.set("L", self._answered_at + 64 * self._layer.t1)
        return RequestReceived(request, source, None)

    def _fire(self, timer: str, now: float) -> Event | None:
        layer = self._layer
        if timer == "G":
            self._interval = min(self._interval * 2, layer.t2)
            assert self._data is not None
            layer.transmit(self._data, self.source)
            self._timers.set("G", now + self._interval)
            return None
        if timer == "H":
            self._terminate()
            return TransactionTimedOut(self)
        self._terminate()  # I, J, L
        return None

    def _terminate(self) -> None:
        self.state = "terminated"
        self._timers.deadlines.clear()
        self._layer.awaiting_ack.pop(self.dialog_key, None)
        self._layer.forget(self)


class TransactionLayer:
    """Every live transaction of one endpoint, and the datagrams they want sent."""

    def __init__(self, t1: float = T1, t2: float = T2, t4: float = T4) -> None:
        self.t1, self.t2, self.t4 = t1, t2, t4
        self._clients: dict[Key, ClientTransaction] = {}
        self._servers: dict[Key, ServerTransaction] = {}
        self.awaiting_ack: dict[tuple[str, int], ServerTransaction] = {}
        self._outgoing: list[tuple[bytes, Address]] = []

    def __len__(self) -> int:
        return len(self._clients) + len(self._servers)

    def receive(self, message: Request | Response, source: Address, now: float) -> list[Event]:
        """Events for one parsed message; SipError if its Via or CSeq cannot be matched."""
        if isinstance(message, Response):
            tx = self._clients.get(_client_key(message))
            if tx is None:
                return [ResponseReceived(message, None)]
            event = tx._on_response(message, now)
            return [event] if event else []
        _mark_received(message, source)
        key = _server_key(message)
        server = self._servers.get(key)
        if server is not None:
            event = server._on_request(message, source, now)
            return [event] if event else []
        if message.method == "ACK":
            accepted = self.awaiting_ack.get(_ack_key(message))
            if accepted is not None:
                event = accepted._on_ack_for_2xx(message, source)
                return [event] if event else []
            return [RequestReceived(message, source, None)]
        server = ServerTransaction(self, key, message, source)
        self._servers[key] = server
        return [RequestReceived(message, source, server)]

    def send_request(self, request: Request, to: Address, now: float) -> ClientTransaction:
        """Start a client transaction (not for ACK: use `send`)."""
        if request.method == "ACK":
            raise ValueError("an ACK is sent without a transaction")
        key = _client_key(request)
        if key in self._clients:
            raise ValueError("a transaction with this branch is already live")
        tx = ClientTransaction(self, key, request, to)
        self._clients[key] = tx
        tx._start(now)
        return tx

    def respond(self, tx: ServerTransaction, response: Response, now: float) -> None:
        tx._respond(response, now)

    def send(self, message: Request | Response, to: Address) -> None:
        """Outside any transaction: the ACK for a 2xx, or a stateless response."""
        self.transmit(serialize(message), to)

    def invite_for(self, cancel: Request) -> ServerTransaction | None:
        """The INVITE server transaction a CANCEL names (same branch and sent-by, §9.2)."""
        return self._servers.get((*_server_key(cancel)[:-1], "INVITE"))

    def poll(self, now: float) -> list[Event]:
        """Fire every timer due by `now`."""
        events: list[Event] = []
        for tx in [*self._clients.values(), *self._servers.values()]:
            while (timer := tx._timers.due(now)) is not None:
                if (event := tx._fire(timer, now)) is not None:
                    events.append(event)
        return events

    def next_deadline(self) -> float | None:
        deadlines = [
            d
            for tx in (*self._clients.values(), *self._servers.values())
            if (d := tx._timers.next()) is not None
        ]
        return min(deadlines, default=None)

    def data_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._outgoing = self._outgoing, []
        return out

    # for the transactions

    def transmit(self, data: bytes, to: Address) -> None:
        self._outgoing.append((data, to))

    def forget(self, tx: ClientTransaction | ServerTransaction) -> None:
        table: dict = self._clients if isinstance(tx, ClientTransaction) else self._servers
        if table.get(tx.key) is tx:
            del table[tx.key]


def _header(message: Request | Response, name: str) -> str:
    value = message.headers.get(name)
    if value is None:
        raise SipError(f"no {name} header")
    return value


def _call_id(message: Request | Response) -> str:
    return _header(message, "Call-ID").strip()


def _top_via(message: Request | Response) -> str:
    vias = message.headers.get_all("Via")
    if not vias:
        raise SipError("no Via header")
    return vias[0]


def _client_key(message: Request | Response) -> Key:
    branch = parse_via(_top_via(message)).branch
    if not branch:
        raise SipError("the top Via has no branch")
    return branch, parse_cseq(_header(message, "CSeq"))[1]


def _server_key(request: Request) -> Key:
    """§17.2.3: branch + sent-by + method (ACK matches its INVITE); RFC 2543 peers (no magic
    cookie) by Call-ID, From tag, CSeq number and top Via instead."""
    via = parse_via(_top_via(request))
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch or ""
    if branch.startswith(MAGIC_COOKIE):
        return branch, via.host.lower(), str(via.port or 5060), method
    from_tag = parse_name_addr(_header(request, "From")).tag or ""
    cseq = str(parse_cseq(_header(request, "CSeq"))[0])
    return "2543", _call_id(request), from_tag, cseq, str(via), method


def _ack_key(ack: Request) -> tuple[str, int]:
    return _call_id(ack), parse_cseq(_header(ack, "CSeq"))[0]


def _mark_received(request: Request, source: Address) -> None:
    """§18.2.1 and RFC 3581: note where the request really came from in its top Via, so that
    responses (which copy the Via) record it; we always answer to the source address."""
    vias = request.headers.get_all("Via")
    via = parse_via(vias[0]) if vias else None
    if via is None:
        raise SipError("no Via header")
    changed = False
    if via.host != source[0]:
        via.params["received"] = source[0]
        changed = True
    if "rport" in via.params:
        via.params["rport"] = str(source[1])
        changed = True
    if changed:
        _replace_vias(request.headers, [str(via), *vias[1:]])


def _replace_vias(headers: Headers, vias: Iterable[str]) -> None:
    headers.remove("Via")
    for via in vias:
        headers.add("Via", via)


def _ack_for(request: Request, response: Response) -> Request:
    """The ACK a client INVITE transaction sends for a non-2xx final response (§17.1.1.3)."""
    headers = Headers()
    headers.add("Via", _top_via(request))
    for route in request.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    headers.add("From", _header(request, "From"))
    headers.add("To", _header(response, "To"))
    headers.add("Call-ID", _call_id(request))
    headers.add("CSeq", f"{parse_cseq(_header(request, 'CSeq'))[0]} ACK")
    return Request("ACK", request.uri, headers)
