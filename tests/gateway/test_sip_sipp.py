"""The SIP bridge against a real peer: sipp (Debian `sip-tester`) calling a real gateway process
over loopback, and taking its outbound call as a digest-authenticating trunk. Each scenario is a
file in tests/gateway/sipp/; a failing call shows its SIP trace."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.corpus import Prompt, select_prompts, word_error_rate
from tests.gateway.rtp_tools import (
    RtpCollector,
    Stream,
    percentile,
    silence,
    wav_pcm8k,
    write_rtp_pcap,
)
from tests.gateway.server import LONG_REPLY, TEST_AGENT
from tests.gateway.sip_gateway import SipGateway, start_sip_gateway
from tests.gateway.sip_peers import Sipp, SippResult, free_udp_block, media_ports

pytestmark = pytest.mark.slow

TALKER_NUMBER = "+15550100"
"""Routed to an agent whose greeting lasts about 15 s: something to put on hold."""
TRUNK_USER, TRUNK_PASSWORD = "callgate", "trunk-secret"  # what uas_digest.xml accepts
GAP_P99_MS = 60.0
RING_SECS = 0.5
"""Inbound calls ring this long before the answer: the window uac_cancel.xml CANCELs in."""


@pytest.fixture(scope="module")
def trunk_port() -> int:
    return free_udp_block(1)


@pytest.fixture(scope="module")
def sip_gateway(tmp_path_factory, trunk_port: int) -> Iterator[SipGateway]:
    agents = {
        "terse": TEST_AGENT,
        "talker": {"greeting": LONG_REPLY, "llm": {"provider": "scripted", "fallback": "Okay."}},
    }
    gateway = start_sip_gateway(
        tmp_path_factory.mktemp("sip-gateway"), agents, "terse", {TALKER_NUMBER: "talker"},
        trunk_uri=f"sip:127.0.0.1:{trunk_port}", username=TRUNK_USER, password=TRUNK_PASSWORD,
        answer_delay_secs=RING_SECS,
    )
    yield gateway
    assert gateway.stop() == 0


def speech_pcap(workdir: Path, prompts: list[Prompt], lead_secs: float, tail_secs: float) -> None:
    """speech.pcap for the scenario: silence while the agent greets, the prompts, then silence
    for the turn to end on (a phone keeps sending packets while the caller is quiet)."""
    workdir.mkdir(parents=True, exist_ok=True)
    speech = wav_pcm8k([p.wav for p in prompts], gap_secs=0.5)
    pcm = silence(lead_secs) + speech + silence(tail_secs)
    write_rtp_pcap(workdir / "speech.pcap", pcm)


def agent_stream(collector: RtpCollector, port: int, gateway: SipGateway) -> Stream:
    """The one stream the gateway sent to this call's media port, from its RTP range."""
    streams = collector.port_streams(port)
    assert len(streams) == 1, [s.source for s in streams]
    stream = streams[0]
    low, high = gateway.rtp_ports
    assert low <= stream.source[1] <= high, stream.source
    assert stream.payload_types == {0}, stream.payload_types  # PCMU, as negotiated
    assert len(stream.ssrcs) == 1 and stream.malformed == 0
    return stream


def check(result: SippResult, calls: int = 1) -> None:
    assert result.returncode == 0 and result.successful == calls, result.explain()


def said(record: dict, role: str) -> list[str]:
    return [turn["text"] for turn in record["transcript"] if turn["role"] == role]


def test_harness_sipp_against_sipp(tmp_path: Path, report_figure):
    """The tools themselves, before any gateway: sipp's stand-in UAS answers sipp's caller and
    plays speech back; the collector must hear every packet, evenly paced."""
    prompts = select_prompts(1, seed=11)
    uas = Sipp("standin_uas.xml", tmp_path / "uas", calls=3)
    uac = Sipp("uac_speech.xml", tmp_path / "uac", remote=f"127.0.0.1:{uas.local_port}",
               calls=3, call_secs=3)
    for sipp in (uas, uac):
        speech_pcap(sipp.workdir, prompts, 0.2, 3)
    ports = media_ports(uac.media_port, 3)
    with RtpCollector(ports) as collector:
        uas.start()
        time.sleep(0.3)
        caller = uac.run()
        answerer = uas.wait()
    check(caller, 3)
    check(answerer, 3)
    gaps = []
    for port in ports:
        (stream,) = collector.port_streams(port)
        assert 140 <= len(stream.arrivals) <= 200 and stream.lost() == 0  # ~3 s of 20 ms packets
        assert stream.voiced_secs() > 0.5 * prompts[0].duration
        gaps += stream.gaps_ms()
    report_figure("sip_harness_gap_ms_p99", round(percentile(gaps, 99), 1))
    assert percentile(gaps, 99) < 30


