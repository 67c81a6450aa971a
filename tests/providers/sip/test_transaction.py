"""RFC 3261 §17 transactions on a fake clock: retransmissions, absorption and timeouts."""

from __future__ import annotations

import pytest

from providers.sip.message import Headers, Request, parse, response_to
from providers.sip.transaction import (
    T1,
    T2,
    T4,
    RequestReceived,
    ResponseReceived,
    TransactionLayer,
    TransactionTimedOut,
)

PEER = ("127.0.0.1", 5070)
US = ("127.0.0.1", 5060)


def request(method: str, branch: str = "z9hG4bKabc", seq: int = 1, to_tag: str = "") -> Request:
    to = "<sip:bot@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    headers = Headers(
        [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport"),
            ("From", "<sip:alice@127.0.0.1>;tag=a1"),
            ("To", to),
            ("Call-ID", "call-1@127.0.0.1"),
            ("CSeq", f"{seq} {method}"),
            ("Contact", "<sip:alice@127.0.0.1:5070>"),
        ]
    )
    return Request(method, "sip:bot@127.0.0.1:5060", headers)


def sent(layer: TransactionLayer) -> list:
    return [parse(data) for data, _ in layer.data_to_send()]


def run_until(layer: TransactionLayer, end: float) -> tuple[list, list[float]]:
    """Poll at each deadline up to `end`; the events and the times a datagram went out."""
    events, times = [], []
    while (deadline := layer.next_deadline()) is not None and deadline <= end:
        events += layer.poll(deadline)
        times += [deadline] * len(layer.data_to_send())
    return events, times


# server INVITE


def test_invite_server_absorbs_retransmissions_and_resends_last_response():
    layer = TransactionLayer()
    [event] = layer.receive(request("INVITE"), PEER, 0.0)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    tx = event.transaction
    assert layer.receive(request("INVITE"), PEER, 0.1) == []
    assert layer.data_to_send() == []  # nothing sent yet: nothing to repeat
    layer.respond(tx, response_to(tx.request, 100), 0.2)
    assert [m.status for m in sent(layer)] == [100]
    assert layer.receive(request("INVITE"), PEER, 0.3) == []
    assert [m.status for m in sent(layer)] == [100]


def test_invite_server_notes_source_in_via():
    layer = TransactionLayer()
    message = request("INVITE")
    message.headers.set("Via", "SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bKx;rport")
    [event] = layer.receive(message, ("192.0.2.7", 40000), 0.0)
    via = event.request.headers.get_all("Via")[0]
    assert "received=192.0.2.7" in via and "rport=40000" in via


def test_2xx_is_retransmitted_until_ack_then_absorbed():
    layer = TransactionLayer()
    [event] = layer.receive(request("INVITE"), PEER, 0.0)
    tx = event.transaction
    layer.respond(tx, response_to(tx.request, 200, to_tag="b2"), 0.0)
    layer.data_to_send()
    _, times = run_until(layer, 3.9)
    assert times == [T1, 3 * T1, 7 * T1]  # doubling from T1 (capped at T2 later)
    ack = request("ACK", branch="z9hG4bKnew", to_tag="b2")
    [acked] = layer.receive(ack, PEER, 4.0)
    assert isinstance(acked, RequestReceived) and acked.transaction is None
    assert layer.receive(ack, PEER, 4.1) == []  # a retransmitted ACK
    assert layer.receive(request("INVITE"), PEER, 4.2) == []  # a late INVITE copy: absorbed
    assert [m.status for m in sent(layer)] == [200]
    events, times = run_until(layer, 100)
    assert events == [] and times == [] and len(layer) == 0


def test_2xx_never_acked_times_out_after_64_t1():
    layer = TransactionLayer()
    [event] = layer.receive(request("INVITE"), PEER, 0.0)
    layer.respond(event.transaction, response_to(event.transaction.request, 200), 0.0)
    layer.data_to_send()
    events, times = run_until(layer, 100)
    assert events == [TransactionTimedOut(event.transaction)]
    assert max(times) < 64 * T1
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert max(gaps) == T2
    assert len(layer) == 0


