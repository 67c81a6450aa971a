"""Reading Twilio's and Plivo's JSON media messages, raising the provider's own error.

Both send JSON text frames with base64 G.711 payloads and DTMF keys; what differs (event
names, fields, acknowledgements) stays in each provider's protocol module.
"""

from __future__ import annotations

import binascii
import json
from typing import Any

from pipeline.dtmf import DTMF_DIGITS
from providers.events import ProtocolError

_DTMF_KEYS = frozenset(DTMF_DIGITS)

MAX_MESSAGE_CHARS = 64 * 1024
"""Largest inbound text frame parsed. Either provider's biggest message (`start`, with custom
parameters or extra headers) is a few KiB; a 20 ms media message is about 300 characters."""


def parse_message(message: str, error: type[ProtocolError]) -> dict[str, Any]:
    """One inbound text frame as a JSON object; an oversized frame breaks the stream."""
    if len(message) > MAX_MESSAGE_CHARS:
        raise error(f"message of {len(message)} chars exceeds {MAX_MESSAGE_CHARS}", fatal=True)
    try:
        msg = json.loads(message)
    except (ValueError, RecursionError) as exc:
        raise error("message is not valid JSON", fatal=False) from exc
    if not isinstance(msg, dict):
        raise error("message is not a JSON object", fatal=False)
    return msg


def payload_audio(media: dict[str, Any], error: type[ProtocolError]) -> bytes:
    """The G.711 bytes of a media object's base64 `payload`."""
    payload = media.get("payload")
    if not isinstance(payload, str):
        raise error("media payload is missing or not a string", fatal=False)
    try:
        return binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise error("media payload is not valid base64", fatal=False) from exc


def dtmf_key(msg: dict[str, Any], error: type[ProtocolError]) -> str:
    """The key of a `dtmf` message, upper-cased."""
    digit = require_object(msg, "dtmf", error).get("digit")
    if not isinstance(digit, str) or digit.upper() not in _DTMF_KEYS:
        raise error("dtmf digit is missing or not a DTMF key", fatal=False)
    return digit.upper()


def require_object(
    msg: dict[str, Any], key: str, error: type[ProtocolError], *, fatal: bool = False
) -> dict[str, Any]:
    value = msg.get(key)
    if not isinstance(value, dict):
        raise error(f"{key!r} is missing or not an object", fatal=fatal)
    return value


def require_string(
    obj: dict[str, Any], key: str, error: type[ProtocolError], *, fatal: bool = False
) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise error(f"{key!r} is missing or not a string", fatal=fatal)
    return value


def int_or_none(value: object) -> int | None:
    """Counters and timestamps arrive as numbers or decimal strings; junk becomes None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and 0 < len(value) <= 20 and value.isdigit() and value.isascii():
        return int(value)
    return None
