"""Property-based fuzzing of providers/sip/message.py: whatever a stranger sends, the parser
answers with a message or a SipError, and what we generate survives the wire unchanged."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from providers.sip.message import (
    Headers,
    NameAddr,
    Request,
    Response,
    SipError,
    SipUri,
    Via,
    parse,
    parse_name_addr,
    parse_uri,
    parse_via,
    serialize,
)
from tests.providers.sip.messages import BARESIP_INVITE, COMPACT_RESPONSE, SIPP_INVITE

FUZZ = settings(max_examples=300, deadline=None)
ROUND_TRIP = settings(max_examples=200, deadline=None)  # generation is the slow part

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
USER_CHARS = TOKEN_CHARS.replace("`", "") + "()&=$,;?/"
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
hosts = st.one_of(
    st.lists(st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8), min_size=1,
             max_size=3).map(".".join),
    st.ip_addresses().map(str),
)  # fmt: skip
ports = st.none() | st.integers(1, 65535)
param_values = st.none() | tokens | st.text("abc;,<> :=", max_size=8).map(lambda s: f'"{s}"')
# Header text: anything printable (UTF-8 included), no CR/LF/controls; stripped as Headers does.
header_text = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\x7f"), max_size=40
).map(lambda s: s.strip(" \t"))


@st.composite
def sip_uris(draw: st.DrawFn) -> SipUri:
    user = draw(st.none() | st.text(USER_CHARS, min_size=1, max_size=12))
    params = draw(st.lists(st.tuples(tokens.map(str.lower), st.none() | tokens), max_size=3))
    return SipUri(
        draw(st.sampled_from(["sip", "sips"])), user, draw(hosts), draw(ports), tuple(params)
    )


@st.composite
def name_addrs(draw: st.DrawFn) -> NameAddr:
    params = draw(st.dictionaries(tokens.map(str.lower), param_values, max_size=3))
    return NameAddr(draw(sip_uris()), draw(st.none() | header_text), params)


@st.composite
def vias(draw: st.DrawFn) -> Via:
    params = draw(st.dictionaries(tokens.map(str.lower), st.none() | tokens, max_size=3))
    return Via(draw(st.sampled_from(["UDP", "TCP", "TLS"])), draw(hosts), draw(ports), params)


RESERVED = {"via", "v", "from", "f", "to", "t", "call-id", "i", "cseq", "content-length", "l"}


@st.composite
def messages(draw: st.DrawFn) -> Request | Response:
    method = draw(st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"]) | tokens)
    headers = Headers()
    for via in draw(st.lists(vias(), min_size=1, max_size=3)):
        headers.add("Via", str(via))
    headers.add("From", str(draw(name_addrs())))
    headers.add("To", str(draw(name_addrs())))
    headers.add("Call-ID", draw(st.text(TOKEN_CHARS + "@", min_size=1, max_size=30)))
    headers.add("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}")
    extra_names = tokens.filter(lambda name: name.lower() not in RESERVED)
    for name, value in draw(st.lists(st.tuples(extra_names, header_text), max_size=6)):
        headers.add(name, value)
    body = draw(st.binary(max_size=300))
    if draw(st.booleans()):
        return Request(method, str(draw(sip_uris())), headers, body)
    reason = draw(header_text)
    return Response(draw(st.integers(100, 699)), reason, headers, body)


@FUZZ
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_raise_only_sip_error(data: bytes) -> None:
    with contextlib.suppress(SipError):
        parse(data)


@FUZZ
@given(st.text('SIP/2.0 INVITEsip:@;<>",=:\r\n \tViaFromToCall-IDCSeqvfti0123456789', max_size=600))
def test_sip_looking_text_raises_only_sip_error(text: str) -> None:
    with contextlib.suppress(SipError):
        parse(text.encode())


@ROUND_TRIP
@given(messages())
def test_generated_messages_round_trip(message: Request | Response) -> None:
    assert parse(serialize(message)) == message


@ROUND_TRIP
@given(name_addrs(), vias())
def test_generated_addresses_round_trip(address: NameAddr, via: Via) -> None:
    assert parse_name_addr(str(address)) == address
    assert parse_uri(str(address.uri)) == address.uri
    assert parse_via(str(via)) == via


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n")


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from([SIPP_INVITE, BARESIP_INVITE, COMPACT_RESPONSE])))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "duplicate", "length", "insert", "drop"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "truncate":
            del data[at:]
        elif kind == "flip":
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=20))
        elif kind == "length":
            big = draw(st.sampled_from([b"4294967296", b"99999999999999999999", b"65536", b"-1"]))
            data = bytearray(bytes(data).replace(b"Content-Length:   ", b"Content-Length: " + big))
        else:
            lines = _lines(bytes(data))
            index = draw(st.integers(0, len(lines) - 1))
            if kind == "duplicate":
                lines.insert(index, lines[index])
            else:
                del lines[index]
            data = bytearray(b"\r\n".join(lines))
    return bytes(data)


@settings(max_examples=500, deadline=None)
@given(mutated())
def test_mutated_messages_raise_only_sip_error(data: bytes) -> None:
    try:
        message = parse(data)
    except SipError:
        return
    # Whatever we accept, we can send on (a proxy-like re-serialization) unchanged.
    assert parse(serialize(message)) == message