def test_speech_call_is_heard_answered_and_hung_up_by_the_caller(
    sip_gateway: SipGateway, tmp_path: Path, report_figure
):
    prompt = select_prompts(1, seed=5, min_secs=2.0, max_secs=4.0)[0]
    uac = Sipp("uac_speech.xml", tmp_path, remote=sip_gateway.sip, call_secs=12)
    speech_pcap(tmp_path, [prompt], lead_secs=3, tail_secs=8)
    (port,) = media_ports(uac.media_port, 1)
    with RtpCollector([port]) as collector:
        result = uac.run()
    check(result)
    stream = agent_stream(collector, port, sip_gateway)
    record = sip_gateway.record_of(result.call_ids()[0])
    assert record["provider"] == "sip" and record["direction"] == "inbound"
    assert record["status"] == "completed" and record["hangup_by"] == "caller", record
    assert said(record, "assistant")[:2] == ["Hello, how can I help?", "Okay."], record
    heard = " ".join(said(record, "user"))
    assert word_error_rate([prompt.text], [heard]) <= 0.3, (prompt.text, heard)
    assert stream.voiced_secs() > 1.0  # the greeting and the answer, as sound
    gaps = stream.arrival_gaps_ms()
    report_figure("sip_single_call_gap_ms_p99", round(percentile(gaps, 99), 1))
    assert percentile(gaps, 99) <= GAP_P99_MS and stream.lost() == 0
    assert len(gaps) == len(stream.arrivals) - 1 and stream.timestamp_jumps() == 0
    exchanges = result.exchanges()
    answered = min(e.at for e in exchanges if e.first_line.startswith("SIP/2.0 200")
                   and e.cseq == "1 INVITE")
    bye = min(e.at for e in exchanges if e.first_line.startswith("BYE"))
    expected = 50 * (bye - answered - 0.2)
    assert stream.packets_between(answered + 0.1, bye - 0.1) >= 0.95 * expected, (
        "RTP paused during the call: comfort silence must flow between the agent's turns"
    )


def test_rfc4733_keys_reach_the_conversation(sip_gateway: SipGateway, tmp_path: Path):
    uac = Sipp("uac_dtmf.xml", tmp_path, remote=sip_gateway.sip, call_secs=5)
    (port,) = media_ports(uac.media_port, 1)
    with RtpCollector([port]) as collector:
        result = uac.run()
    check(result)
    record = sip_gateway.record_of(result.call_ids()[0])
    assert said(record, "user") == ["(keypad) 12"], record["transcript"]
    assert said(record, "assistant")[1:2] == ["Okay."], record["transcript"]
    assert agent_stream(collector, port, sip_gateway).voiced_secs() > 1.0


def test_cancel_before_the_answer(sip_gateway: SipGateway, tmp_path: Path):
    result = Sipp("uac_cancel.xml", tmp_path, remote=sip_gateway.sip).run()
    check(result)
    time.sleep(1)
    records = [r for r in sip_gateway.records() if r["provider_call_id"] == result.call_ids()[0]]
    assert all(r["status"] != "in-progress" and not r["answered_at"] for r in records), records


def test_hold_and_resume_by_reinvite(sip_gateway: SipGateway, tmp_path: Path):
    uac = Sipp("uac_hold.xml", tmp_path, remote=sip_gateway.sip, service=TALKER_NUMBER,
               call_secs=3)
    (port,) = media_ports(uac.media_port, 1)
    with RtpCollector([port]) as collector:
        result = uac.run()
    check(result)  # the scenario checks the answers: a=recvonly to hold, a=sendrecv to resume
    answers = {
        e.cseq: e.at for e in result.exchanges()
        if e.direction == "received" and e.first_line.startswith("SIP/2.0 200")
    }
    (bye,) = [e.at for e in result.exchanges() if e.first_line.startswith("BYE")]
    answered, held, resumed = answers["1 INVITE"], answers["2 INVITE"], answers["3 INVITE"]
    stream = agent_stream(collector, port, sip_gateway)
    assert stream.packets_between(answered + 0.1, held - 0.1) >= 0.95 * 50 * (held - answered - 0.2)
    assert stream.packets_between(held + 0.1, resumed) == 0, "RTP (even silence) to a held caller"
    resumed_for = bye - resumed - 0.4
    assert stream.packets_between(resumed + 0.3, bye - 0.1) >= 0.95 * 50 * resumed_for, (
        "RTP did not resume"
    )


