"""RFC 3261 §17.2 server transactions, without I/O: one request we received, its
retransmissions absorbed (answered again with our last response), our final response to an
INVITE retransmitted on Timer G until ACKed (the 2xx too, §13.3.1.4, RFC 6026 "accepted"; on
a reliable transport, TCP, only the 2xx), given up on Timer H."""

from __future__ import annotations

from providers.sip.message import Request, Response, parse_cseq, serialize
from providers.sip.transaction_base import (
    Address,
    Event,
    Key,
    Layer,
    RequestReceived,
    Timers,
    TransactionTimedOut,
    call_id,
    header,
)


class ServerTransaction:
    """One request we received, until our final response is safely delivered (§17.2)."""

    def __init__(
        self, layer: Layer, key: Key, request: Request, source: Address, reliable: bool = False
    ):
        self.key = key
        self.request = request
        self.source = source
        self.reliable = reliable
        self.is_invite = request.method == "INVITE"
        self.state = "proceeding" if self.is_invite else "trying"
        self.response: Response | None = None
        """The last response sent."""
        self.acked = False
        self._layer = layer
        self._data: bytes | None = None
        self._interval = layer.t1
        self.timers = Timers()
        self._answered_at = 0.0

    @property
    def dialog_key(self) -> tuple[str, int]:
        """(Call-ID, CSeq number): what an ACK for our 2xx is matched by."""
        return call_id(self.request), parse_cseq(header(self.request, "CSeq"))[0]

    def respond(self, response: Response, now: float) -> None:
        """Sends our response; ValueError if a final one was already sent."""
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
            self.timers.set("J", now + (0.0 if self.reliable else 64 * layer.t1))
            return
        self.state = "accepted" if status < 300 else "completed"
        if status < 300 or not self.reliable:
            self.timers.set("G", now + layer.t1)  # for a 2xx: §13.3.1.4, same schedule
        self.timers.set("H", now + 64 * layer.t1)
        if status < 300:
            self._answered_at = now
            layer.awaiting_ack[self.dialog_key] = self

    def on_request(self, request: Request, source: Address, now: float) -> Event | None:
        """A retransmission, or the ACK for our final response."""
        if request.method == "ACK":
            if self.state == "accepted":  # a UA that reuses the INVITE's branch for it
                return self.on_ack_for_2xx(request, source)
            if self.state == "completed":
                self.state = "confirmed"
                self.acked = True
                self.timers.cancel("G", "H")
                self.timers.set("I", now + (0.0 if self.reliable else self._layer.t4))
            return None
        if self._data is not None and self.state != "confirmed":
            self._layer.transmit(self._data, self.source)
        return None

    def on_ack_for_2xx(self, request: Request, source: Address) -> Event | None:
        """The ACK for our 2xx (its own transaction): passed up once, stops Timer G/H."""
        if self.acked:
            return None  # a retransmitted ACK
        self.acked = True
        self.timers.cancel("G", "H")
        self.timers.set("L", self._answered_at + 64 * self._layer.t1)
        return RequestReceived(request, source, None)

    def fire(self, timer: str, now: float) -> Event | None:
        """Timer `timer` is due: retransmit, time out or terminate."""
        layer = self._layer
        if timer == "G":
            self._interval = min(self._interval * 2, layer.t2)
            assert self._data is not None
            layer.transmit(self._data, self.source)
            self.timers.set("G", now + self._interval)
            return None
        if timer == "H":
            self._terminate()
            return TransactionTimedOut(self)
        self._terminate()  # I, J, L
        return None

    def _terminate(self) -> None:
        self.state = "terminated"
        self.timers.deadlines.clear()
        self._layer.awaiting_ack.pop(self.dialog_key, None)
        self._layer.forget(self)
