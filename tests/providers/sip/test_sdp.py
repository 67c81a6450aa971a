"""providers/sip/sdp.py: real offers, RFC 3264 choices, hold forms, and fuzzing."""

from __future__ import annotations

import contextlib
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.sip.sdp import (
    Negotiated,
    SdpError,
    build_sdp,
    negotiate,
    parse_sdp,
)
from tests.providers.sip.messages import BARESIP_SDP, SIPP_SDP, sdp


def test_sipp_offer() -> None:
    offer = parse_sdp(SIPP_SDP.encode())
    assert (offer.origin_session, offer.origin_version) == ("53655765", 2353687637)
    assert negotiate(offer) == Negotiated("PCMU", 0, None, "127.0.0.1", 6000, "sendrecv", 20)


def test_baresip_offer_with_opus_first_and_telephone_event() -> None:
    offer = parse_sdp(BARESIP_SDP.encode())
    media = offer.media[0]
    assert media.formats == [96, 0, 8, 101]
    assert media.rtpmap[96] == ("opus", 48000) and media.fmtp[101] == "0-15"
    assert (media.direction, media.ptime, media.connection) == ("sendrecv", 20, None)
    assert offer.connection == "192.168.1.20"
    chosen = negotiate(offer)
    assert (chosen.codec, chosen.payload_type, chosen.dtmf_payload_type) == ("PCMU", 0, 101)
    assert negotiate(offer, preferred=("PCMA",)).payload_type == 8


def test_dynamic_payload_types_and_case() -> None:
    offer = parse_sdp(sdp("""
v=0
o=- 1 1 IN IP6 2001:db8::5
s=-
c=IN IP6 2001:db8::5
t=0 0
m=video 4000 RTP/AVP 97
m=audio 5004 RTP/SAVP 0
m=audio 5006 RTP/AVP 18 112 113
a=rtpmap:18 G729/8000
a=rtpmap:112 pcma/8000
a=rtpmap:113 TELEPHONE-EVENT/8000
a=ptime:30
""").encode())  # fmt: skip
    chosen = negotiate(offer)
    assert (chosen.codec, chosen.payload_type, chosen.dtmf_payload_type) == ("PCMA", 112, 113)
    assert (chosen.remote_host, chosen.remote_port, chosen.ptime) == ("2001:db8::5", 5006, 30)


def test_static_type_remapped_and_wideband_events_ignored() -> None:
    offer = parse_sdp(sdp("""
v=0
o=- 1 1 IN IP4 10.0.0.1
c=IN IP4 10.0.0.1
m=audio 7000 RTP/AVP 0 8 100 101
a=rtpmap:0 PCMU/16000
a=rtpmap:100 telephone-event/16000
a=rtpmap:101 telephone-event/8000
""").encode())  # fmt: skip
    chosen = negotiate(offer)  # PT 0 at 16 kHz is not G.711
    assert (chosen.codec, chosen.payload_type, chosen.dtmf_payload_type) == ("PCMA", 8, 101)


@pytest.mark.parametrize(
    ("session_attrs", "media_attrs", "connection", "port", "ours"),
    [
        ("", "a=sendonly", "10.0.0.1", 7000, "recvonly"),
        ("a=sendonly", "", "10.0.0.1", 7000, "recvonly"),
        ("a=sendonly", "a=sendrecv", "10.0.0.1", 7000, "sendrecv"),  # media level wins
        ("", "a=recvonly", "10.0.0.1", 7000, "sendonly"),
        ("", "a=inactive", "10.0.0.1", 7000, "inactive"),
        ("", "", "0.0.0.0", 7000, "inactive"),  # RFC 2543 hold
        ("", "a=sendonly", "0.0.0.0", 7000, "inactive"),
        ("", "", "10.0.0.1", 0, "inactive"),  # stream disabled
    ],
)
def test_hold_forms(
    session_attrs: str, media_attrs: str, connection: str, port: int, ours: str
) -> None:
    lines = ["v=0", "o=- 7 8 IN IP4 10.0.0.1", "s=-", f"c=IN IP4 {connection}", "t=0 0"]
    lines += [session_attrs, f"m=audio {port} RTP/AVP 0", media_attrs]
    chosen = negotiate(parse_sdp(sdp("\n".join(line for line in lines if line)).encode()))
    assert chosen.direction == ours


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("o=- 1 1 IN IP4 h\nm=audio 1 RTP/AVP 0", "v=0"),
        ("v=0\nm=audio 1 RTP/AVP 0", "o= line"),
        ("v=0\no=- 1 x IN IP4 h", "o= line"),
        ("v=0\no=- 1 1 IN IP4 h\nc=IN IP4", "c= line"),
        ("v=0\no=- 1 1 IN IP4 h\nc=IN IP4 a b", "c= line"),
        ("v=0\no=- 1 1 IN IP4 h\nm=audio 70000 RTP/AVP 0", "port"),
        ("v=0\no=- 1 1 IN IP4 h\nm=audio 1 RTP/AVP 128", "payload"),
        ("v=0\no=- 1 1 IN IP4 h\nm=audio 1 RTP/AVP", "payload"),
        ("v=0\no=- 1 1 IN IP4 h\nm=audio 1 RTP/AVP 0\na=rtpmap:0 PCMU", "rtpmap"),
        ("v=0\no=- 1 1 IN IP4 h\nm=audio 1 RTP/AVP 0\na=ptime:0", "ptime"),
        ("v=0\no=- 1 1 IN IP4 h\nthis is not sdp", "bad SDP line"),
    ],
)
def test_malformed_sdp_says_what(text: str, complaint: str) -> None:
    with pytest.raises(SdpError, match=complaint):
        parse_sdp(sdp(text).encode())