def test_error_response_retransmitted_by_timer_g_until_ack_then_timer_i():
    layer = TransactionLayer()
    [event] = layer.receive(request("INVITE"), PEER, 0.0)
    layer.respond(event.transaction, response_to(event.transaction.request, 486), 0.0)
    layer.data_to_send()
    _, times = run_until(layer, 1.6)
    assert times == [T1, 3 * T1]
    # the ACK for a non-2xx has the INVITE's branch: absorbed by the transaction
    assert layer.receive(request("ACK"), PEER, 2.0) == []
    assert layer.receive(request("INVITE"), PEER, 2.1) == []  # confirmed: no resend
    assert layer.data_to_send() == []
    assert layer.next_deadline() == 2.0 + T4
    layer.poll(2.0 + T4)
    assert len(layer) == 0


def test_error_response_never_acked_times_out_by_timer_h():
    layer = TransactionLayer()
    [event] = layer.receive(request("INVITE"), PEER, 0.0)
    layer.respond(event.transaction, response_to(event.transaction.request, 503), 0.0)
    events, _ = run_until(layer, 64 * T1)
    assert events == [TransactionTimedOut(event.transaction)]


def test_cancel_finds_its_invite_and_is_its_own_transaction():
    layer = TransactionLayer()
    [invite] = layer.receive(request("INVITE"), PEER, 0.0)
    [cancel] = layer.receive(request("CANCEL"), PEER, 0.1)
    assert cancel.transaction is not invite.transaction
    assert layer.invite_for(cancel.request) is invite.transaction
    assert layer.invite_for(request("CANCEL", branch="z9hG4bKother")) is None


def test_final_response_twice_is_refused():
    layer = TransactionLayer()
    [event] = layer.receive(request("OPTIONS"), PEER, 0.0)
    layer.respond(event.transaction, response_to(event.request, 200), 0.0)
    with pytest.raises(ValueError):
        layer.respond(event.transaction, response_to(event.request, 500), 0.0)


# server non-INVITE


def test_non_invite_server_resends_final_and_lives_for_timer_j():
    layer = TransactionLayer()
    [event] = layer.receive(request("BYE", seq=2), PEER, 0.0)
    assert layer.receive(request("BYE", seq=2), PEER, 0.1) == []  # trying: absorbed silently
    assert layer.data_to_send() == []
    layer.respond(event.transaction, response_to(event.request, 200), 0.2)
    layer.data_to_send()
    assert layer.receive(request("BYE", seq=2), PEER, 1.0) == []
    assert [m.status for m in sent(layer)] == [200]
    assert layer.next_deadline() == pytest.approx(0.2 + 64 * T1)
    assert layer.poll(0.2 + 64 * T1) == [] and len(layer) == 0


# client INVITE


def test_invite_client_timer_a_doubles_and_timer_b_times_out():
    layer = TransactionLayer()
    tx = layer.send_request(request("INVITE"), PEER, 0.0)
    assert len(layer.data_to_send()) == 1
    events, times = run_until(layer, 64 * T1)
    assert times == [T1 * (2**n - 1) for n in range(1, 7)]  # 0.5, 1.5, 3.5, 7.5, 15.5, 31.5
    assert events == [TransactionTimedOut(tx)]
    assert tx.state == "terminated" and len(layer) == 0


def test_invite_client_provisional_stops_retransmission():
    layer = TransactionLayer()
    tx = layer.send_request(request("INVITE"), PEER, 0.0)
    layer.data_to_send()
    [ringing] = layer.receive(response_to(tx.request, 180, to_tag="b"), PEER, 0.1)
    assert isinstance(ringing, ResponseReceived) and ringing.transaction is tx
    assert layer.next_deadline() is None  # proceeding: the TU decides how long to ring


