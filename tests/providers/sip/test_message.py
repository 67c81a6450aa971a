"""providers/sip/message.py: real-world messages, header semantics, URIs, name-addr, Via."""

from __future__ import annotations

import contextlib
import time

import pytest

from providers.sip.message import (
    Headers,
    Request,
    Response,
    SipError,
    SipUri,
    new_branch,
    new_call_id,
    new_tag,
    parse,
    parse_cseq,
    parse_name_addr,
    parse_uri,
    parse_via,
    response_to,
    serialize,
)
from tests.providers.sip.messages import (
    BARESIP_INVITE,
    BARESIP_SDP,
    COMPACT_RESPONSE,
    SIPP_INVITE,
    SIPP_SDP,
    wire,
)


def test_sipp_invite() -> None:
    message = parse(SIPP_INVITE)
    assert isinstance(message, Request)
    assert (message.method, message.uri) == ("INVITE", "sip:service@127.0.0.1:5060")
    assert message.body == SIPP_SDP.encode()
    assert parse_cseq(message.headers.get("cseq") or "") == (1, "INVITE")
    assert parse_via(message.headers.get("Via") or "").branch == "z9hG4bK-4242-1-0"
    assert parse_name_addr(message.headers.get("From") or "").tag == "4242SIPpTag001"
    contact = parse_name_addr(message.headers.get("Contact") or "")
    assert (contact.uri.user, contact.uri.port, contact.display) == ("sipp", 5061, None)
    assert "Content-Length" not in message.headers  # framing, restored by serialize


def test_baresip_invite() -> None:
    message = parse(BARESIP_INVITE)
    assert isinstance(message, Request)
    sender = parse_name_addr(message.headers.get("From") or "")
    assert sender.display == "Doe, Alice"
    assert sender.uri == SipUri("sip", "alice", "example.org")
    via = parse_via(message.headers.get("Via") or "")
    assert via.params == {"branch": "z9hG4bK3a1f5c0e1d2b9a77", "rport": None}
    assert message.headers.get_all("Allow")[:3] == ["INVITE", "ACK", "BYE"]
    assert "100rel" in message.headers.get_all("Supported")
    assert message.body == BARESIP_SDP.encode()


def test_compact_multi_value_response() -> None:
    message = parse(COMPACT_RESPONSE)
    assert isinstance(message, Response)
    assert (message.status, message.reason) == (180, "Ringing")
    vias = [parse_via(v) for v in message.headers.get_all("Via")]
    assert [v.host for v in vias] == ["p.example", "2001:db8::9", "pc33.example.com"]
    assert (vias[1].transport, vias[1].port, vias[1].params["received"]) == (
        "TCP",
        5070,
        "::1",
    )
    assert str(vias[1]) == "SIP/2.0/TCP [2001:db8::9]:5070;branch=z9hG4bK2;received=::1"
    to = parse_name_addr(message.headers.get("t") or "")
    assert (to.display, to.tag) == ('Bob "the builder"', "a6c85cf")
    contacts = [parse_name_addr(c) for c in message.headers.get_all("Contact")]
    assert [c.display for c in contacts] == [None, "Bob, mobile"]
    assert contacts[1].params == {"q": "0.5"}
    assert contacts[1].uri.param("TRANSPORT") == "tcp"
    assert message.body == b""


def test_serialize_round_trip_of_real_messages() -> None:
    for data in (SIPP_INVITE, BARESIP_INVITE, COMPACT_RESPONSE):
        message = parse(data)
        again = serialize(message)
        assert parse(again) == message
        assert again.count(b"Content-Length:") == 1
        assert again.endswith(b"\r\n\r\n" + message.body)


def test_folded_header_lines_are_unfolded() -> None:
    data = SIPP_INVITE.replace(b"Subject: Performance Test", b"Subject: Performance\r\n\t Test")
    assert parse(data).headers.get("Subject") == "Performance Test"
    with pytest.raises(SipError, match="continuation"):
        parse(SIPP_INVITE.replace(b"\r\nVia:", b"\r\n Via:", 1))


