"""RTCP: our sender reports, and a tolerant read of what peers send."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers.sip.rtcp import (
    NTP_UNIX_OFFSET,
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpError,
    SenderReport,
    build_bye,
    build_sender_report,
    ntp_timestamp,
    parse_rtcp,
)

u32 = st.integers(0, 0xFFFFFFFF)


def test_ntp_timestamp_counts_from_1900_with_a_binary_fraction():
    stamp = ntp_timestamp(1_700_000_000.25)
    assert stamp >> 32 == 1_700_000_000 + NTP_UNIX_OFFSET
    assert stamp & 0xFFFFFFFF == 1 << 30


@given(u32, st.floats(0, 2_000_000_000), u32, u32, u32, st.none() | st.text(max_size=40))
def test_sender_reports_round_trip(ssrc, unix_time, rtp_ts, packets, octets, cname):
    data = build_sender_report(
        ssrc,
        unix_time=unix_time,
        rtp_timestamp=rtp_ts,
        packet_count=packets,
        octet_count=octets,
        cname=cname,
    )
    assert len(data) % 4 == 0
    assert parse_rtcp(data) == [
        SenderReport(ssrc, ntp_timestamp(unix_time), rtp_ts, packets, octets)
    ]


def test_compound_with_receiver_report_sdes_bye_and_unknown_types():
    block = struct.pack("!IIIIII", 7, 0x10FFFFFF, 1000, 55, 66, 77)  # 1/16 lost, cumulative -1
    rr = struct.pack("!BBHI", 0x81, 201, 7, 99) + block
    app = struct.pack("!BBH", 0x80, 204, 2) + b"namedata"
    reason = b"\x04done"
    bye_body = struct.pack("!I", 99) + reason + bytes(-len(reason) % 4)
    bye = struct.pack("!BBH", 0x81, 203, len(bye_body) // 4) + bye_body
    packets = parse_rtcp(rr + app + bye + build_bye(5))
    assert packets == [
        ReceiverReport(99, (ReportBlock(7, 0x10, -1, 1000, 55, 66, 77),)),
        Bye((99,), "done"),
        Bye((5,)),
    ]


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\xc8",
        b"\x40\xc8\x00\x00",  # version 1
        b"\x80\xc8\x00\x05" + bytes(8),  # length past the datagram
        b"\x80\xc8\x00\x01" + bytes(4),  # SR without sender info
        b"\x81\xc9\x00\x01" + bytes(4),  # RR announcing a block it lacks
        b"\x82\xcb\x00\x01" + bytes(4),  # BYE with 2 SSRCs in 4 bytes
        b"\xa0\xcc\x00\x01" + bytes(4),  # padding count 0
        b"\x80\xcc\x00\x00\x80",  # trailing byte
    ],
)
def test_malformed_rtcp_raises(data: bytes):
    with pytest.raises(RtcpError):
        parse_rtcp(data)


@given(st.binary(max_size=120))
def test_arbitrary_bytes_parse_or_raise_rtcp_error(data: bytes):
    try:
        packets = parse_rtcp(data)
    except RtcpError:
        return
    assert all(isinstance(p, SenderReport | ReceiverReport | Bye) for p in packets)
