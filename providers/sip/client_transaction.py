"""RFC 3261 §17.1 client transactions, without I/O: one request we sent, retransmitted on
Timer A/E until a response comes (not on a reliable transport: TCP), given up on Timer B/F; a
non-2xx final response to an INVITE is ACKed here (§17.1.1.3), a 2xx is passed up for the TU
to ACK (RFC 6026 "accepted")."""

from __future__ import annotations

from providers.sip.message import Headers, Request, Response, parse_cseq, serialize
from providers.sip.transaction_base import (
    Address,
    Event,
    Key,
    Layer,
    ResponseReceived,
    Timers,
    TransactionTimedOut,
    call_id,
    header,
    top_via,
)


class ClientTransaction:
    """One request we sent, until its final response (§17.1)."""

    def __init__(
        self, layer: Layer, key: Key, request: Request, to: Address, reliable: bool = False
    ) -> None:
        self.key = key
        self.request = request
        self.destination = to
        self.reliable = reliable
        self.is_invite = request.method == "INVITE"
        self.state = "calling" if self.is_invite else "trying"
        self.final: Response | None = None
        self._layer = layer
        self._data = serialize(request)
        self._interval = layer.t1
        self.timers = Timers()
        self._ack: bytes | None = None

    def start(self, now: float) -> None:
        """Sends the request and sets its retransmission and timeout timers."""
        t1 = self._layer.t1
        self._layer.transmit(self._data, self.destination)
        if not self.reliable:
            self.timers.set("A" if self.is_invite else "E", now + t1)
        self.timers.set("B" if self.is_invite else "F", now + 64 * t1)

    def on_response(self, response: Response, now: float) -> Event | None:
        """A response with our branch: an event for the TU, or None if absorbed."""
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
                    self.timers.cancel("A", "B")
            return ResponseReceived(response, self)
        self.final = response
        self.timers.cancel("A", "B", "E", "F")
        if self.is_invite and status < 300:
            self.state = "accepted"
            self.timers.set("M", now + 64 * layer.t1)
        elif self.is_invite:
            self.state = "completed"
            self._ack = serialize(ack_for(self.request, response))
            layer.transmit(self._ack, self.destination)
            self.timers.set("D", now + (0.0 if self.reliable else 32.0))
        else:
            self.state = "completed"
            self.timers.set("K", now + (0.0 if self.reliable else layer.t4))
        return ResponseReceived(response, self)

    def fire(self, timer: str, now: float) -> Event | None:
        """Timer `timer` is due: retransmit, time out or terminate."""
        layer = self._layer
        if timer == "A":
            self._interval *= 2
            layer.transmit(self._data, self.destination)
            self.timers.set("A", now + self._interval)
        elif timer == "E":
            self._interval = (
                layer.t2 if self.state == "proceeding" else min(self._interval * 2, layer.t2)
            )
            layer.transmit(self._data, self.destination)
            self.timers.set("E", now + self._interval)
        elif timer in ("B", "F"):
            self._terminate()
            return TransactionTimedOut(self)
        else:  # D, K, M: the transaction's work is done
            self._terminate()
        return None

    def _terminate(self) -> None:
        self.state = "terminated"
        self.timers.deadlines.clear()
        self._layer.forget(self)


def ack_for(request: Request, response: Response) -> Request:
    """The ACK a client INVITE transaction sends for a non-2xx final response (§17.1.1.3)."""
    headers = Headers()
    headers.add("Via", top_via(request))
    for route in request.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    headers.add("From", header(request, "From"))
    headers.add("To", header(response, "To"))
    headers.add("Call-ID", call_id(request))
    headers.add("CSeq", f"{parse_cseq(header(request, 'CSeq'))[0]} ACK")
    return Request("ACK", request.uri, headers)