def test_lenient_framing() -> None:
    keepalive_then_message = b"\r\n\r\n" + SIPP_INVITE
    assert parse(keepalive_then_message) == parse(SIPP_INVITE)
    head, body = SIPP_INVITE.split(b"\r\n\r\n", 1)
    lf_only = parse(head.replace(b"\r\n", b"\n") + b"\n\n" + body)
    assert lf_only == parse(SIPP_INVITE)
    extra = parse(SIPP_INVITE + b"garbage past Content-Length")
    assert extra.body == SIPP_SDP.encode()
    no_length = SIPP_INVITE.replace(b"Content-Length:   129\r\n", b"")
    assert parse(no_length).body == SIPP_SDP.encode()  # UDP: the rest of the datagram


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (b"", "empty"),
        (b"\r\n\r\n", "empty"),
        (SIPP_INVITE[:200], "blank line"),
        (SIPP_INVITE.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), "version"),
        (SIPP_INVITE.replace(b"INVITE sip:", b"INV@TE sip:", 1), "method"),
        (SIPP_INVITE.replace(b"sip:service@127.0.0.1:5060 ", b"<nope> ", 1), "Request-URI"),
        (SIPP_INVITE.replace(b"Call-ID: 1-4242@127.0.0.1\r\n", b""), "missing Call-ID"),
        (SIPP_INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), "does not match"),
        (SIPP_INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: 99999999999 INVITE"), "CSeq"),
        (SIPP_INVITE.replace(b"To: service", b"To: service\r\nTo: x <sip:x@y>"), "repeated To"),
        (SIPP_INVITE.replace(b"Max-Forwards: 70", b"Max Forwards: 70"), "header name"),
        (SIPP_INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards 70"), "without ':'"),
        (SIPP_INVITE.replace(b"Subject: Perf", b"Subject: Pe\x00rf"), "control character"),
        (SIPP_INVITE.replace(b"Subject: Perf", b"Subject: P\xffrf"), "UTF-8"),
        (SIPP_INVITE.replace(b"Length:   129", b"Length: 130"), "exceeds"),
        (SIPP_INVITE.replace(b"Length:   129", b"Length: -1"), "Content-Length"),
        (SIPP_INVITE.replace(b"Length:   129", b"Length: 99999999999999999999"), "Content-Length"),
        (
            SIPP_INVITE.replace(b"branch=", b"branch", 1).replace(b"SIP/2.0/UDP", b"SIP/2.0/", 1),
            "Via",
        ),
        (SIPP_INVITE.replace(b"<sip:sipp@127.0.0.1:5061>", b"<sip:sipp@127.0.0.1:5061", 1), "URI"),
        (SIPP_INVITE + b"x" * 65536, "exceeds 65535"),
        (b"SIP/2.0 99 Odd\r\n\r\n", "status code"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "version"),
        (b"OPTIONS  sip:a@b SIP/2.0\r\n\r\n", "request line"),
    ],
)
def test_malformed_messages_say_what(data: bytes, complaint: str) -> None:
    with pytest.raises(SipError, match=complaint):
        parse(data)


