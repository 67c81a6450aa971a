"""RFC 3261 §12 dialogs, without I/O: the state both ends of a call share, and the requests
built from it (BYE, re-INVITE, REFER, the ACK for a 2xx), plus the few requests sent outside a
dialog (the initial INVITE, its CANCEL, REGISTER and their digest-auth retries).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from providers.sip.message import (
    Headers,
    Request,
    Response,
    SipError,
    SipUri,
    new_branch,
    new_call_id,
    new_tag,
    parse_cseq,
    parse_name_addr,
    parse_uri,
    parse_via,
)

MAX_FORWARDS = "70"
USER_AGENT = "callgate"
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, REFER, NOTIFY"
TARGET_REFRESH = frozenset({"INVITE", "UPDATE", "REFER", "SUBSCRIBE", "NOTIFY"})
"""Methods that carry our Contact and whose Contact refreshes the remote target."""


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    """Our From (name-addr without tag)."""
    remote_uri: str
    """Their To (name-addr without tag)."""
    local_contact: str
    """Our Contact URI."""
    remote_target: str
    """Their Contact URI: where in-dialog requests go."""
    sent_by: str
    """host:port for our Via."""
    route_set: list[str] = field(default_factory=list)
    local_seq: int = 0
    remote_seq: int | None = None
    transport: str = "UDP"
    """Of our Via: the transport the dialog's requests reach the peer over."""

    @classmethod
    def as_uas(cls, invite: Request, local_tag: str, contact: str, sent_by: str) -> Dialog:
        """The dialog our 2xx (with `local_tag` in its To) creates (§12.1.1)."""
        remote = parse_name_addr(_header(invite, "From"))
        if not remote.tag:
            raise SipError("the From header has no tag")
        return cls(
            call_id=_header(invite, "Call-ID"),
            local_tag=local_tag,
            remote_tag=remote.tag,
            local_uri=_without_tag(_header(invite, "To")),
            remote_uri=_without_tag(_header(invite, "From")),
            local_contact=contact,
            remote_target=_contact_uri(invite),
            sent_by=sent_by,
            route_set=invite.headers.get_all("Record-Route"),
            remote_seq=parse_cseq(_header(invite, "CSeq"))[0],
            transport="TCP" if _arrived_over(invite) == "TCP" else "UDP",
        )

    @classmethod
    def as_uac(cls, invite: Request, response: Response, sent_by: str) -> Dialog:
        """The dialog a 2xx to our INVITE creates (§12.1.2)."""
        remote = parse_name_addr(_header(response, "To"))
        local = parse_name_addr(_header(invite, "From"))
        if not remote.tag or not local.tag:
            raise SipError("a dialog needs tags on both From and To")
        return cls(
            call_id=_header(invite, "Call-ID"),
            local_tag=local.tag,
            remote_tag=remote.tag,
            local_uri=_without_tag(_header(invite, "From")),
            remote_uri=_without_tag(_header(invite, "To")),
            local_contact=str(parse_name_addr(_header(invite, "Contact")).uri),
            remote_target=_contact_uri(response),
            sent_by=sent_by,
            route_set=list(reversed(response.headers.get_all("Record-Route"))),
            local_seq=parse_cseq(_header(invite, "CSeq"))[0],
        )

    @property
    def key(self) -> tuple[str, str]:
        """(Call-ID, our tag): how the endpoint finds the dialog of a request."""
        return self.call_id, self.local_tag

    def next_hop(self) -> SipUri:
        """Where in-dialog requests are sent: the first route, else the remote target."""
        if self.route_set:
            return parse_name_addr(self.route_set[0]).uri
        return parse_uri(self.remote_target)

    def request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
    ) -> Request:
        """A new in-dialog request with the next local CSeq (§12.2.1.1)."""
        if method in ("ACK", "CANCEL"):
            raise ValueError(f"{method} reuses its INVITE's CSeq: use ack() or cancel_for()")
        self.local_seq += 1
        return self._build(method, self.local_seq, body, content_type, extra)

    def ack(self, invite_seq: int, body: bytes = b"", content_type: str | None = None) -> Request:
        """The ACK for a 2xx to our (re-)INVITE with CSeq `invite_seq` (§13.2.2.4)."""
        return self._build("ACK", invite_seq, body, content_type, ())

    def receive(self, request: Request) -> bool:
        """Note an in-dialog request; False if its CSeq is out of order (answer 500)."""
        seq = parse_cseq(_header(request, "CSeq"))[0]
        if request.method not in ("ACK", "CANCEL"):
            if self.remote_seq is not None and seq <= self.remote_seq:
                return False
            self.remote_seq = seq
        if request.method in TARGET_REFRESH and request.headers.get("Contact"):
            self.remote_target = _contact_uri(request)
        return True

    def _build(
        self,
        method: str,
        seq: int,
        body: bytes,
        content_type: str | None,
        extra: Iterable[tuple[str, str]],
    ) -> Request:
        uri, routes = self._request_uri_and_routes()
        headers = Headers()
        headers.add("Via", via_value(self.sent_by, self.transport))
        for route in routes:
            headers.add("Route", route)
        headers.add("Max-Forwards", MAX_FORWARDS)
        headers.add("From", f"{self.local_uri};tag={self.local_tag}")
        headers.add("To", f"{self.remote_uri};tag={self.remote_tag}")
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{seq} {method}")
        if method in TARGET_REFRESH:
            headers.add("Contact", f"<{self.local_contact}>")
        for name, value in extra:
            headers.add(name, value)
        if content_type and body:
            headers.add("Content-Type", content_type)
        return Request(method, uri, headers, body)

    def _request_uri_and_routes(self) -> tuple[str, list[str]]:
        """Loose routing when the first route has `lr`, else strict routing (§12.2.1.1)."""
        target = str(parse_uri(self.remote_target))
        if not self.route_set:
            return target, []
        first = parse_name_addr(self.route_set[0]).uri
        if any(name.lower() == "lr" for name, _ in first.params):
            return target, list(self.route_set)
        return str(first), [*self.route_set[1:], f"<{target}>"]


