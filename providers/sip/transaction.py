"""RFC 3261 §17 transactions over UDP, without I/O: messages and a clock in, events and
datagrams out. This is the layer that matches messages to transactions; the transactions are
`providers.sip.client_transaction` and `providers.sip.server_transaction`.

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

from providers.sip.client_transaction import ClientTransaction
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
from providers.sip.server_transaction import ServerTransaction
from providers.sip.transaction_base import (
    T1,
    T2,
    T4,
    Address,
    Event,
    Key,
    RequestReceived,
    ResponseReceived,
    TransactionTimedOut,
    call_id,
    header,
    top_via,
)

__all__ = [
    "T1",
    "T2",
    "T4",
    "Address",
    "ClientTransaction",
    "Event",
    "RequestReceived",
    "ResponseReceived",
    "ServerTransaction",
    "TransactionLayer",
    "TransactionTimedOut",
]

MAGIC_COOKIE = "z9hG4bK"


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

    def receive(
        self, message: Request | Response, source: Address, now: float, reliable: bool = False
    ) -> list[Event]:
        """Events for one parsed message (`reliable`: it came over TCP, and so do the answers
        of a transaction it starts); SipError if its Via or CSeq cannot be matched."""
        if isinstance(message, Response):
            tx = self._clients.get(_client_key(message))
            if tx is None:
                return [ResponseReceived(message, None)]
            event = tx.on_response(message, now)
            return [event] if event else []
        _mark_received(message, source)
        key = _server_key(message)
        server = self._servers.get(key)
        if server is not None:
            event = server.on_request(message, source, now)
            return [event] if event else []
        if message.method == "ACK":
            accepted = self.awaiting_ack.get(_ack_key(message))
            if accepted is not None:
                event = accepted.on_ack_for_2xx(message, source)
                return [event] if event else []
            return [RequestReceived(message, source, None)]
        server = ServerTransaction(self, key, message, source, reliable)
        self._servers[key] = server
        return [RequestReceived(message, source, server)]

    def send_request(
        self, request: Request, to: Address, now: float, reliable: bool = False
    ) -> ClientTransaction:
        """Start a client transaction (not for ACK: use `send`); `reliable`: over TCP."""
        if request.method == "ACK":
            raise ValueError("an ACK is sent without a transaction")
        key = _client_key(request)
        if key in self._clients:
            raise ValueError("a transaction with this branch is already live")
        tx = ClientTransaction(self, key, request, to, reliable)
        self._clients[key] = tx
        tx.start(now)
        return tx

    def respond(self, tx: ServerTransaction, response: Response, now: float) -> None:
        tx.respond(response, now)

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
            while (timer := tx.timers.due(now)) is not None:
                if (event := tx.fire(timer, now)) is not None:
                    events.append(event)
        return events

    def next_deadline(self) -> float | None:
        deadlines = [
            d
            for tx in (*self._clients.values(), *self._servers.values())
            if (d := tx.timers.next()) is not None
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


def _client_key(message: Request | Response) -> Key:
    branch = parse_via(top_via(message)).branch
    if not branch:
        raise SipError("the top Via has no branch")
    return branch, parse_cseq(header(message, "CSeq"))[1]


def _server_key(request: Request) -> Key:
    """§17.2.3: branch + sent-by + method (ACK matches its INVITE); RFC 2543 peers (no magic
    cookie) by Call-ID, From tag, CSeq number and top Via instead."""
    via = parse_via(top_via(request))
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch or ""
    if branch.startswith(MAGIC_COOKIE):
        return branch, via.host.lower(), str(via.port or 5060), method
    from_tag = parse_name_addr(header(request, "From")).tag or ""
    cseq = str(parse_cseq(header(request, "CSeq"))[0])
    return "2543", call_id(request), from_tag, cseq, str(via), method


def _ack_key(ack: Request) -> tuple[str, int]:
    return call_id(ack), parse_cseq(header(ack, "CSeq"))[0]


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