def test_a_call_over_tcp(sip_gateway: SipGateway, tmp_path: Path):
    """sipp -t t1: one TCP connection to the gateway's SIP port carries the whole dialog, so
    our responses and our BYE's answer must come back over it (RFC 3261 §18)."""
    prompt = select_prompts(1, seed=5, min_secs=2.0, max_secs=4.0)[0]
    uac = Sipp("uac_speech.xml", tmp_path, remote=sip_gateway.sip, call_secs=8,
               extra=["-t", "t1"])
    speech_pcap(tmp_path, [prompt], lead_secs=2, tail_secs=6)
    (port,) = media_ports(uac.media_port, 1)
    with RtpCollector([port]) as collector:
        result = uac.run()
    check(result)
    assert all("SIP/2.0/TCP" in line for line in result.messages.splitlines()
               if line.startswith("Via:")), "a message of the dialog went over UDP"
    assert agent_stream(collector, port, sip_gateway).voiced_secs() > 1.0
    record = sip_gateway.record_of(result.call_ids()[0])
    assert record["status"] == "completed" and record["hangup_by"] == "caller", record
    assert said(record, "assistant")[:2] == ["Hello, how can I help?", "Okay."], record


def test_late_offer_is_answered_in_the_ack(sip_gateway: SipGateway, tmp_path: Path):
    uac = Sipp("uac_late_offer.xml", tmp_path, remote=sip_gateway.sip, call_secs=5)
    (port,) = media_ports(uac.media_port, 1)
    with RtpCollector([port]) as collector:
        result = uac.run()
    check(result)  # the scenario checks our offer in the 200: PCMU, PCMA, telephone-event
    assert agent_stream(collector, port, sip_gateway).voiced_secs() > 0.8  # the greeting
    record = sip_gateway.record_of(result.call_ids()[0])
    assert record["status"] == "completed" and record["hangup_by"] == "caller", record


def test_outbound_call_through_a_digest_trunk(
    sip_gateway: SipGateway, trunk_port: int, tmp_path: Path
):
    trunk = Sipp("uas_digest.xml", tmp_path, local_port=trunk_port, call_secs=5)
    (port,) = media_ports(trunk.media_port, 1)
    with RtpCollector([port]) as collector:
        trunk.start()
        time.sleep(0.3)
        with sip_gateway.api() as api:
            response = api.post("/v1/calls", json={
                "to": "+15550123", "from": "+15550999", "provider": "sip", "agent": "terse",
            })
        assert response.status_code == 201, response.text
        result = trunk.wait()
    check(result)  # challenged, then authenticated, answered, and hung up by the trunk
    call = response.json()
    assert call["provider"] == "sip" and call["provider_call_id"] in result.call_ids()
    assert agent_stream(collector, port, sip_gateway).voiced_secs() > 0.8  # the greeting
    record = sip_gateway.record_of(call["provider_call_id"])
    assert record["direction"] == "outbound" and record["status"] == "completed", record


def test_registers_with_the_trunk_at_start_and_refreshes_before_expiry(tmp_path: Path):
    registrar = Sipp("uas_register.xml", tmp_path / "registrar", timeout_secs=40)
    registrar.start()
    try:
        time.sleep(0.3)
        gateway = start_sip_gateway(
            tmp_path / "gateway", {"terse": TEST_AGENT}, "terse",
            trunk_uri=f"sip:127.0.0.1:{registrar.local_port}", username=TRUNK_USER,
            password=TRUNK_PASSWORD, register_to_trunk=True,
        )
        ready = time.time()
        try:
            result = registrar.wait()
        finally:
            assert gateway.stop() == 0
    finally:
        registrar.stop()
    check(result)  # challenged twice, authenticated twice, refreshed within the 3 s granted
    exchanges = result.exchanges()
    registers = [e for e in exchanges if e.direction == "received" and e.cseq.endswith("REGISTER")
                 and e.first_line.startswith("REGISTER")]
    granted = [e.at for e in exchanges if e.direction == "sent" and e.first_line.startswith(
        "SIP/2.0 200")]
    assert [e.cseq for e in registers] == [f"{n} REGISTER" for n in (1, 2, 3, 4)]
    assert len(result.call_ids()) == 1  # refreshes of one binding (RFC 3261 §10.2.4)
    assert registers[0].at < ready + 1.0, "no REGISTER at start"
    refreshed_after = registers[2].at - granted[0]
    assert 1.5 < refreshed_after < 3.0, refreshed_after  # at 80% of the 3 s granted