def test_headers_semantics() -> None:
    headers = Headers(
        [("v", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("call-id", "x"), ("X-Custom", " y ")]
    )
    assert headers.items()[:2] == [("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("Call-ID", "x")]
    assert headers.get("CALL-ID") == headers.get("i") == "x"
    assert headers.get("x-custom") == "y" and headers.get("Route") is None
    headers.add("Via", "SIP/2.0/UDP b, SIP/2.0/UDP c")
    assert headers.get_all("VIA") == [
        "SIP/2.0/UDP a;branch=z9hG4bK1",
        "SIP/2.0/UDP b",
        "SIP/2.0/UDP c",
    ]
    assert headers.get_all("X-Custom") == ["y"]  # only list headers split on commas
    copy = headers.copy()
    headers.set("via", "SIP/2.0/UDP d")
    assert headers.items()[0] == ("Via", "SIP/2.0/UDP d") and len(headers.get_all("Via")) == 1
    assert len(copy.get_all("Via")) == 3
    headers.remove("X-CUSTOM")
    assert [name for name, _ in headers.items()] == ["Via", "Call-ID"]
    with pytest.raises(SipError):
        headers.add("Subject", "hi\r\nVia: SIP/2.0/UDP evil")  # no header injection
    with pytest.raises(SipError):
        headers.add("Bad Name", "x")
    headers.set("Route", "<sip:p1;lr>")
    assert headers.items()[-1] == ("Route", "<sip:p1;lr>")


def test_uri_forms() -> None:
    uri = parse_uri("sips:+15551234;npdi@[2001:db8::1]:5061;transport=TCP;lr?Replaces=a%40b")
    assert (uri.scheme, uri.user, uri.host, uri.port) == (
        "sips",
        "+15551234;npdi",
        "2001:db8::1",
        5061,
    )
    assert (
        uri.param("transport") == "TCP"
        and uri.param("lr") is None
        and uri.headers == "Replaces=a%40b"
    )
    assert str(uri) == "sips:+15551234;npdi@[2001:db8::1]:5061;transport=TCP;lr?Replaces=a%40b"
    assert parse_uri(str(uri)) == uri
    assert parse_uri("SIP:example.com") == SipUri("sip", None, "example.com")
    for bad in ("tel:+1555", "sip:", "sip:a@", "sip:a@host:0", "sip:a@host:99999", "sip:a b@h",
                "sip:a@[::1", "sip:host;=x", "sip:host:5060x"):  # fmt: skip
        with pytest.raises(SipError):
            parse_uri(bad)


def test_name_addr_forms() -> None:
    bare = parse_name_addr("sip:bob@h;tag=x")
    assert (bare.display, bare.uri.params, bare.tag) == (None, (), "x")  # params go to the header
    unquoted = parse_name_addr("Bob  Smith <sip:bob@h;transport=udp>;tag=9;expires=60")
    assert unquoted.display == "Bob Smith" and unquoted.uri.param("transport") == "udp"
    assert unquoted.params == {"tag": "9", "expires": "60"}
    assert str(unquoted) == '"Bob Smith" <sip:bob@h;transport=udp>;tag=9;expires=60'
    quoted = parse_name_addr('"A \\\\ \\"B\\" <C>;d, e" <sip:x@y>')
    assert quoted.display == 'A \\ "B" <C>;d, e'
    assert parse_name_addr(str(quoted)) == quoted
    instance = parse_name_addr('<sip:a@b>;+sip.instance="<urn:uuid:1;2>"')
    assert instance.params["+sip.instance"] == '"<urn:uuid:1;2>"'
    for bad in ('"open <sip:a@b>', "Bob <sip:a@b", "<sip:a@b> junk", "B@d <sip:a@b>", "*", ""):
        with pytest.raises(SipError):
            parse_name_addr(bad)


def test_via_and_cseq() -> None:
    via = parse_via("SIP / 2.0 / udp  host.example:5060 ; branch=z9hG4bKx ; rport=5062")
    assert (via.transport, via.host, via.port) == ("UDP", "host.example", 5060)
    assert via.params == {"branch": "z9hG4bKx", "rport": "5062"}
    assert parse_via(str(via)) == via
    for bad in ("SIP/2.0/UDP", "SIP/1.0/UDP h", "SIP/2.0/UDP h;branch=a b", "SIP/2.0/UDP :5060"):
        with pytest.raises(SipError):
            parse_via(bad)
    assert parse_cseq(" 2147483647  ACK ") == (2**31 - 1, "ACK")
    for bad in ("", "1", "x INVITE", "2147483648 INVITE", "1 INVITE extra"):
        with pytest.raises(SipError):
            parse_cseq(bad)


def test_response_to_copies_the_dialog_headers() -> None:
    request = parse(COMPACT_RESPONSE.replace(b"SIP/2.0 180 Ringing", b"INVITE sip:bob@h SIP/2.0")
                    .replace(b";tag=a6c85cf", b""))  # fmt: skip
    assert isinstance(request, Request)
    response = response_to(request, 486, to_tag="abc")
    assert (response.status, response.reason) == (486, "Busy Here")
    assert response.headers.get_all("Via") == request.headers.get_all("Via")
    assert parse_name_addr(response.headers.get("To") or "").tag == "abc"
    for name in ("From", "Call-ID", "CSeq"):
        assert response.headers.get(name) == request.headers.get(name)
    assert "Contact" not in response.headers
    assert parse(serialize(response)) == response
    tagged = parse(
        BARESIP_INVITE.replace(b"To: <sip:agent@10.0.0.5:5060>", b"To: <sip:a@b>;tag=t1")
    )
    assert isinstance(tagged, Request)
    assert (
        parse_name_addr(response_to(tagged, 200, to_tag="t2").headers.get("To") or "").tag == "t1"
    )
    assert response_to(tagged, 299).reason == "OK"
    assert response_to(tagged, 200, "Fine").reason == "Fine"


def test_generators() -> None:
    branches = {new_branch() for _ in range(100)}
    assert len(branches) == 100 and all(b.startswith("z9hG4bK") for b in branches)
    assert new_tag() != new_tag() and new_tag().isalnum()
    call_id = new_call_id("10.0.0.5")
    assert call_id.endswith("@10.0.0.5") and " " not in call_id


def test_serialize_refuses_what_cannot_be_sent() -> None:
    headers = parse(SIPP_INVITE).headers
    with pytest.raises(SipError):
        serialize(Request("INVITE", "sip:a@b\r\nVia: x", headers))
    with pytest.raises(SipError):
        serialize(Response(700, "Nope", headers))


def _invite(*lines: str) -> bytes:
    mandatory = ["Via: SIP/2.0/UDP h", "f: <sip:a@b>", "t: <sip:a@b>", "i: x", "CSeq: 1 INVITE"]
    return wire("\n".join(["INVITE sip:a@b SIP/2.0", *lines, *mandatory]))


def test_large_inputs_parse_in_linear_time() -> None:
    """64 KiB of the worst shapes we could think of parse (or fail) quickly."""
    shapes = [
        _invite("Via: " + "SIP/2.0/UDP h, " * 4000 + "SIP/2.0/UDP h"),
        _invite('Contact: "' + '\\"' * 30000 + '" <sip:a@b>'),
        _invite("Via: SIP/2.0/UDP h" + ";a" * 30000),
        _invite("Contact: <sip:a@b" + ";a" * 30000 + ">"),
        _invite(*["X: y"] * 10000),
        _invite("Subject: a", *[" x"] * 15000),
        _invite("Subject: " + "\t " * 30000),
        b"\r\n" * 32000 + b"x",
        b"INVITE sip:a@b SIP/2.0\r\n" + b"<" * 65000,
    ]
    for data in shapes:
        assert len(data) <= 65535
        started = time.perf_counter()
        with contextlib.suppress(SipError):
            parse(data)
        assert time.perf_counter() - started < 0.5  # generous: the machine is shared
