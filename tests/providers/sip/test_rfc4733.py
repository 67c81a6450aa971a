"""RFC 4733 telephone-events: payloads, one digit per event, sipp's real captures."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers.sip.rfc4733 import (
    END_PACKETS,
    DtmfReceiver,
    Rfc4733Error,
    TelephoneEvent,
    digit_packets,
)
from providers.sip.rtp import RtpPacket
from tests.corpus import skip_or_fail
from tests.providers.sip.pcap import udp_payloads

SIPP_PCAPS = Path("/usr/share/sip-tester")
PCAP_DIGITS = {f"dtmf_2833_{d}.pcap": d for d in "0123456789"} | {
    "dtmf_2833_pound.pcap": "#",
    "dtmf_2833_star.pcap": "*",
}

events = st.builds(
    TelephoneEvent,
    event=st.integers(0, 255),
    end=st.booleans(),
    volume=st.integers(0, 63),
    duration=st.integers(0, 0xFFFF),
)


@given(events)
def test_payload_round_trips(event: TelephoneEvent):
    assert TelephoneEvent.parse(event.serialize()) == event


@given(st.binary(max_size=12))
def test_arbitrary_payloads_parse_or_raise_rfc4733_error(data: bytes):
    receiver = DtmfReceiver()
    try:
        digit = receiver.receive(0, data)
    except Rfc4733Error:
        assert len(data) < 4
        return
    assert digit is None or digit in "0123456789*#ABCD"


def test_out_of_range_fields_do_not_serialize():
    with pytest.raises(Rfc4733Error):
        TelephoneEvent(1, volume=64).serialize()


def test_a_digit_is_a_marked_start_updates_and_three_end_packets():
    packets = digit_packets("#", duration_ms=100)
    parsed = [TelephoneEvent.parse(p.payload) for p in packets]
    assert [p.marker for p in packets] == [True] + [False] * (len(packets) - 1)
    assert {e.event for e in parsed} == {11}
    assert [e.duration for e in parsed[:5]] == [160, 320, 480, 640, 800]
    assert [e.end for e in parsed] == [False] * 5 + [True] * END_PACKETS
    assert {e.duration for e in parsed[5:]} == {800}


def test_digit_packets_reject_non_digits():
    for bad in ("x", "", "12", "E"):
        with pytest.raises(Rfc4733Error):
            digit_packets(bad)


def test_receiver_collapses_an_event_to_one_digit_and_tells_events_apart():
    receiver = DtmfReceiver()
    heard = []
    for timestamp, digit in ((1000, "1"), (3000, "1"), (5000, "A")):  # the same key twice
        for packet in digit_packets(digit):
            heard.append(receiver.receive(timestamp, packet.payload))
    assert [d for d in heard if d] == ["1", "1", "A"]


def test_a_lost_start_packet_does_not_lose_the_digit():
    receiver = DtmfReceiver()
    packets = digit_packets("7")[1:]
    assert [receiver.receive(160, p.payload) for p in packets].count("7") == 1


def test_a_long_event_continued_under_a_new_timestamp_is_one_digit():
    receiver = DtmfReceiver()
    assert receiver.receive(0, TelephoneEvent(5, duration=0xFFFF).serialize()) == "5"
    assert receiver.receive(0xFFFF, TelephoneEvent(5, duration=800).serialize()) is None
    assert receiver.receive(0xFFFF, TelephoneEvent(5, True, duration=800).serialize()) is None


def test_non_digit_events_are_not_digits():
    assert DtmfReceiver().receive(0, TelephoneEvent(16).serialize()) is None  # flash


@pytest.mark.parametrize(("name", "digit"), sorted(PCAP_DIGITS.items()))
def test_sipp_captures_give_exactly_one_digit(name: str, digit: str):
    path = SIPP_PCAPS / name
    if not path.is_file():
        skip_or_fail(f"{path} is missing: install sip-tester (tests/setup.sh)")
    packets = [RtpPacket.parse(p) for p in udp_payloads(path)]
    assert len(packets) > END_PACKETS
    receiver = DtmfReceiver()
    heard = [receiver.receive(p.timestamp, p.payload) for p in packets]
    assert [d for d in heard if d] == [digit]