MALFORMED_SIP = [
    b"\x00\xff garbage \x13\x37" * 20,
    b"INVITE sip:agent@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\nFr",
    b"SIP/2.0 200 OK\r\n\r\n",
    b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 99999999\r\n\r\n",
    b"\r\n\r\n",
    b"A" * 65000,
]
MALFORMED_RTP = [
    b"",
    b"\x80",
    b"\x00" * 12,  # version 0
    b"\x8f\x00" + b"\x00" * 10,  # 15 CSRCs announced, none there
    b"\x90\x00" + b"\x00" * 10 + b"\x00\x00\xff\xff",  # an extension longer than the packet
    b"\xa0\x00" + b"\x00" * 10 + b"\xff",  # padding longer than the packet
    b"\x80\x65" + b"\x00" * 10 + b"\x01",  # a truncated telephone-event
    b"\x80\x7f" + b"\x00" * 10 + bytes(160),  # a payload type nobody offered
]


def bad_sdp_invite(gateway: SipGateway, own_port: int) -> bytes:
    body = b"v=0\r\no=- x y IN IP4\r\nm=audio notaport RTP/AVP\r\nc=IN IP4 999.1.1.1\r\n"
    return (
        f"INVITE sip:agent@{gateway.sip} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{own_port};branch=z9hG4bK-bad-sdp\r\n"
        f"From: <sip:wire@127.0.0.1:{own_port}>;tag=wire\r\nTo: <sip:agent@{gateway.sip}>\r\n"
        f"Call-ID: bad-sdp@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:wire@127.0.0.1:{own_port}>\r\nMax-Forwards: 70\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_malformed_datagrams_during_a_call(sip_gateway: SipGateway, tmp_path: Path):
    """Garbage at the SIP port and at the call's RTP port, from a stranger and from the caller's
    own media address, while a good call goes on: it must carry on to a normal BYE."""
    prompt = select_prompts(1, seed=5, min_secs=2.0, max_secs=4.0)[0]
    uac = Sipp("uac_speech.xml", tmp_path, remote=sip_gateway.sip, call_secs=10)
    speech_pcap(tmp_path, [prompt], lead_secs=1, tail_secs=9)
    (port,) = media_ports(uac.media_port, 1)
    with RtpCollector([port]) as collector, socket.socket(type=socket.SOCK_DGRAM) as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.settimeout(2)
        uac.start()
        rtp = _gateway_media(collector, port)
        thrown_at = time.time()
        for datagram in [*MALFORMED_SIP, bad_sdp_invite(sip_gateway, stranger.getsockname()[1])]:
            stranger.sendto(datagram, ("127.0.0.1", sip_gateway.sip_port))
        for datagram in MALFORMED_RTP:
            stranger.sendto(datagram, rtp)
            collector.socket_of(port).sendto(datagram, rtp)
        answers = _responses(stranger)
        result = uac.wait()
    check(result)
    finals = [a[:12] for a in answers if b"bad-sdp@" in a and not a.startswith(b"SIP/2.0 1")]
    assert finals and finals[0] in (b"SIP/2.0 488 ", b"SIP/2.0 400 "), answers  # refused
    stream = agent_stream(collector, port, sip_gateway)
    assert stream.packets_between(thrown_at, thrown_at + 4) > 0 or stream.voiced_secs() > 1.0
    assert httpx.get(f"{sip_gateway.server.url}/healthz").status_code == 200
    record = sip_gateway.record_of(result.call_ids()[0])
    assert record["status"] == "completed" and record["hangup_by"] == "caller", record


def _gateway_media(collector: RtpCollector, port: int) -> tuple[str, int]:
    """The gateway's RTP address for the call, from the first packet it sends."""
    deadline = time.monotonic() + 15
    while not (streams := collector.port_streams(port)):
        assert time.monotonic() < deadline, "no RTP from the gateway"
        time.sleep(0.05)
    return streams[0].source


def _responses(sock: socket.socket) -> list[bytes]:
    answers = []
    try:
        while True:
            answers.append(sock.recv(65536))
    except TimeoutError:
        return answers

