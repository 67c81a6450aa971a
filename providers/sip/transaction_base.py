"""What client and server transactions share: RFC 3261 timer values, the named deadlines each
transaction keeps, the events they hand the transaction user (TU), and what they need of the
layer that holds them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from providers.sip.message import Request, Response, SipError

if TYPE_CHECKING:
    from providers.sip.client_transaction import ClientTransaction
    from providers.sip.server_transaction import ServerTransaction

T1 = 0.5
"""RTT estimate (s)."""
T2 = 4.0
"""Longest retransmit interval of non-INVITE requests and INVITE responses (s)."""
T4 = 5.0
"""Longest time a message stays in the network (s)."""

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


class Layer(Protocol):
    """The transaction layer as its transactions see it."""

    t1: float
    t2: float
    t4: float
    awaiting_ack: dict[tuple[str, int], ServerTransaction]

    def transmit(self, data: bytes, to: Address) -> None: ...
    def forget(self, tx: ClientTransaction | ServerTransaction) -> None: ...


class Timers:
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


def header(message: Request | Response, name: str) -> str:
    value = message.headers.get(name)
    if value is None:
        raise SipError(f"no {name} header")
    return value


def call_id(message: Request | Response) -> str:
    return header(message, "Call-ID").strip()


def top_via(message: Request | Response) -> str:
    vias = message.headers.get_all("Via")
    if not vias:
        raise SipError("no Via header")
    return vias[0]