def test_invite_client_acks_error_and_absorbs_its_retransmission():
    layer = TransactionLayer()
    tx = layer.send_request(request("INVITE"), PEER, 0.0)
    layer.data_to_send()
    busy = response_to(tx.request, 486, to_tag="b")
    [event] = layer.receive(busy, PEER, 0.2)
    assert event.response.status == 486
    [ack] = sent(layer)
    assert ack.method == "ACK" and ack.headers.get("CSeq") == "1 ACK"
    assert ack.headers.get_all("Via")[0] == tx.request.headers.get_all("Via")[0]
    assert ack.headers.get("To").endswith("tag=b")
    assert layer.receive(busy, PEER, 0.5) == []
    assert [m.method for m in sent(layer)] == ["ACK"]
    assert layer.next_deadline() == pytest.approx(32.2)


def test_invite_client_passes_2xx_retransmissions_up_in_accepted_state():
    layer = TransactionLayer()
    tx = layer.send_request(request("INVITE"), PEER, 0.0)
    ok = response_to(tx.request, 200, to_tag="b")
    assert len(layer.receive(ok, PEER, 0.1)) == 1
    assert len(layer.receive(ok, PEER, 0.6)) == 1  # the TU ACKs it again
    layer.poll(0.1 + 64 * T1)
    assert len(layer) == 0
    [stray] = layer.receive(ok, PEER, 40)
    assert stray.transaction is None


# client non-INVITE


def test_non_invite_client_timer_e_caps_at_t2_and_timer_f_times_out():
    layer = TransactionLayer()
    tx = layer.send_request(request("OPTIONS"), PEER, 0.0)
    layer.data_to_send()
    events, times = run_until(layer, 64 * T1)
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert gaps[:4] == [0.5, 1.0, 2.0, 4.0] and set(gaps[4:]) == {T2}
    assert events == [TransactionTimedOut(tx)]


def test_non_invite_client_proceeding_retransmits_at_t2_then_timer_k():
    layer = TransactionLayer()
    tx = layer.send_request(request("BYE"), PEER, 0.0)
    layer.data_to_send()
    layer.receive(response_to(tx.request, 100), PEER, 0.1)
    layer.poll(0.5)  # E fires: from now on every T2
    assert layer.next_deadline() == pytest.approx(0.5 + T2)
    [final] = layer.receive(response_to(tx.request, 200), PEER, 1.0)
    assert final.response.status == 200
    assert layer.receive(response_to(tx.request, 200), PEER, 1.1) == []
    assert layer.next_deadline() == pytest.approx(1.0 + T4)


def test_same_branch_cannot_start_two_client_transactions():
    layer = TransactionLayer()
    layer.send_request(request("OPTIONS"), PEER, 0.0)
    with pytest.raises(ValueError):
        layer.send_request(request("OPTIONS"), PEER, 0.0)
    with pytest.raises(ValueError):
        layer.send_request(request("ACK"), PEER, 0.0)


# reliable transport (TCP): no retransmissions but the 2xx's, no lingering states


def test_over_tcp_requests_and_error_responses_are_sent_once():
    layer = TransactionLayer()
    tx = layer.send_request(request("OPTIONS"), PEER, 0.0, reliable=True)
    assert len(sent(layer)) == 1
    events, times = run_until(layer, 64 * T1)
    assert times == [] and events == [TransactionTimedOut(tx)]  # Timer F still runs
    [event] = layer.receive(request("INVITE", branch="z9hG4bKtcp"), PEER, 0.0, reliable=True)
    layer.respond(event.transaction, response_to(event.transaction.request, 486), 0.0)
    assert len(sent(layer)) == 1
    layer.receive(request("ACK", branch="z9hG4bKtcp"), PEER, 0.1, reliable=True)
    events, times = run_until(layer, 0.1)  # Timer I is zero: the transaction is gone at once
    assert times == [] and len(layer) == 0


def test_over_tcp_a_2xx_is_still_retransmitted_until_acked():
    layer = TransactionLayer()
    [event] = layer.receive(request("INVITE"), PEER, 0.0, reliable=True)
    layer.respond(event.transaction, response_to(event.transaction.request, 200, to_tag="t"), 0.0)
    layer.data_to_send()
    _, times = run_until(layer, 1.0)
    assert times == [T1]  # §13.3.1.4: the TU's 2xx retransmission is end to end
