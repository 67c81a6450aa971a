"""SIP calls in-process over loopback UDP, with a stand-in agent: INVITE -> 200 -> ACK runs a
gateway call whose greeting arrives as RTP; BYE, CANCEL, re-INVITE hold, refusals."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.registry import CallRecord, new_call_id
from gateway.settings import load_config
from gateway.sip_service import SipService
from gateway.state import Gateway
from gateway.status_webhooks import StatusWebhooks
from providers.sip.digest import DigestVerifier
from providers.sip.message import Request, Response, parse_name_addr, response_to, serialize
from providers.sip.sdp import parse_sdp
from tests.gateway.server import write_config
from tests.gateway.sip_udp_peer import UdpPeer, request_bytes

AGENT = {
    "greeting": "Hello.",
    "stt": {"provider": "standin"},
    "llm": {"provider": "scripted", "fallback": "Okay."},
    "tts": {"provider": "standin", "secs": 0.5},
    "turn": {"smart_turn": False},
}


def offer(rtp_port: int, direction: str = "sendrecv", codecs: str = "0 101") -> bytes:
    lines = [
        "v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
        f"m=audio {rtp_port} RTP/AVP {codecs}", "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16", f"a={direction}",
    ]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n").encode()


COMFORT_SILENCE = b"\xff" * 160


class Harness:
    def __init__(self, service: SipService, gateway: Gateway, peer: UdpPeer) -> None:
        self.service, self.gateway, self.peer = service, gateway, peer
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp.setblocking(False)
        self.silent = 0

    @property
    def target(self) -> tuple[str, int]:
        return self.service.endpoint.address

    def send(self, method: str, **fields) -> None:
        self.peer.send(request_bytes(method, self.peer.address, self.target, **fields), self.target)

    async def invite(self, call_id: str, **fields) -> Response:
        """INVITE with our offer; the 200 (after a 100 Trying), ACKed."""
        body = offer(self.rtp.getsockname()[1], **fields)
        self.send("INVITE", call_id=call_id, body=body, branch=f"z9hG4bK{call_id}")
        assert (await self.peer.response(100)).status == 100
        ok = await self.peer.response()
        assert ok.status == 200, ok
        return ok

    def ack(self, ok: Response, call_id: str, seq: int = 1) -> str:
        tag = parse_name_addr(ok.headers.get("To") or "").tag or ""
        self.send("ACK", call_id=call_id, to_tag=tag, seq=seq)
        return tag

    async def speech_packets(
        self, count: int, timeout: float = 5.0, silence: bytes = COMFORT_SILENCE
    ) -> list[bytes]:
        """The first `count` RTP packets of the agent's speech: the comfort silence that flows
        from the answer on (and between turns) is counted in `silent`, not returned."""
        loop = asyncio.get_running_loop()
        packets = []
        async with asyncio.timeout(timeout):
            while len(packets) < count:
                packet = await loop.sock_recv(self.rtp, 2048)
                if packet[12:] == silence:
                    self.silent += 1
                else:
                    packets.append(packet)
        return packets

    async def record(self, call_id: str, ended: bool = False, timeout: float = 5.0):
        async with asyncio.timeout(timeout):
            while True:
                record = await self.gateway.registry.by_provider_call_id(call_id)
                if record is not None and (not ended or record.ended_at):
                    return record
                await asyncio.sleep(0.02)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    config_path = write_config(
        tmp_path,
        {"standin": AGENT},
        sip={
            "listen": "127.0.0.1:0",
            "allow": "127.0.0.1/32",
            "rtp_ports": "42000-42019",
            "agent": "standin",
        },
    )
    config = load_config(config_path)
    gateway = Gateway.from_config(config)
    gateway.models_ready = True
    service = SipService(gateway, StatusWebhooks(None), config.settings.sip)
    await service.start()
    peer = await UdpPeer.open()
    harness = Harness(service, gateway, peer)
    yield harness
    await service.close()
    peer.close()
    harness.rtp.close()


async def test_invite_answered_call_runs_and_caller_bye_ends_it(harness: Harness):
    ok = await harness.invite("call-a")
    answer = parse_sdp(ok.body)
    assert answer.media[0].formats[0] == 0 and answer.media[0].port > 0
    assert ok.headers.get("Contact")
    tag = harness.ack(ok, "call-a")
    packets = await harness.speech_packets(10)  # the greeting, as RTP
    assert all(p[1] & 0x7F == 0 for p in packets)
    assert harness.silent > 0  # comfort silence from the answer until the greeting
    record = await harness.record("call-a")
    assert record.provider == "sip" and record.agent == "standin" and record.status == "in-progress"
    assert record.from_number == "alice" and record.to_number == "bot"
    harness.send("BYE", call_id="call-a", to_tag=tag, seq=2)
    assert (await harness.peer.response()).status == 200
    record = await harness.record("call-a", ended=True)
    assert record.status == "completed" and record.hangup_by == "caller"
    assert record.end_reason == "caller_hangup"
    assert harness.gateway.registry.local_count() == 0 and not harness.gateway.calls


async def test_retransmitted_invite_and_ok_until_ack(harness: Harness):
    harness.service.endpoint.layer.t1 = 0.05
    ok = await harness.invite("call-r")
    again = await harness.peer.response()  # our 2xx, retransmitted: no ACK yet
    assert again.status == 200 and again.body == ok.body
    body = offer(harness.rtp.getsockname()[1])
    harness.send("INVITE", call_id="call-r", body=body, branch="z9hG4bKcall-r")
    assert (await harness.peer.response()).status == 200  # absorbed, answered with the 2xx
    tag = harness.ack(ok, "call-r")
    await harness.speech_packets(2)
    while not harness.peer.inbox.empty():
        harness.peer.inbox.get_nowait()
    await harness.peer.nothing(0.3)  # ACKed: no more 2xx
    assert len([c for c in harness.gateway.calls]) == 1
    harness.send("BYE", call_id="call-r", to_tag=tag, seq=2)
    assert (await harness.peer.response()).status == 200


async def test_cancel_before_answer(harness: Harness):
    endpoint = harness.service.endpoint
    release = asyncio.Event()
    original = harness.service.calls._answer

    async def slow_answer(request, tx):  # hold the INVITE in "ringing" until CANCEL is in
        await release.wait()
        await original(request, tx)

    harness.service.calls._answer = slow_answer  # type: ignore[method-assign]
    body = offer(harness.rtp.getsockname()[1])
    harness.send("INVITE", call_id="call-c", body=body, branch="z9hG4bKcancel")
    assert (await harness.peer.response(100)).status == 100
    harness.send("CANCEL", call_id="call-c", branch="z9hG4bKcancel")
    statuses = {(await harness.peer.response()).status for _ in range(2)}
    assert statuses == {200, 487}
    release.set()
    record = await harness.record("call-c", ended=True)
    assert record.status == "failed" and record.end_reason == "caller_cancelled"
    assert harness.gateway.registry.local_count() == 0 and not endpoint.dialogs


async def test_reinvite_hold_and_resume(harness: Harness):
    ok = await harness.invite("call-h")
    tag = harness.ack(ok, "call-h")
    await harness.speech_packets(1)
    rtp_port = harness.rtp.getsockname()[1]
    harness.send(
        "INVITE", call_id="call-h", to_tag=tag, seq=2, body=offer(rtp_port, "sendonly")
    )
    held = await harness.peer.response()
    assert held.status == 200 and parse_sdp(held.body).media[0].direction == "recvonly"
    assert parse_sdp(held.body).origin_version > parse_sdp(ok.body).origin_version
    harness.ack(held, "call-h", seq=2)
    harness.send("INVITE", call_id="call-h", to_tag=tag, seq=3, body=offer(rtp_port))
    resumed = await harness.peer.response()
    assert resumed.status == 200 and parse_sdp(resumed.body).media[0].direction == "sendrecv"
    harness.ack(resumed, "call-h", seq=3)
    harness.send("INVITE", call_id="call-h", to_tag=tag, seq=3, body=offer(rtp_port))
    assert (await harness.peer.response()).status == 500  # CSeq did not grow
    harness.send("BYE", call_id="call-h", to_tag=tag, seq=4)
    assert (await harness.peer.response()).status == 200


async def test_late_offer_gets_our_offer_and_the_ack_brings_the_answer(harness: Harness):
    harness.send("INVITE", call_id="call-l", branch="z9hG4bKlate")  # no SDP
    assert (await harness.peer.response(100)).status == 100
    ok = await harness.peer.response()
    assert ok.status == 200 and ok.headers.get("Content-Type") == "application/sdp"
    ours = parse_sdp(ok.body).media[0]
    assert ours.formats == [0, 8, 101] and ours.direction == "sendrecv"
    tag = parse_name_addr(ok.headers.get("To") or "").tag
    answer = offer(harness.rtp.getsockname()[1], codecs="8 101").replace(
        b"a=rtpmap:0 PCMU/8000", b"a=rtpmap:8 PCMA/8000"
    )
    harness.send("ACK", call_id="call-l", to_tag=tag, body=answer)
    packets = await harness.speech_packets(5, silence=b"\xd5" * 160)
    assert {p[1] & 0x7F for p in packets} == {8}  # the answer's codec: PCMA
    record = await harness.record("call-l")
    assert record.status == "in-progress"
    harness.send("BYE", call_id="call-l", to_tag=tag, seq=2)
    assert (await harness.peer.response()).status == 200
    record = await harness.record("call-l", ended=True)
    assert record.status == "completed" and record.hangup_by == "caller"


async def test_late_offer_without_an_answer_in_the_ack_is_hung_up(harness: Harness):
    harness.send("INVITE", call_id="call-n", branch="z9hG4bKnoanswer")
    ok = await harness.peer.response()
    assert ok.status == 200 and parse_sdp(ok.body).media
    harness.ack(ok, "call-n")  # no SDP in it either
    bye = await harness.peer.receive()
    assert isinstance(bye, Request) and bye.method == "BYE"
    harness.peer.send(serialize(response_to(bye, 200)), harness.target)
    record = await harness.record("call-n", ended=True)
    assert record.status == "failed" and record.end_reason == "bad_sdp"
    assert harness.gateway.registry.local_count() == 0 and not harness.gateway.calls


async def test_refusals_no_codec_and_draining(harness: Harness):
    body = offer(harness.rtp.getsockname()[1], codecs="18")
    harness.send("INVITE", call_id="call-x", body=body.replace(b"a=rtpmap:0 PCMU/8000\r\n", b""))
    assert (await harness.peer.response()).status == 488
    harness.gateway.draining = True
    harness.send("INVITE", call_id="call-d", body=offer(harness.rtp.getsockname()[1]))
    assert (await harness.peer.response()).status == 503
    assert harness.gateway.registry.local_count() == 0


async def test_agent_hang_up_sends_bye(harness: Harness):
    ok = await harness.invite("call-b")
    harness.ack(ok, "call-b")
    await harness.speech_packets(1)
    [call] = harness.gateway.calls
    await call.hang_up()
    bye = await harness.peer.receive()
    assert bye.method == "BYE" and bye.headers.get("Call-ID") == "call-b"
    record = await harness.record("call-b", ended=True)
    assert record.hangup_by == "agent"


async def test_transfer_sends_refer_and_byes_after_notify_200(harness: Harness):
    ok = await harness.invite("call-t")
    tag = harness.ack(ok, "call-t")
    await harness.speech_packets(1)
    [call] = harness.gateway.calls
    transferring = asyncio.ensure_future(call.transfer("+15550003"))
    refer = await harness.peer.receive()
    assert refer.method == "REFER"
    assert refer.headers.get("Refer-To") == "<sip:+15550003@127.0.0.1>"
    peer = harness.peer
    peer.send(serialize(response_to(refer, 202)), harness.target)
    notify = request_bytes(
        "NOTIFY", peer.address, harness.target, call_id="call-t", to_tag=tag, seq=2,
        body=b"SIP/2.0 200 OK\r\n", extra="Event: refer\r\nSubscription-State: terminated",
    )
    peer.send(notify, harness.target)
    assert (await peer.response()).status == 200
    bye = await peer.receive()
    assert bye.method == "BYE"
    await transferring
    record = await harness.record("call-t", ended=True)
    assert record.end_reason == "transferred" and record.hangup_by == "transfer"


@pytest.fixture
async def trunk(tmp_path: Path) -> AsyncIterator[tuple[Harness, UdpPeer]]:
    """A gateway whose trunk is a loopback UDP peer that asks for digest credentials."""
    trunk = await UdpPeer.open()
    config_path = write_config(
        tmp_path,
        {"standin": AGENT},
        sip={
            "listen": "127.0.0.1:0",
            "rtp_ports": "42020-42039",
            "trunk_uri": f"sip:127.0.0.1:{trunk.address[1]}",
            "username": "gw",
            "password": "pw",
        },
    )
    config = load_config(config_path)
    gateway = Gateway.from_config(config)
    gateway.models_ready = True
    service = SipService(gateway, StatusWebhooks(None), config.settings.sip)
    await service.start()
    harness = Harness(service, gateway, trunk)
    yield harness, trunk
    await service.close()
    trunk.close()
    harness.rtp.close()


async def dial(harness: Harness) -> CallRecord:
    record = CallRecord(
        new_call_id(), "sip", "standin", direction="outbound",
        from_number="+15550001", to_number="+15550002",
    )
    await harness.gateway.registry.add(record)
    await harness.gateway.registry.link(record, await harness.service.dialer.dial(record))
    return record


async def test_outbound_call_with_digest_auth(trunk: tuple[Harness, UdpPeer]):
    harness, peer = trunk
    verifier = DigestVerifier("trunk", {"gw": "pw"}, b"k" * 32)
    record = await dial(harness)
    invite = await peer.receive()
    assert invite.method == "INVITE" and invite.uri.startswith("sip:+15550002@127.0.0.1")
    challenge = response_to(invite, 401, to_tag="t1")
    challenge.headers.add("WWW-Authenticate", verifier.challenge())
    peer.send(serialize(challenge), harness.target)
    ack = await peer.receive()
    assert ack.method == "ACK"
    retry = await peer.receive()
    assert retry.method == "INVITE"
    assert verifier.verify(retry.headers.get("Authorization") or "", "INVITE") == "gw"
    peer.send(serialize(response_to(retry, 180, to_tag="far")), harness.target)
    ok = response_to(retry, 200, to_tag="far")
    ok.headers.add("Contact", f"<sip:far@127.0.0.1:{peer.address[1]}>")
    ok.headers.add("Content-Type", "application/sdp")
    ok.body = offer(harness.rtp.getsockname()[1])
    peer.send(serialize(ok), harness.target)
    ack = await peer.receive()
    assert ack.method == "ACK" and ack.headers.get("CSeq") == "2 ACK"
    await harness.speech_packets(5)
    assert record.status == "in-progress"
    bye = request_bytes(
        "BYE", peer.address, harness.target, call_id=record.provider_call_id or "",
        from_tag="far", to_tag=parse_name_addr(retry.headers.get("From") or "").tag, seq=5,
    )
    peer.send(bye, harness.target)
    assert (await peer.response()).status == 200
    ended = await harness.record(record.provider_call_id or "", ended=True)
    assert ended.status == "completed" and ended.hangup_by == "caller"


async def test_outbound_busy_marks_the_record_failed(trunk: tuple[Harness, UdpPeer]):
    harness, peer = trunk
    record = await dial(harness)
    invite = await peer.receive()
    peer.send(serialize(response_to(invite, 486, to_tag="x")), harness.target)
    assert (await peer.receive()).method == "ACK"
    ended = await harness.record(record.provider_call_id or "", ended=True)
    assert ended.status == "failed" and ended.end_reason == "busy"
