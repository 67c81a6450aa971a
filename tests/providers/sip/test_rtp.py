"""RTP packets as values (RFC 3550 section 5.1) and the sender's stream state."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.codecs import alaw_to_pcm, ulaw_to_pcm
from providers.sip.rtp import (
    ALAW_TO_ULAW,
    SAMPLES_PER_FRAME,
    ULAW_TO_ALAW,
    RtpError,
    RtpPacket,
    RtpSender,
)

packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=300),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension=st.none()
    | st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=40).map(lambda b: b[: len(b) // 4 * 4])),
    padding=st.integers(0, 255),
)


@given(packets)
def test_built_packets_round_trip(packet: RtpPacket):
    assert RtpPacket.parse(packet.serialize()) == packet


@given(st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_raise_rtp_error(data: bytes):
    try:
        packet = RtpPacket.parse(data)
    except RtpError:
        return
    assert packet.serialize() == data  # what parses is exactly what it says


def test_parses_a_known_packet():
    # sipp's dtmf_2833_1.pcap, first packet: marker, PT 101, seq 0x1f30, ts 0x33e0
    data = bytes.fromhex("80e51f30000033e00e05384e010a0000")
    packet = RtpPacket.parse(data)
    assert (packet.payload_type, packet.marker, packet.sequence) == (101, True, 0x1F30)
    assert (packet.timestamp, packet.ssrc, packet.payload) == (
        0x33E0,
        0x0E05384E,
        b"\x01\x0a\x00\x00",
    )


def test_csrc_extension_and_padding_are_skipped_to_the_payload():
    header = struct.pack("!BBHII", 0xB2, 0, 7, 8, 9)  # V=2, P, X, CC=2
    data = header + struct.pack("!II", 1, 2) + struct.pack("!HH", 0xBEDE, 1) + b"abcd"
    data += b"payload" + b"\x00\x00\x03"
    packet = RtpPacket.parse(data)
    assert packet.csrc == (1, 2)
    assert packet.extension == (0xBEDE, b"abcd")
    assert packet.payload == b"payload"
    assert packet.padding == 3


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x80\x00\x00", "shorter"),
        (bytes([0x40]) + bytes(11), "version"),
        (bytes([0xA0]) + bytes(11), "padding count is 0"),
        (bytes([0xA0]) + bytes(10) + b"\x40", "CSRC"),  # padding eats into the header
        (bytes([0x8F]) + bytes(11), "CSRC"),
        (bytes([0x90]) + bytes(11) + b"\x00\x00", "extension"),
        (bytes([0x90]) + bytes(11) + b"\x00\x00\x00\x05", "extension"),
    ],
)
def test_malformed_packets_say_why(data: bytes, why: str):
    with pytest.raises(RtpError, match=why):
        RtpPacket.parse(data)


def test_sender_numbers_packets_and_marks_talkspurts():
    sender = RtpSender(ssrc=1234)
    sender.sequence = 0xFFFE
    first = RtpPacket.parse(sender.audio(b"\xff" * 160, 0, tick=0))
    second = RtpPacket.parse(sender.audio(b"\xff" * 160, 0, tick=1))
    after_gap = RtpPacket.parse(sender.audio(b"\xff" * 160, 0, tick=5))
    talkspurt = RtpPacket.parse(sender.audio(b"\x00" * 160, 0, tick=6, talkspurt=True))
    assert [p.sequence for p in (first, second, after_gap, talkspurt)] == [0xFFFE, 0xFFFF, 0, 1]
    assert [p.marker for p in (first, second, after_gap, talkspurt)] == [True, False, True, True]
    assert (second.timestamp - first.timestamp) & 0xFFFFFFFF == SAMPLES_PER_FRAME
    assert (after_gap.timestamp - first.timestamp) & 0xFFFFFFFF == 5 * SAMPLES_PER_FRAME
    assert {p.ssrc for p in (first, second, after_gap)} == {1234}
    assert (sender.packets_sent, sender.octets_sent) == (4, 640)


def test_senders_pick_random_ssrc_and_starting_points():
    a, b = RtpSender(), RtpSender()
    assert (a.ssrc, a.sequence, a.timestamp_at(0)) != (b.ssrc, b.sequence, b.timestamp_at(0))


def test_law_tables_transcode_to_the_nearest_code():
    codes = bytes(range(256))
    ulaw = ulaw_to_pcm(codes)
    via_alaw = alaw_to_pcm(codes.translate(ULAW_TO_ALAW))
    for i in range(256):
        original = int.from_bytes(ulaw[2 * i : 2 * i + 2], "little", signed=True)
        transcoded = int.from_bytes(via_alaw[2 * i : 2 * i + 2], "little", signed=True)
        assert abs(original - transcoded) <= max(16, abs(original) // 16)
    silence = ulaw_to_pcm(bytes([0xD5]).translate(ALAW_TO_ULAW))  # A-law's quietest code
    assert abs(int.from_bytes(silence, "little", signed=True)) <= 8
