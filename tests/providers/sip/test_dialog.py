"""RFC 3261 §12 dialogs: state from the INVITE/2xx pair, in-dialog requests and routing."""

from __future__ import annotations

import pytest

from providers.sip.dialog import Dialog, cancel_for, new_request, with_credentials
from providers.sip.message import Headers, Request, SipError, parse, response_to, serialize

SENT_BY = "192.0.2.1:5060"


def invite(**headers: str) -> Request:
    items = [
        ("Via", "SIP/2.0/UDP 198.51.100.2:5070;branch=z9hG4bKin"),
        ("From", '"Alice" <sip:+15550001@198.51.100.2>;tag=alice'),
        ("To", "<sip:+15550002@192.0.2.1>"),
        ("Call-ID", "c1@198.51.100.2"),
        ("CSeq", "7 INVITE"),
        ("Contact", "<sip:alice@198.51.100.2:5070;transport=udp>"),
    ]
    items += list(headers.items())
    return Request("INVITE", "sip:+15550002@192.0.2.1", Headers(items))


def uas(request: Request | None = None) -> Dialog:
    return Dialog.as_uas(request or invite(), "bot", "sip:callgate@192.0.2.1:5060", SENT_BY)


def test_uas_dialog_state_from_the_invite():
    dialog = uas()
    assert dialog.key == ("c1@198.51.100.2", "bot")
    assert dialog.remote_tag == "alice" and dialog.remote_seq == 7
    assert dialog.remote_target == "sip:alice@198.51.100.2:5070;transport=udp"
    assert dialog.route_set == []


def test_bye_from_uas_swaps_from_and_to_and_counts_its_own_cseq():
    dialog = uas()
    bye = parse(serialize(dialog.request("BYE")))
    assert bye.method == "BYE" and bye.uri == "sip:alice@198.51.100.2:5070;transport=udp"
    assert bye.headers.get("From") == "<sip:+15550002@192.0.2.1>;tag=bot"
    assert bye.headers.get("To").startswith('"Alice" <sip:+15550001@198.51.100.2>')
    assert bye.headers.get("To").endswith(";tag=alice")
    assert bye.headers.get("CSeq") == "1 BYE"
    assert "Contact" not in bye.headers
    via = bye.headers.get_all("Via")[0]
    assert via.startswith(f"SIP/2.0/UDP {SENT_BY};branch=z9hG4bK")
    refer = dialog.request("REFER", extra=[("Refer-To", "<sip:+15550003@192.0.2.1>")])
    assert refer.headers.get("CSeq") == "2 REFER"
    assert refer.headers.get("Contact") == "<sip:callgate@192.0.2.1:5060>"
    assert refer.headers.get("Refer-To") == "<sip:+15550003@192.0.2.1>"
    assert refer.headers.get_all("Via")[0] != via  # a new branch per transaction


def test_loose_route_set_keeps_target_as_request_uri():
    dialog = uas(invite(**{"Record-Route": "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>"}))
    bye = dialog.request("BYE")
    assert bye.uri == dialog.remote_target
    assert bye.headers.get_all("Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert dialog.next_hop().host == "p1.example.com"


def test_strict_route_puts_first_route_in_request_uri():
    dialog = uas(invite(**{"Record-Route": "<sip:strict.example.com>"}))
    bye = dialog.request("BYE")
    assert bye.uri == "sip:strict.example.com"
    assert bye.headers.get_all("Route") == [f"<{dialog.remote_target}>"]


def test_uac_dialog_reverses_record_route_and_acks_with_invite_cseq():
    request = new_request(
        "INVITE",
        request_uri="sip:+15550009@trunk.example.com",
        from_uri="sip:+15550001@192.0.2.1",
        to_uri="sip:+15550009@trunk.example.com",
        contact="sip:callgate@192.0.2.1:5060",
        sent_by=SENT_BY,
        seq=3,
        body=b"v=0\r\n",
        content_type="application/sdp",
    )
    ok = response_to(request, 200, to_tag="far")
    ok.headers.add("Contact", "<sip:far@203.0.113.5:5080>")
    ok.headers.add("Record-Route", "<sip:a.example;lr>, <sip:b.example;lr>")
    dialog = Dialog.as_uac(request, ok, SENT_BY)
    assert dialog.remote_tag == "far" and dialog.local_seq == 3
    assert dialog.route_set == ["<sip:b.example;lr>", "<sip:a.example;lr>"]
    ack = dialog.ack(3)
    assert ack.headers.get("CSeq") == "3 ACK" and ack.uri == "sip:far@203.0.113.5:5080"
    assert dialog.request("BYE").headers.get("CSeq") == "4 BYE"
    with pytest.raises(ValueError):
        dialog.request("ACK")


def test_remote_cseq_must_grow_and_reinvite_refreshes_target():
    dialog = uas()
    reinvite = invite()
    reinvite.headers.set("CSeq", "8 INVITE")
    reinvite.headers.set("Contact", "<sip:alice@198.51.100.9:5090>")
    assert dialog.receive(reinvite)
    assert dialog.remote_target == "sip:alice@198.51.100.9:5090"
    stale = invite()
    assert not dialog.receive(stale)  # CSeq 7 after 8
    ack = invite()
    ack.method = "ACK"
    ack.headers.set("CSeq", "8 ACK")
    assert dialog.receive(ack)  # an ACK carries its INVITE's number


def test_uas_dialog_needs_a_from_tag():
    request = invite()
    request.headers.set("From", "<sip:alice@198.51.100.2>")
    with pytest.raises(SipError):
        uas(request)


def test_credentials_retry_is_a_new_transaction_of_the_same_call():
    request = new_request(
        "REGISTER",
        request_uri="sip:trunk.example.com",
        from_uri="sip:user@trunk.example.com",
        to_uri="sip:user@trunk.example.com",
        contact="sip:user@192.0.2.1:5060",
        sent_by=SENT_BY,
    )
    retry = with_credentials(request, "Authorization", 'Digest username="user"')
    assert retry.headers.get("CSeq") == "2 REGISTER"
    assert retry.headers.get("Call-ID") == request.headers.get("Call-ID")
    assert retry.headers.get("From") == request.headers.get("From")
    assert retry.headers.get("Authorization") == 'Digest username="user"'
    assert retry.headers.get_all("Via")[0] != request.headers.get_all("Via")[0]
    assert SENT_BY in retry.headers.get_all("Via")[0]
    again = with_credentials(retry, "Authorization", 'Digest username="user2"')
    assert again.headers.get_all("Authorization") == ['Digest username="user2"']


def test_cancel_matches_the_invite_transaction():
    request = invite()
    cancel = cancel_for(request)
    assert cancel.uri == request.uri and cancel.headers.get("CSeq") == "7 CANCEL"
    assert cancel.headers.get_all("Via") == request.headers.get_all("Via")[:1]
    assert cancel.headers.get("To") == request.headers.get("To")


def test_a_dialog_made_over_tcp_sends_its_requests_with_a_tcp_via():
    invite = parse(
        b"INVITE sip:bot@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bKtcp\r\n"
        b"From: <sip:alice@127.0.0.1>;tag=a\r\nTo: <sip:bot@127.0.0.1>\r\n"
        b"Call-ID: tcp-1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5070;transport=tcp>\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert isinstance(invite, Request)
    dialog = Dialog.as_uas(invite, "b", "sip:callgate@127.0.0.1:5060", "127.0.0.1:5060")
    bye = dialog.request("BYE")
    assert (bye.headers.get("Via") or "").startswith("SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK")
