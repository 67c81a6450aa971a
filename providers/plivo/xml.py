"""Plivo XML answer documents, built with the plivo SDK's own XML elements.

References: https://www.plivo.com/docs/voice/xml/audiostream (the <Stream> element) and
https://www.plivo.com/docs/voice/xml/dial (<Dial> with its <Number> and <User> nouns).
"""

from __future__ import annotations

import re
from typing import Literal

from plivo import plivoxml

MAX_EXTRA_HEADERS_BYTES = 512
"""Plivo's limit on the encoded `extraHeaders` attribute."""

STREAM_CONTENT_TYPE = "audio/x-mulaw;rate=8000"

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_SIP_URI = re.compile(r"sip:[^\s@<>\"]+@[^\s<>\"]+")
_MAX_SIP_URI_CHARS = 254

_HEADER_TOKEN = re.compile(r"[A-Za-z0-9]+")
"""Plivo allows only [A-Za-z0-9] in extra header keys and values (`=` and `,` separate them)."""


class ExtraHeadersError(ValueError):
    """The extra headers cannot be carried by Plivo's <Stream extraHeaders>."""


def encode_extra_headers(headers: dict[str, str]) -> str:
    """`k=v,k2=v2` as Plivo wants it; raise ExtraHeadersError for what Plivo would not carry."""
    for key, value in headers.items():
        if not _HEADER_TOKEN.fullmatch(key):
            raise ExtraHeadersError(f"extra header name {key[:40]!r} is not [A-Za-z0-9]+")
        if not _HEADER_TOKEN.fullmatch(value):
            raise ExtraHeadersError(f"value of extra header {key!r} is not [A-Za-z0-9]+")
    encoded = ",".join(f"{key}={value}" for key, value in headers.items())
    size = len(encoded.encode("ascii"))
    if size > MAX_EXTRA_HEADERS_BYTES:
        raise ExtraHeadersError(
            f"extra headers take {size} bytes; Plivo allows {MAX_EXTRA_HEADERS_BYTES}"
        )
    return encoded


def stream_xml(
    stream_url: str,
    extra_headers: dict[str, str],
    *,
    status_callback_url: str | None = None,
) -> str:
    """Answer that connects the call to our WebSocket as a bidirectional 8 kHz mu-law stream.

    keepCallAlive makes Plivo hold the call for as long as the stream lives instead of moving on
    to (absent) later elements and hanging up.
    """
    stream = plivoxml.StreamElement(
        stream_url,
        bidirectional=True,
        keepCallAlive=True,
        contentType=STREAM_CONTENT_TYPE,
        extraHeaders=encode_extra_headers(extra_headers) if extra_headers else None,
        statusCallbackUrl=status_callback_url,
        statusCallbackMethod="POST" if status_callback_url else None,
    )
    return plivoxml.ResponseElement().add(stream).to_string(False)


def speak_and_hangup_xml(text: str) -> str:
    """Say `text` with Plivo's text-to-speech, then hang up (e.g. an unknown agent)."""
    response = plivoxml.ResponseElement()
    response.add(plivoxml.SpeakElement(text))
    response.add(plivoxml.HangupElement())
    return response.to_string(False)


def reject_xml(reason: Literal["busy", "rejected"] = "busy") -> str:
    """Refuse the call without answering it: the caller hears busy (or a rejection)."""
    return plivoxml.ResponseElement().add(plivoxml.HangupElement(reason=reason)).to_string(False)


def _plivo_number(number: str, what: str) -> str:
    """Plivo writes numbers as country code and digits, without the leading `+`."""
    if not _E164.fullmatch(number):
        raise ValueError(f"{what} must be an E.164 number (+14155550123)")
    return number.removeprefix("+")


def dial_xml(to: str, caller_id: str | None = None) -> str:
    """`<Dial>`: connect the caller to `to`, an E.164 number (`<Number>`) or a `sip:user@host`
    URI (`<User>`); what a transferred call's A leg runs. `caller_id` (E.164) is the number the
    transferee sees: one of the account's numbers, for PSTN."""
    if _E164.fullmatch(to):
        noun: plivoxml.PlivoXMLElement = plivoxml.NumberElement(_plivo_number(to, "to"))
    elif _SIP_URI.fullmatch(to) and len(to) <= _MAX_SIP_URI_CHARS:
        noun = plivoxml.UserElement(to)
    else:
        raise ValueError("to must be an E.164 number (+14155550123) or a sip:user@host URI")
    caller = _plivo_number(caller_id, "caller_id") if caller_id else None
    dial = plivoxml.DialElement(caller_id=caller).add(noun)
    return plivoxml.ResponseElement().add(dial).to_string(False)
