"""One call's RTP socket, against a real UDP peer on loopback."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest

from gateway import rtp_session
from gateway.rtp_session import RtpPortPool, RtpSession
from pipeline.codecs import ulaw_to_pcm
from providers.events import AudioIn, CallStopped, Dtmf, Event, PlaybackMarked
from providers.sip.rfc4733 import DtmfReceiver, TelephoneEvent
from providers.sip.rtcp import SenderReport, parse_rtcp
from providers.sip.rtp import ULAW_TO_ALAW, RtpPacket, RtpSender
from tests.corpus import skip_or_fail
from tests.providers.sip.pcap import udp_payloads

LOW, HIGH = 47000, 47999  # busy ports are skipped by open()
PCM_FRAME = bytes(640)  # 20 ms of 16 kHz silence
TONE_FRAME = (np.sin(np.arange(320) * 2 * np.pi * 400 / 16000) * 8000).astype("<i2").tobytes()
ULAW_FRAME = bytes(range(0, 160))  # not one silence code (0xFF) among them
COMFORT = b"\xff" * 160  # mu-law silence
DTMF_PT = 101


class Peer(asyncio.DatagramProtocol):
    """The far end: records what arrives (with arrival times) and sends what a test says."""

    def __init__(self) -> None:
        self.received: list[tuple[float, bytes, tuple[str, int]]] = []
        self.arrived = asyncio.Event()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        self.received.append((time.monotonic(), data, addr))
        self.arrived.set()

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[:2]

    def packets(self) -> list[RtpPacket]:
        return [RtpPacket.parse(data) for _, data, _ in self.received]

    async def wait_for(self, count: int, timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), deadline - time.monotonic())


@asynccontextmanager
async def udp_peer(port: int = 0) -> AsyncIterator[Peer]:
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", port))
    try:
        yield peer
    finally:
        transport.close()


@pytest.fixture
def pool() -> RtpPortPool:
    return RtpPortPool(LOW, HIGH)


@asynccontextmanager
async def session_with(
    pool: RtpPortPool, peer: Peer, codec: str = "PCMU", timeout_secs: float = 30.0, **start
) -> AsyncIterator[RtpSession]:
    session = await RtpSession.open("127.0.0.1", pool, timeout_secs=timeout_secs)
    session.start(
        remote=start.pop("remote", peer.address),
        codec=codec,
        payload_type=0 if codec == "PCMU" else 8,
        dtmf_payload_type=start.pop("dtmf_payload_type", DTMF_PT),
        **start,
    )
    try:
        yield session
    finally:
        await session.close()


async def next_event(events: AsyncIterator[Event], kind: type, timeout: float = 3.0) -> Event:
    async def find() -> Event:
        async for event in events:
            if isinstance(event, kind):
                return event
        raise AssertionError(f"events ended before a {kind.__name__}")

    return await asyncio.wait_for(find(), timeout)


async def test_output_is_paced_every_20_ms_with_proper_headers(pool, report_figure):
    async with udp_peer() as peer, session_with(pool, peer) as session:
        for _ in range(101):
            await session.send_audio(PCM_FRAME)
        await peer.wait_for(100, timeout=5)
    arrivals = np.array([t for t, _, _ in peer.received[:100]])
    gaps_ms = np.diff(arrivals) * 1000
    packets = peer.packets()[:100]
    assert all(len(p.payload) == 160 and p.payload_type == 0 for p in packets)
    assert len({p.ssrc for p in packets}) == 1
    assert [(p.sequence - packets[0].sequence) & 0xFFFF for p in packets] == list(range(100))
    assert [(p.timestamp - packets[0].timestamp) & 0xFFFFFFFF for p in packets] == [
        160 * n for n in range(100)
    ]
    assert [p.marker for p in packets] == [True] + [False] * 99
    figures = {
        "p50": round(float(np.percentile(gaps_ms, 50)), 2),
        "p99": round(float(np.percentile(gaps_ms, 99)), 2),
        "max": round(float(gaps_ms.max()), 2),
        "total_ms": round(float(arrivals[-1] - arrivals[0]) * 1000, 1),
    }
    report_figure("rtp_session_gap_ms_over_2s", figures)
    assert gaps_ms.max() < 60
    assert 1900 < figures["total_ms"] < 2100  # 99 gaps of 20 ms: no drift, no burst


async def test_ulaw_passes_through_and_pcma_transcodes(pool):
    async with udp_peer() as peer:
        async with session_with(pool, peer) as session:
            await session.send_audio(ULAW_FRAME, "ulaw8k")
            await peer.wait_for(1)
        pcmu = peer.packets()[0]
        async with session_with(pool, peer, codec="PCMA") as session:
            await session.send_audio(ULAW_FRAME, "ulaw8k")
            await peer.wait_for(len(peer.received) + 2)
    pcma = [p for p in peer.packets() if p.ssrc != pcmu.ssrc]
    assert (pcmu.payload_type, pcmu.payload) == (0, ULAW_FRAME)
    assert (pcma[0].payload_type, pcma[0].payload) == (8, ULAW_FRAME.translate(ULAW_TO_ALAW))
    assert (pcma[1].payload_type, pcma[1].payload) == (8, b"\xd5" * 160)  # A-law silence


async def test_comfort_silence_flows_while_nothing_is_queued(pool):
    async with udp_peer() as peer, session_with(pool, peer):
        await peer.wait_for(25)
    packets = peer.packets()[:25]
    arrivals = np.array([t for t, _, _ in peer.received[:25]])
    assert all(p.payload == COMFORT and p.payload_type == 0 for p in packets)
    assert [p.marker for p in packets] == [True] + [False] * 24
    assert [(p.sequence - packets[0].sequence) & 0xFFFF for p in packets] == list(range(25))
    assert [(p.timestamp - packets[0].timestamp) & 0xFFFFFFFF for p in packets] == [
        160 * n for n in range(25)
    ]
    assert 0.4 < arrivals[-1] - arrivals[0] < 0.6  # paced, not a burst


async def test_clear_takes_effect_within_one_packet_and_the_next_talkspurt_is_marked(pool):
    async with udp_peer() as peer, session_with(pool, peer) as session:
        for _ in range(50):
            await session.send_audio(ULAW_FRAME, "ulaw8k")
        await peer.wait_for(5)
        await session.send_clear()
        sent_at_clear = len(peer.received)
        await asyncio.sleep(0.2)
        after_clear = peer.packets()[sent_at_clear:]
        assert sum(p.payload == ULAW_FRAME for p in after_clear) <= 1
        assert sum(p.payload == COMFORT for p in after_clear) >= 5  # silence flows on
        before_talkspurt = len(peer.received)
        await session.send_audio(ULAW_FRAME, "ulaw8k")
        await peer.wait_for(before_talkspurt + 5)  # the spoken packet, then silence after it
    packets = peer.packets()
    spoken = [i for i, p in enumerate(packets) if p.payload == ULAW_FRAME]
    talkspurt = spoken[-1]
    assert talkspurt >= before_talkspurt and packets[talkspurt - 1].payload == COMFORT
    assert packets[talkspurt].marker and not packets[talkspurt + 1].marker
    assert [p.marker for p in packets[spoken[0] + 1 : talkspurt]] == [False] * (
        talkspurt - spoken[0] - 1
    )  # neither the end of the first talkspurt nor the silence after it is marked
    first = packets[0]
    assert [(p.sequence - first.sequence) & 0xFFFF for p in packets] == list(range(len(packets)))
    assert [(p.timestamp - first.timestamp) & 0xFFFFFFFF for p in packets] == [
        160 * n for n in range(len(packets))
    ]  # one stream, continuous through speech, silence and speech again


async def test_a_mark_is_acknowledged_once_what_came_before_was_sent(pool):
    async with udp_peer() as peer, session_with(pool, peer) as session:
        events = session.events()
        await session.send_mark("empty")  # nothing before it: at once
        assert await next_event(events, PlaybackMarked) == PlaybackMarked("empty")
        for _ in range(10):
            await session.send_audio(TONE_FRAME)
        await session.send_mark("m1")
        queued_at = time.monotonic()
        assert await next_event(events, PlaybackMarked) == PlaybackMarked("m1")
        elapsed = time.monotonic() - queued_at
        await peer.wait_for(10)
        assert 0.15 < elapsed < 0.5  # ten 20 ms packets (the first goes at the next tick)
        await asyncio.sleep(0.1)
    # the resampler's held-back tail went out with the mark, padded to a whole packet
    assert sum(p.payload != COMFORT for p in peer.packets()) == 11
    assert all(len(p.payload) == 160 for p in peer.packets())


async def test_symmetric_rtp_answers_where_the_media_comes_from(pool):
    async with udp_peer() as signalled, udp_peer() as actual:
        async with session_with(pool, signalled) as session:
            sender = RtpSender()
            actual.transport.sendto(
                sender.audio(ULAW_FRAME, 0, 0), ("127.0.0.1", session.local_port)
            )
            events = session.events()
            await next_event(events, AudioIn)
            learned_at = time.monotonic()
            await session.send_audio(ULAW_FRAME, "ulaw8k")
            await actual.wait_for(1)
            # a stranger while the caller's stream is alive is ignored, and does not redirect us
            stranger = RtpSender()
            signalled.transport.sendto(
                stranger.audio(ULAW_FRAME, 0, 0), ("127.0.0.1", session.local_port)
            )
            actual.transport.sendto(
                sender.audio(ULAW_FRAME, 0, 1), ("127.0.0.1", session.local_port)
            )
            await asyncio.sleep(0.05)
            await session.send_audio(ULAW_FRAME, "ulaw8k")
            await actual.wait_for(2)
            assert session.stats.ignored == 1
            await asyncio.sleep(0.1)
        # comfort silence went where the SDP said until the caller's media showed where it is
        assert all(data[12:] == COMFORT for _, data, _ in signalled.received)
        assert all(t < learned_at + 0.02 for t, _, _ in signalled.received)
        assert sum(p.payload == ULAW_FRAME for p in actual.packets()) == 2


async def test_caller_audio_becomes_one_audio_in_per_packet(pool):
    async with udp_peer() as peer, session_with(pool, peer, codec="PCMA") as session:
        sender = RtpSender()
        target = ("127.0.0.1", session.local_port)
        started = time.monotonic()
        for tick in range(50):
            await asyncio.sleep(max(0.0, started + tick * 0.02 - time.monotonic()))
            peer.transport.sendto(sender.audio(b"\xd5" * 160, 8, tick), target)
        events = session.events()
        heard = [await next_event(events, AudioIn) for _ in range(50)]
        assert {a.payload for a in heard} == {b"\xd5".translate(rtp_session.ALAW_TO_ULAW) * 160}
        frame = session.frame(heard[0])
        assert len(frame.pcm) == 640 and frame.sample_rate == 16000
        assert max(abs(int(s)) for s in np.frombuffer(ulaw_to_pcm(heard[0].payload), np.int16)) <= 8
        assert session.stats.packets_in == 50


async def test_malformed_and_unexpected_packets_are_ignored(pool):
    async with udp_peer() as peer, session_with(pool, peer) as session:
        target = ("127.0.0.1", session.local_port)
        sender = RtpSender()
        for junk in (
            b"",
            b"\x00" * 20,
            b"\xff" * 3,
            b"INVITE sip:x SIP/2.0\r\n\r\n",
            bytes([0xBF]) + bytes(11),
        ):
            peer.transport.sendto(junk, target)
        peer.transport.sendto(sender.audio(ULAW_FRAME, 96, 0), target)  # a payload type not agreed
        peer.transport.sendto(sender.packet(b"\x01", DTMF_PT, 0, True), target)  # short event
        for tick in range(4):
            peer.transport.sendto(sender.audio(ULAW_FRAME, 0, tick), target)
        events = session.events()
        assert (await next_event(events, AudioIn)).payload == ULAW_FRAME
        assert session.stats.ignored == 6


async def test_dtmf_in_from_sipps_capture_is_one_digit(pool):
    capture = Path("/usr/share/sip-tester/dtmf_2833_pound.pcap")
    if not capture.is_file():
        skip_or_fail(f"{capture} is missing: install sip-tester (tests/setup.sh)")
    async with udp_peer() as peer, session_with(pool, peer) as session:
        for payload in udp_payloads(capture):
            peer.transport.sendto(payload, ("127.0.0.1", session.local_port))
        events = session.events()
        assert await next_event(events, Dtmf) == Dtmf("#")
        await asyncio.sleep(0.1)
        session.stop("done")
        rest = [event async for event in events]
        assert not any(isinstance(e, Dtmf) for e in rest)


async def test_dtmf_out_is_rfc4733_events(pool):
    async with udp_peer() as peer, session_with(pool, peer) as session:
        await session.send_dtmf("1#")
        await session.send_mark("dtmf")
        await next_event(session.events(), PlaybackMarked)
        with pytest.raises(ValueError):
            await session.send_dtmf("x")
    packets = [p for p in peer.packets() if p.payload_type == DTMF_PT]
    receiver = DtmfReceiver()
    assert [d for p in packets if (d := receiver.receive(p.timestamp, p.payload))] == ["1", "#"]
    assert [p.marker for p in packets].count(True) == 2
    first_event = [p for p in packets if TelephoneEvent.parse(p.payload).event == 1]
    assert len({p.timestamp for p in first_event}) == 1
    assert [TelephoneEvent.parse(p.payload).end for p in first_event][-3:] == [True] * 3


async def test_dtmf_needs_telephone_event(pool):
    async with udp_peer() as peer, session_with(pool, peer, dtmf_payload_type=None) as session:
        with pytest.raises(RuntimeError, match="telephone-event"):
            await session.send_dtmf("1")


async def test_hold_stops_sending_but_marks_and_clock_go_on(pool):
    async with udp_peer() as peer, session_with(pool, peer) as session:
        session.update(remote=peer.address, direction="recvonly")
        for _ in range(5):
            await session.send_audio(ULAW_FRAME, "ulaw8k")
        await session.send_mark("held")
        await next_event(session.events(), PlaybackMarked)
        await asyncio.sleep(0.1)  # nothing queued on hold: still nothing, not even silence
        assert peer.received == []
        session.update(remote=peer.address, direction="sendrecv")
        await session.send_audio(ULAW_FRAME, "ulaw8k")
        await peer.wait_for(3)
    first, second, third = peer.packets()[:3]
    assert first.marker and first.payload == ULAW_FRAME
    assert (second.marker, second.payload) == (False, COMFORT)
    assert ((second.timestamp - first.timestamp) & 0xFFFFFFFF, third.marker) == (160, False)


async def test_silence_from_the_peer_times_out_but_not_on_hold(pool):
    async with (
        udp_peer() as peer,
        session_with(pool, peer, timeout_secs=0.3, direction="inactive") as session,
    ):
        await asyncio.sleep(0.5)
        session.update(remote=peer.address, direction="sendrecv")
        started = time.monotonic()
        stopped = await next_event(session.events(), CallStopped)
        assert stopped == CallStopped("rtp_timeout")
        assert 0.25 < time.monotonic() - started < 1.0


async def test_sender_reports_go_where_the_peers_rtcp_comes_from(pool, monkeypatch):
    monkeypatch.setattr(rtp_session, "REPORT_EVERY_TICKS", 10)
    receiver_report = struct.pack("!BBHI", 0x80, 201, 1, 42)
    async with udp_peer() as peer, udp_peer() as rtcp, session_with(pool, peer) as session:
        peer.transport.sendto(
            RtpSender(42).audio(ULAW_FRAME, 0, 0), ("127.0.0.1", session.local_port)
        )
        rtcp.transport.sendto(receiver_report, ("127.0.0.1", session.local_port + 1))
        rtcp.transport.sendto(
            b"\x80\xc8\x00\x09", ("127.0.0.1", session.local_port + 1)
        )  # cut short
        for _ in range(12):
            await session.send_audio(ULAW_FRAME, "ulaw8k")
        await rtcp.wait_for(1)
        assert (session.stats.rtcp_in, session.stats.ignored) == (1, 1)
    (report,) = parse_rtcp(rtcp.received[0][1])
    assert isinstance(report, SenderReport)
    assert report.ssrc == peer.packets()[0].ssrc
    assert 1 <= report.packet_count <= 12


async def test_close_frees_the_port_and_stops_events(pool):
    free = len(pool)
    async with udp_peer() as peer:
        session = await RtpSession.open("127.0.0.1", pool)
        session.start(remote=peer.address, codec="PCMU", payload_type=0, dtmf_payload_type=None)
        assert len(pool) == free - 1
        port = session.local_port
        await session.close()
        await session.close()
    assert len(pool) == free
    assert [event async for event in session.events()] == [CallStopped("closed")]
    for p in (port, port + 1):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", p))


def test_port_pool_hands_out_even_ports_and_rejects_empty_ranges():
    pool = RtpPortPool(10001, 10006)
    assert len(pool) == 2
    assert [pool.acquire(), pool.acquire()] == [10002, 10004]
    with pytest.raises(OSError):
        pool.acquire()
    with pytest.raises(ValueError):
        RtpPortPool(10001, 10002)


async def test_reordered_and_duplicated_packets_come_out_in_order_once(pool):
    async with udp_peer() as peer, session_with(pool, peer) as session:
        sender = RtpSender()
        packets = [sender.audio(bytes([n]) * 160, 0, n) for n in range(8)]
        order = [0, 1, 3, 2, 2, 4, 6, 5, 7, 7]
        for n in order:
            peer.transport.sendto(packets[n], ("127.0.0.1", session.local_port))
        events = session.events()
        heard = [(await next_event(events, AudioIn)).payload[0] for _ in range(8)]
        assert heard == list(range(8))
        assert session.jitter.stats.duplicates == 2
