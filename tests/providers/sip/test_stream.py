"""SIP over a stream: messages framed by Content-Length, however the bytes are cut."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers.sip.message import SipError, parse
from providers.sip.stream import StreamFramer


def message(call_id: str, body: bytes = b"", length_header: str = "Content-Length") -> bytes:
    return (
        f"OPTIONS sip:bot@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK{call_id}\r\n"
        f"From: <sip:a@127.0.0.1>;tag=a\r\nTo: <sip:bot@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n{length_header}: {len(body)}\r\n\r\n"
    ).encode() + body


STREAM = message("one") + b"\r\n\r\n" + message("two", b"v=0\r\n\r\n", "l") + message("three")


@given(st.lists(st.integers(1, len(STREAM) - 1), unique=True).map(sorted))
def test_messages_come_out_whole_wherever_the_stream_is_cut(cuts: list[int]):
    framer = StreamFramer()
    bounds = [0, *cuts, len(STREAM)]
    out = [m for a, b in pairwise(bounds) for m in framer.feed(STREAM[a:b])]
    assert [parse(m).headers.get("Call-ID") for m in out] == ["one", "two", "three"]
    assert out[1].endswith(b"v=0\r\n\r\n")  # the body's own blank line did not end it early


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (message("x").replace(b"Content-Length: 0\r\n", b""), "no Content-Length"),
        (message("x").replace(b"Content-Length: 0", b"Content-Length: -1"), "bad Content-Length"),
        (message("x").replace(b"Content-Length: 0", b"Content-Length: 70000"), "exceeds"),
        (b"INVITE " + b"x" * 70000, "no end of headers"),
    ],
)
def test_unframeable_streams_are_errors(data: bytes, why: str):
    with pytest.raises(SipError, match=why):
        StreamFramer().feed(data)


def test_a_partial_message_waits_for_the_rest():
    framer = StreamFramer()
    whole = message("late", b"0123456789")
    assert framer.feed(whole[:-3]) == []
    assert framer.feed(whole[-3:]) == [whole]
