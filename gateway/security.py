"""Signed call tokens and the API key check.

A call token carries everything a media connection needs to find its call, so any instance
behind a load balancer can serve it; it is an HMAC-SHA256 over a compact JSON claim set.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass


class InvalidToken(Exception):
    """The token is malformed, forged or expired; the message says which (never the secret)."""


@dataclass(frozen=True, slots=True)
class CallClaims:
    call_id: str
    provider: str
    agent: str
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, body: str) -> str:
    return _b64(hmac.new(secret.encode(), body.encode("ascii"), hashlib.sha256).digest())


def issue_call_token(
    secret: str, call_id: str, provider: str, agent: str, ttl_secs: int, now: float | None = None
) -> str:
    expires_at = int((time.time() if now is None else now) + ttl_secs)
    claims = {"c": call_id, "p": provider, "a": agent, "e": expires_at}
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{body}.{_mac(secret, body)}"


def verify_call_token(secret: str, token: str | None, now: float | None = None) -> CallClaims:
    if not token or token.count(".") != 1 or len(token) > 1024 or not token.isascii():
        raise InvalidToken("missing or malformed call token")
    body, mac = token.split(".")
    if not hmac.compare_digest(mac, _mac(secret, body)):
        raise InvalidToken("call token signature does not match")
    try:
        claims = json.loads(_unb64(body))
        parsed = CallClaims(
            str(claims["c"]), str(claims["p"]), str(claims["a"]), int(claims["e"])
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidToken("call token claims are malformed") from exc
    if parsed.expires_at < (time.time() if now is None else now):
        raise InvalidToken("call token has expired")
    return parsed


def api_key_matches(configured: str, presented: str) -> bool:
    """Constant-time comparison of bearer keys."""
    return hmac.compare_digest(configured.encode(), presented.encode())
