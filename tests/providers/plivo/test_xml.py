import xml.etree.ElementTree as ET

import pytest

from providers.plivo.xml import (
    MAX_EXTRA_HEADERS_BYTES,
    ExtraHeadersError,
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
