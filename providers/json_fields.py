"""Reading the fields of a provider's JSON media message, with the provider's own error."""

from __future__ import annotations

from typing import Any

from providers.events import ProtocolError


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