def via_value(sent_by: str, transport: str = "UDP") -> str:
    """A Via of ours with a fresh branch; `rport` asks for the NAT-seen port (RFC 3581)."""
    return f"SIP/2.0/{transport} {sent_by};branch={new_branch()};rport"


def new_request(
    method: str,
    *,
    request_uri: str,
    from_uri: str,
    to_uri: str,
    contact: str,
    sent_by: str,
    call_id: str | None = None,
    seq: int = 1,
    body: bytes = b"",
    content_type: str | None = None,
) -> Request:
    """An out-of-dialog request (INVITE, REGISTER, OPTIONS) with a new From tag."""
    headers = Headers()
    headers.add("Via", via_value(sent_by))
    headers.add("Max-Forwards", MAX_FORWARDS)
    headers.add("From", f"<{from_uri}>;tag={new_tag()}")
    headers.add("To", f"<{to_uri}>")
    headers.add("Call-ID", call_id or new_call_id(sent_by.rsplit(":", 1)[0]))
    headers.add("CSeq", f"{seq} {method}")
    headers.add("Contact", f"<{contact}>")
    headers.add("Allow", ALLOW)
    headers.add("User-Agent", USER_AGENT)
    if content_type and body:
        headers.add("Content-Type", content_type)
    return Request(method, request_uri, headers, body)


def with_credentials(request: Request, header: str, value: str) -> Request:
    """The request again with an Authorization / Proxy-Authorization header, the next CSeq and
    a new branch (§22.2): a new transaction of the same call."""
    headers = request.headers.copy()
    seq, method = parse_cseq(_header(request, "CSeq"))
    sent_by = _sent_by(headers)
    headers.remove(header)
    headers.add(header, value)
    headers.set("CSeq", f"{seq + 1} {method}")
    headers.set("Via", via_value(sent_by))
    return Request(request.method, request.uri, headers, request.body)


def cancel_for(invite: Request) -> Request:
    """The CANCEL of an INVITE we sent: same branch, URI, Call-ID, From, To and CSeq number."""
    headers = Headers()
    headers.add("Via", invite.headers.get_all("Via")[0])
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("Max-Forwards", MAX_FORWARDS)
    for name in ("From", "To", "Call-ID"):
        headers.add(name, _header(invite, name))
    headers.add("CSeq", f"{parse_cseq(_header(invite, 'CSeq'))[0]} CANCEL")
    return Request("CANCEL", invite.uri, headers)


def _sent_by(headers: Headers) -> str:
    vias = headers.get_all("Via")
    if not vias:
        raise SipError("no Via header")
    # "SIP/2.0/UDP host:port;params": the sent-by is the second word, before any parameter
    return vias[0].split(None, 1)[1].split(";", 1)[0].strip()


def _arrived_over(request: Request) -> str:
    """The transport of the request's last hop: its top Via's."""
    vias = request.headers.get_all("Via")
    if not vias:
        raise SipError("no Via header")
    return parse_via(vias[0]).transport.upper()


def _header(message: Request | Response, name: str) -> str:
    value = message.headers.get(name)
    if value is None:
        raise SipError(f"no {name} header")
    return value.strip()


def _without_tag(value: str) -> str:
    address = parse_name_addr(value)
    address.params.pop("tag", None)
    return str(address)


def _contact_uri(message: Request | Response) -> str:
    contacts = message.headers.get_all("Contact")
    if not contacts:
        raise SipError("no Contact header")
    return str(parse_name_addr(contacts[0]).uri)
