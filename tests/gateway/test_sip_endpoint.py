"""The SIP endpoint over real loopback UDP: OPTIONS, strangers refused and rate-limited,
digest challenges, malformed datagrams ignored, retransmissions absorbed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.sip_endpoint import SipEndpoint, SipTimeout, parse_hostport
from gateway.sip_guard import SipGuard, Verdict, parse_networks, parse_users
from providers.sip.dialog import new_request
from providers.sip.digest import authorization, parse_challenge
from providers.sip.message import Headers, Request, parse, response_to, serialize
from providers.sip.stream import StreamFramer
from providers.sip.transaction import ServerTransaction
from tests.gateway.sip_udp_peer import UdpPeer, request_bytes


class Invites:
    """Records what the endpoint hands up, answering 180 so the test can see it."""

    def __init__(self, endpoint: SipEndpoint) -> None:
        self.endpoint = endpoint
        self.seen: list[Request] = []
        self.cancelled: list[ServerTransaction] = []

    def on_invite(self, request: Request, tx: ServerTransaction) -> None:
        self.seen.append(request)
        self.endpoint.respond(tx, response_to(request, 180, to_tag="bot"))

    def on_cancel(self, invite: ServerTransaction) -> None:
        self.cancelled.append(invite)
        self.endpoint.respond(invite, response_to(invite.request, 487))


async def started(allow: str | None, users: str | None = None) -> SipEndpoint:
    guard = SipGuard(parse_networks(allow), parse_users(users), rate_per_sec=1.0, burst=3)
    endpoint = SipEndpoint("127.0.0.1:0", guard)
    await endpoint.start()
    return endpoint


@pytest.fixture
async def peer() -> AsyncIterator[UdpPeer]:
    peer = await UdpPeer.open()
    yield peer
    peer.close()


@pytest.fixture
async def allowed() -> AsyncIterator[SipEndpoint]:
    endpoint = await started("127.0.0.0/8")
    endpoint.invites = Invites(endpoint)
    yield endpoint
    await endpoint.close()


async def test_options_from_an_allowed_source_is_answered(allowed: SipEndpoint, peer: UdpPeer):
    peer.send(request_bytes("OPTIONS", peer.address, allowed.address), allowed.address)
    response = await peer.response()
    assert response.status == 200 and "INVITE" in (response.headers.get("Allow") or "")
    via = response.headers.get_all("Via")[0]
    assert f"rport={peer.address[1]}" in via


async def test_stranger_is_refused_rate_limited_and_logged_once(peer: UdpPeer, capsys):
    endpoint = await started("10.0.0.0/8")
    try:
        for n in range(6):
            data = request_bytes("OPTIONS", peer.address, endpoint.address, call_id=f"s{n}")
            peer.send(data, endpoint.address)
        statuses = [(await peer.response()).status for _ in range(3)]
        assert statuses == [403, 403, 403]
        await peer.nothing()  # past the burst: dropped, not answered
        assert endpoint.guard.refused == 3 and endpoint.guard.dropped == 3
        peer.send(request_bytes("INVITE", peer.address, endpoint.address), endpoint.address)
        await peer.nothing(0.1)
    finally:
        await endpoint.close()
    assert capsys.readouterr().out.count("sip_stranger") == 1


async def test_digest_user_is_challenged_then_let_in(peer: UdpPeer):
    endpoint = await started(None, "alice:s3cret")
    invites = Invites(endpoint)
    endpoint.invites = invites
    try:
        target = endpoint.address
        peer.send(request_bytes("INVITE", peer.address, target, branch="z9hG4bK1"), target)
        challenge = await peer.response()
        assert challenge.status == 401 and invites.seen == []
        value = parse_challenge(challenge.headers.get("WWW-Authenticate") or "")
        credentials = authorization(
            value, method="INVITE", uri=f"sip:bot@{target[0]}:{target[1]}",
            username="alice", password="s3cret",
        )
        signed = request_bytes(
            "INVITE", peer.address, target, seq=2, extra=f"Authorization: {credentials}"
        )
        peer.send(signed, target)
        assert (await peer.response(180)).status == 180
        assert len(invites.seen) == 1
        wrong = credentials.replace('username="alice"', 'username="mallory"')
        forged = f"Authorization: {wrong}"
        peer.send(request_bytes("INVITE", peer.address, target, call_id="c2", extra=forged), target)
        assert (await peer.response()).status == 401
    finally:
        await endpoint.close()


async def test_malformed_datagrams_are_counted_and_ignored(allowed: SipEndpoint, peer: UdpPeer):
    for junk in (b"\x00\xff garbage", b"INVITE sip:x SIP/2.0\r\n\r\n", b"SIP/2.0 999 No\r\n\r\n"):
        peer.send(junk, allowed.address)
    peer.send(b"\r\n\r\n", allowed.address)  # a keep-alive: not malformed
    peer.send(request_bytes("OPTIONS", peer.address, allowed.address), allowed.address)
    assert (await peer.response()).status == 200
    assert allowed.malformed == 3


async def test_retransmitted_invite_is_absorbed(allowed: SipEndpoint, peer: UdpPeer):
    invites: Invites = allowed.invites  # type: ignore[assignment]
    data = request_bytes("INVITE", peer.address, allowed.address, branch="z9hG4bKsame")
    peer.send(data, allowed.address)
    assert (await peer.response(180)).status == 180
    peer.send(data, allowed.address)
    assert (await peer.response(180)).status == 180  # the last response again
    assert len(invites.seen) == 1


async def test_cancel_reaches_the_ringing_invite(allowed: SipEndpoint, peer: UdpPeer):
    invites: Invites = allowed.invites  # type: ignore[assignment]
    target = allowed.address
    peer.send(request_bytes("INVITE", peer.address, target, branch="z9hG4bKc"), target)
    await peer.response(180)
    peer.send(request_bytes("CANCEL", peer.address, target, branch="z9hG4bKc"), target)
    answers = {(await peer.response()).status for _ in range(2)}
    assert answers == {200, 487} and len(invites.cancelled) == 1
    peer.send(request_bytes("CANCEL", peer.address, target, branch="z9hG4bKnone"), target)
    assert (await peer.response()).status == 481


async def test_request_in_unknown_dialog_gets_481(allowed: SipEndpoint, peer: UdpPeer):
    peer.send(request_bytes("BYE", peer.address, allowed.address, to_tag="nope"), allowed.address)
    assert (await peer.response()).status == 481


async def test_client_request_retransmits_then_gets_its_final_response(
    allowed: SipEndpoint, peer: UdpPeer
):
    allowed.layer.t1 = 0.05  # a fast clock for the wire test
    options = new_request(
        "OPTIONS",
        request_uri=f"sip:alice@{peer.address[0]}:{peer.address[1]}",
        from_uri="sip:callgate@127.0.0.1",
        to_uri="sip:alice@127.0.0.1",
        contact=allowed.contact("127.0.0.1"),
        sent_by=allowed.sent_by("127.0.0.1"),
    )
    asking = asyncio.ensure_future(allowed.request(options, peer.address))
    first = await peer.receive()
    again = await peer.receive()  # Timer E: the same request again
    assert isinstance(first, Request) and again == first
    peer.send(serialize(response_to(first, 200)), allowed.address)
    _, response = await asking
    assert response.status == 200


async def test_client_request_to_a_silent_peer_times_out(allowed: SipEndpoint, peer: UdpPeer):
    allowed.layer.t1 = 0.01
    options = new_request(
        "OPTIONS",
        request_uri=f"sip:alice@{peer.address[0]}:{peer.address[1]}",
        from_uri="sip:callgate@127.0.0.1",
        to_uri="sip:alice@127.0.0.1",
        contact=allowed.contact("127.0.0.1"),
        sent_by=allowed.sent_by("127.0.0.1"),
    )
    with pytest.raises(SipTimeout):
        await asyncio.wait_for(allowed.request(options, peer.address), 5)
    assert peer.inbox.qsize() >= 5


def test_guard_verdicts_and_settings_parsing():
    guard = SipGuard(parse_networks("192.0.2.0/24, 2001:db8::1"), {}, burst=1)
    options = Request("OPTIONS", "sip:x@y", Headers())
    assert guard.check(options, ("192.0.2.9", 5060)) is Verdict.ALLOW
    assert guard.check(options, ("2001:db8::1", 5060)) is Verdict.ALLOW
    assert guard.check(options, ("198.51.100.1", 5060), now=1.0) is Verdict.REFUSE
    assert guard.check(options, ("198.51.100.1", 5060), now=1.1) is Verdict.DROP
    assert guard.check(options, ("198.51.100.1", 5060), now=3.0) is Verdict.REFUSE  # refilled
    with pytest.raises(ValueError):
        parse_networks("not-a-cidr")
    with pytest.raises(ValueError):
        parse_users("nopassword")
    assert parse_hostport("[::1]:5060") == ("::1", 5060)
    with pytest.raises(ValueError):
        parse_hostport("5060")


async def test_tcp_on_the_same_port_is_framed_and_answered_over_the_connection(
    allowed: SipEndpoint, peer: UdpPeer
):
    reader, writer = await asyncio.open_connection(*allowed.address)
    try:
        us = writer.get_extra_info("sockname")[:2]
        first = request_bytes("OPTIONS", us, allowed.address, call_id="tcp-1")
        second = request_bytes("OPTIONS", us, allowed.address, call_id="tcp-2")
        writer.write(b"\r\n\r\n" + first + second[:50])  # a keep-alive, then one and a half
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(second[50:])
        framer, answers = StreamFramer(), []
        async with asyncio.timeout(2):
            while len(answers) < 2:
                answers += [parse(m) for m in framer.feed(await reader.read(4096))]
        assert [(a.status, a.headers.get("Call-ID")) for a in answers] == [  # type: ignore[union-attr]
            (200, "tcp-1"),
            (200, "tcp-2"),
        ]
        assert us in allowed.tcp
        writer.write(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP x\r\n\r\n")  # no Content-Length
        async with asyncio.timeout(2):
            assert await reader.read() == b""  # unframeable: the connection is closed
        assert allowed.malformed == 1
    finally:
        writer.close()
    peer.send(request_bytes("OPTIONS", peer.address, allowed.address), allowed.address)
    assert (await peer.response()).status == 200  # UDP carries on
