import xml.etree.ElementTree as ET

import pytest

from providers.plivo.xml import (
    MAX_EXTRA_HEADERS_BYTES,
    ExtraHeadersError,
    dial_xml,
    encode_extra_headers,
    reject_xml,
    speak_and_hangup_xml,
    stream_xml,
)

STREAM_URL = "wss://gw.example.com/plivo/media?agent=sales&x=1"


def test_stream_xml_is_a_bidirectional_mulaw_stream_with_headers() -> None:
    doc = ET.fromstring(stream_xml(STREAM_URL, {"callToken": "abc123", "v": "1"}))
    assert doc.tag == "Response"
    [stream] = list(doc)
    assert stream.tag == "Stream"
    assert stream.text == STREAM_URL  # the & survives escaping
    assert stream.attrib == {
        "bidirectional": "true",
        "keepCallAlive": "true",
        "contentType": "audio/x-mulaw;rate=8000",
        "extraHeaders": "callToken=abc123,v=1",
    }


def test_stream_xml_with_status_callback_and_no_headers() -> None:
    text = stream_xml(STREAM_URL, {}, status_callback_url="https://gw.example.com/plivo/status")
    [stream] = list(ET.fromstring(text))
    assert "extraHeaders" not in stream.attrib
    assert stream.attrib["statusCallbackUrl"] == "https://gw.example.com/plivo/status"
    assert stream.attrib["statusCallbackMethod"] == "POST"


def test_extra_headers_up_to_the_limit_pass() -> None:
    value = "a" * (MAX_EXTRA_HEADERS_BYTES - len("k="))
    assert len(encode_extra_headers({"k": value})) == MAX_EXTRA_HEADERS_BYTES


def test_extra_headers_over_the_limit_are_refused() -> None:
    value = "a" * (MAX_EXTRA_HEADERS_BYTES - len("k=") + 1)
    with pytest.raises(ExtraHeadersError, match="513 bytes"):
        stream_xml(STREAM_URL, {"k": value})


@pytest.mark.parametrize(
    "headers",
    [
        {"call-token": "abc"},
        {"token": "a.b"},
        {"token": "a,b=c"},
        {"token": ""},
        {"": "x"},
        {"tökén": "x"},
        {"token": "abc_def"},
    ],
)
def test_extra_headers_outside_plivo_charset_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ExtraHeadersError):
        encode_extra_headers(headers)


def test_speak_and_hangup_escapes_text() -> None:
    doc = ET.fromstring(speak_and_hangup_xml('Sorry, agent "x" <unknown> & gone.'))
    assert [child.tag for child in doc] == ["Speak", "Hangup"]
    assert doc[0].text == 'Sorry, agent "x" <unknown> & gone.'


def test_reject_is_a_busy_hangup() -> None:
    doc = ET.fromstring(reject_xml())
    [hangup] = list(doc)
    assert hangup.tag == "Hangup" and hangup.attrib == {"reason": "busy"}
    assert ET.fromstring(reject_xml("rejected"))[0].attrib == {"reason": "rejected"}


def test_dial_xml_dials_a_number_as_plivo_writes_it() -> None:
    doc = ET.fromstring(dial_xml("+15551230000", caller_id="+15005550006"))
    [dial] = list(doc)
    assert dial.tag == "Dial" and dial.attrib == {"callerId": "15005550006"}
    [number] = list(dial)
    assert (number.tag, number.text, number.attrib) == ("Number", "15551230000", {})


def test_dial_xml_dials_a_sip_uri_as_a_user_without_caller_id() -> None:
    uri = "sip:ext&42@pbx.example.com;transport=tls"
    [dial] = list(ET.fromstring(dial_xml(uri)))
    assert dial.attrib == {}
    [user] = list(dial)
    assert (user.tag, user.text) == ("User", uri)  # the & survives escaping


@pytest.mark.parametrize(
    "to",
    [
        "15551230000",
        "+0555123",
        "+1555",
        "+1555123000012345",
        "+1555123000<",
        "sip:pbx.example.com",
        'sip:a"b@pbx.example.com',
        "sip:a@b c",
        "sip:a@" + "h" * 260,
        "tel:+15551230000",
        "",
    ],
)
def test_dial_xml_refuses_what_is_not_a_number_or_sip_uri(to: str) -> None:
    with pytest.raises(ValueError, match="to must be"):
        dial_xml(to)


@pytest.mark.parametrize("caller_id", ["15005550006", "sip:me@pbx.example.com", '+1" x="y'])
def test_dial_xml_refuses_a_caller_id_that_is_not_e164(caller_id: str) -> None:
    with pytest.raises(ValueError, match="caller_id must be"):
        dial_xml("+15551230000", caller_id=caller_id)