def test_nothing_acceptable_is_an_sdp_error() -> None:
    base = "v=0\no=- 1 1 IN IP4 h\nc=IN IP4 10.0.0.1\n"
    for media in ("m=audio 1 RTP/AVP 18\na=rtpmap:18 G729/8000", "m=image 1 udptl t38",
                  "m=audio 1 RTP/SAVP 0"):  # fmt: skip
        with pytest.raises(SdpError, match="no RTP/AVP audio stream"):
            negotiate(parse_sdp(sdp(base + media).encode()))
    with pytest.raises(SdpError, match="connection"):
        negotiate(parse_sdp(sdp("v=0\no=- 1 1 IN IP4 h\nm=audio 1 RTP/AVP 0").encode()))


def test_build_sdp_answer() -> None:
    body = build_sdp(host="10.0.0.5", port=10002, session_id=42, version=2,
                     codecs=[(0, "PCMU")], dtmf_payload_type=101, direction="recvonly")  # fmt: skip
    assert body.decode().split("\r\n") == [
        "v=0",
        "o=- 42 2 IN IP4 10.0.0.5",
        "s=callgate",
        "c=IN IP4 10.0.0.5",
        "t=0 0",
        "m=audio 10002 RTP/AVP 0 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=recvonly",
        "",
    ]
    with pytest.raises(SdpError):
        build_sdp(host="h\r\nm=x", port=1, session_id=1, version=1, codecs=[(0, "PCMU")],
                  dtmf_payload_type=None)  # fmt: skip
    with pytest.raises(SdpError):
        build_sdp(host="h", port=1, session_id=1, version=1, codecs=[(0, "PCMU")],
                  dtmf_payload_type=0)  # fmt: skip


offers = st.builds(
    lambda host, port, codecs, dtmf, direction, ptime: dict(
        host=host, port=port, session_id=1, version=1, codecs=codecs,
        dtmf_payload_type=dtmf, direction=direction, ptime=ptime,
    ),
    st.ip_addresses().map(str),
    st.integers(1, 65535),
    st.sampled_from([[(0, "PCMU")], [(8, "PCMA")], [(8, "PCMA"), (0, "PCMU")], [(96, "PCMU")]]),
    st.none() | st.integers(97, 127),
    st.sampled_from(["sendrecv", "sendonly", "recvonly", "inactive"]),
    st.sampled_from([10, 20, 30, 40]),
)  # fmt: skip
MIRROR = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly",
          "inactive": "inactive"}  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(offers)
def test_built_offers_negotiate_back(params: dict) -> None:
    chosen = negotiate(parse_sdp(build_sdp(**params)))
    codecs = params["codecs"]
    preferred = next((pt, n) for want in ("PCMU", "PCMA") for pt, n in codecs if n == want)
    assert (chosen.payload_type, chosen.codec) == preferred
    assert chosen.dtmf_payload_type == params["dtmf_payload_type"]
    assert (chosen.remote_host, chosen.remote_port) == (params["host"], params["port"])
    unspecified = params["host"] in ("0.0.0.0", "::")
    assert chosen.direction == ("inactive" if unspecified else MIRROR[params["direction"]])
    assert chosen.ptime == params["ptime"]


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=1500)
    | st.text("v=0\r\nocmat IN IP4 RTP/AVP 0 8 101:/rtpmap", max_size=400).map(str.encode)
)
def test_arbitrary_bytes_raise_only_sdp_error(data: bytes) -> None:
    with contextlib.suppress(SdpError):
        negotiate(parse_sdp(data))


@st.composite
def mutated_offers(draw: st.DrawFn) -> bytes:
    data = bytearray(BARESIP_SDP.encode())
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["truncate", "flip", "insert", "duplicate"]))
        if action == "truncate":
            del data[at:]
        elif action == "flip":
            data[at] = draw(st.integers(0, 255))
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=12))
        else:
            lines = bytes(data).split(b"\r\n")
            index = draw(st.integers(0, len(lines) - 1))
            data = bytearray(b"\r\n".join([*lines[: index + 1], *lines[index:]]))
    return bytes(data)


@settings(max_examples=400, deadline=None)
@given(mutated_offers())
def test_mutated_offers_raise_only_sdp_error(data: bytes) -> None:
    with contextlib.suppress(SdpError):
        chosen = negotiate(parse_sdp(data))
        assert chosen.codec in ("PCMU", "PCMA") and 0 <= chosen.remote_port <= 65535


def test_large_offers_parse_in_linear_time() -> None:
    head = "v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 10.0.0.1\r\n"
    shapes = [
        head + "m=audio 1 RTP/AVP " + "0 " * 30000 + "\r\n",
        head + "m=audio 1 RTP/AVP 0\r\n" + "a=rtpmap:0 PCMU/8000\r\n" * 2900,
        head + "m=audio 1 RTP/AVP 0\r\n" * 3000,
        head + "a=fmtp:0 " + "x" * 65000,
    ]
    for text in shapes:
        started = time.perf_counter()
        with contextlib.suppress(SdpError):
            negotiate(parse_sdp(text.encode()[:65535]))
        assert time.perf_counter() - started < 0.5  # generous: the machine is shared
