from xml.etree import ElementTree as ET

import pytest

from providers.twilio.twiml import (
    connect_stream_twiml,
    dial_twiml,
    reject_twiml,
    say_and_hangup_twiml,
)

DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'


def parse(document: str) -> ET.Element:
    assert document.startswith(DECLARATION)
    root = ET.fromstring(document)
    assert root.tag == "Response"
    return root


def test_connect_stream_carries_url_and_parameters() -> None:
    url = "wss://gw.example.com/twilio/media?agent=sales&x=<1>"
    params = {"token": "a.b&c\"<d>'e\n", "agent": "sales"}
    root = parse(connect_stream_twiml(url, params))
    [connect] = root
    assert connect.tag == "Connect"
    [stream] = connect
    assert stream.tag == "Stream"
    assert stream.attrib == {"url": url}
    assert [(p.tag, p.attrib) for p in stream] == [
        ("Parameter", {"name": "token", "value": params["token"]}),
        ("Parameter", {"name": "agent", "value": "sales"}),
    ]


def test_connect_stream_without_parameters() -> None:
    [connect] = parse(connect_stream_twiml("wss://gw.example.com/twilio/media", {}))
    assert [child.tag for child in connect[0]] == []


@pytest.mark.parametrize("url", ["https://gw.example.com/twilio/media", "gw.example.com/x", ""])
def test_stream_url_must_be_a_websocket_url(url: str) -> None:
    with pytest.raises(ValueError, match="ws://"):
        connect_stream_twiml(url, {})


def test_characters_xml_cannot_carry_are_refused() -> None:
    with pytest.raises(ValueError, match="parameter value"):
        connect_stream_twiml("wss://gw.example.com/twilio/media", {"token": "a\x00b"})
    with pytest.raises(ValueError, match="text"):
        say_and_hangup_twiml("bell\x07")


def test_say_then_hangup() -> None:
    text = "Sorry, the agent <sales> & support are busy."
    root = parse(say_and_hangup_twiml(text))
    assert [(child.tag, child.text) for child in root] == [("Say", text), ("Hangup", None)]


@pytest.mark.parametrize("reason", ["busy", "rejected"])
def test_reject(reason: str) -> None:
    [reject] = parse(reject_twiml(reason))
    assert (reject.tag, reject.attrib) == ("Reject", {"reason": reason})


def test_reject_default_is_busy_and_reason_is_checked() -> None:
    assert parse(reject_twiml())[0].attrib == {"reason": "busy"}
    with pytest.raises(ValueError, match="reason"):
        reject_twiml("go away")


def test_dial_a_number_with_caller_id() -> None:
    [dial] = parse(dial_twiml("+14155550123", caller_id="+14155550100"))
    assert (dial.tag, dial.attrib) == ("Dial", {"callerId": "+14155550100"})
    assert [(noun.tag, noun.text) for noun in dial] == [("Number", "+14155550123")]


def test_dial_a_sip_uri_without_caller_id() -> None:
    uri = "sip:agent@pbx.example.com;transport=tls?X-Ticket=a&b"
    [dial] = parse(dial_twiml(uri))
    assert dial.attrib == {}
    assert [(noun.tag, noun.text) for noun in dial] == [("Sip", uri)]


@pytest.mark.parametrize(
    "to",
    ["14155550123", "+0155550123", "+1415555012345678", "sip:pbx.example.com", "tel:+1415",
     "sips:a@b.com", "+1415<Hangup/>", "sip:a@b c", ""],
)
def test_dial_refuses_targets_twilio_cannot_dial(to: str) -> None:
    with pytest.raises(ValueError, match=r"E\.164"):
        dial_twiml(to)


def test_dial_caller_id_must_be_xml_text() -> None:
    with pytest.raises(ValueError, match="caller_id"):
        dial_twiml("+14155550123", caller_id="+1\x00")
