"""TwiML documents Callgate answers Twilio's voice webhook with."""

from __future__ import annotations

import re
from urllib.parse import urlsplit
from xml.etree import ElementTree as ET

_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
REJECT_REASONS = frozenset({"busy", "rejected"})


def _text(value: str, what: str) -> str:
    """XML 1.0 cannot carry most control characters, escaped or not."""
    if _NOT_XML.search(value):
        raise ValueError(f"{what} contains a character XML cannot carry")
    return value


def _document(response: ET.Element) -> str:
    return _DECLARATION + ET.tostring(response, encoding="unicode")


def connect_stream_twiml(stream_url: str, parameters: dict[str, str]) -> str:
    """`<Connect><Stream>`: a bidirectional media stream to `stream_url` (ws:// or wss://).

    `parameters` arrive in the stream's `start.customParameters` (the call token travels so).
    """
    if urlsplit(stream_url).scheme not in ("wss", "ws"):
        raise ValueError("stream_url must be a ws:// or wss:// URL")
    response = ET.Element("Response")
    connect = ET.SubElement(response, "Connect")
    stream = ET.SubElement(connect, "Stream", url=_text(stream_url, "stream_url"))
    for name, value in parameters.items():
        ET.SubElement(
            stream,
            "Parameter",
            name=_text(name, "parameter name"),
            value=_text(value, "parameter value"),
        )
    return _document(response)


def say_and_hangup_twiml(text: str) -> str:
    """Speak `text` with Twilio's TTS, then hang up (unknown agent, errors, draining)."""
    response = ET.Element("Response")
    ET.SubElement(response, "Say").text = _text(text, "text")
    ET.SubElement(response, "Hangup")
    return _document(response)


def reject_twiml(reason: str = "busy") -> str:
    """Refuse the call unanswered (no billing): the caller hears a busy tone or a rejection."""
    if reason not in REJECT_REASONS:
        raise ValueError(f"reason must be one of {sorted(REJECT_REASONS)}")
    response = ET.Element("Response")
    ET.SubElement(response, "Reject", reason=reason)
    return _document(response)


_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_SIP_URI = re.compile(r"sip:[^\s@<>\"]+@[^\s<>\"]+")


def dial_twiml(to: str, caller_id: str | None = None) -> str:
    """`<Dial>`: connect the caller to `to`, an E.164 number (`<Number>`) or a `sip:user@host`
    URI (`<Sip>`); the transfer a live call is redirected to. `caller_id` is what the
    transferee sees (one of the account's numbers, for PSTN)."""
    if _E164.fullmatch(to):
        noun = "Number"
    elif _SIP_URI.fullmatch(to) and len(to) < 255:
        noun = "Sip"
    else:
        raise ValueError("to must be an E.164 number (+14155550123) or a sip:user@host URI")
    response = ET.Element("Response")
    attributes = {"callerId": _text(caller_id, "caller_id")} if caller_id else {}
    dial = ET.SubElement(response, "Dial", attributes)
    ET.SubElement(dial, noun).text = to
    return _document(response)
