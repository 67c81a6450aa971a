"""Signed call tokens and the API key check.

A call token carries everything a media connection needs to find its call, so any instance
behind a load balancer can serve it; it is an HMAC-SHA256 over a compact JSON claim set.
Its text form is `base64url(claims).base64url(mac)`; where a provider carries only letters and
digits (Plivo's `extraHeaders`), the same token travels in its alphanumeric transport form.
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
    except (ValueError, KeyError, TypeError, OverflowError) as exc:
        raise InvalidToken("call token claims are malformed") from exc
    if parsed.expires_at < (time.time() if now is None else now):
        raise InvalidToken("call token has expired")
    return parsed


def sign_claims(
    secret: str, purpose: str, claims: dict[str, str], ttl_secs: int, now: float | None = None
) -> str:
    """A short-lived signed token carrying `claims` for one `purpose` (e.g. a transfer target
    in a URL the provider fetches back). Its MAC also covers `purpose`, so a token made for one
    purpose (or a call token) never passes as another."""
    expires_at = int((time.time() if now is None else now) + ttl_secs)
    body = _b64(json.dumps({"e": expires_at, "v": claims}, separators=(",", ":")).encode())
    return f"{body}.{_mac(secret, f'{purpose}.{body}')}"


def verify_claims(
    secret: str, purpose: str, token: str | None, now: float | None = None
) -> dict[str, str]:
    """The claims of a `sign_claims` token; InvalidToken if forged, expired or malformed."""
    if not token or token.count(".") != 1 or len(token) > 1024 or not token.isascii():
        raise InvalidToken("missing or malformed token")
    body, mac = token.split(".")
    if not hmac.compare_digest(mac, _mac(secret, f"{purpose}.{body}")):
        raise InvalidToken("token signature does not match")
    try:
        decoded = json.loads(_unb64(body))
        expires_at, claims = int(decoded["e"]), decoded["v"]
    except (ValueError, KeyError, TypeError, OverflowError) as exc:
        raise InvalidToken("token claims are malformed") from exc
    if not isinstance(claims, dict) or not all(isinstance(v, str) for v in claims.values()):
        raise InvalidToken("token claims are malformed")
    if expires_at < (time.time() if now is None else now):
        raise InvalidToken("token has expired")
    return claims


_MAC_BYTES = hashlib.sha256().digest_size
_MAX_ALNUM_CHARS = 2048


def encode_token_alnum(token: str) -> str:
    """The token as lowercase hex of its raw claims followed by its raw MAC.

    Hex of the raw bytes (1.5x the token's length) rather than of the token's text (2x): a token
    for the longest agent name takes about 350 characters, well inside the 512 bytes Plivo allows
    for all extra headers together. Hex also survives any case folding on the way.
    """
    if token.count(".") != 1:
        raise InvalidToken("not a call token")
    body, mac = token.split(".")
    try:
        raw_mac = _unb64(mac)
        raw = _unb64(body) + raw_mac
    except ValueError as exc:
        raise InvalidToken("not a call token") from exc
    if len(raw_mac) != _MAC_BYTES:
        raise InvalidToken("not a call token")
    return raw.hex()


def decode_token_alnum(text: str | None) -> str:
    """The call token back from its alphanumeric form; verify it with `verify_call_token`."""
    if not text or len(text) > _MAX_ALNUM_CHARS or not (text.isascii() and text.isalnum()):
        raise InvalidToken("missing or malformed call token")
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise InvalidToken("missing or malformed call token") from exc
    if len(raw) <= _MAC_BYTES:
        raise InvalidToken("missing or malformed call token")
    return f"{_b64(raw[:-_MAC_BYTES])}.{_b64(raw[-_MAC_BYTES:])}"


def api_key_matches(configured: str, presented: str) -> bool:
    """Constant-time comparison of bearer keys."""
    return hmac.compare_digest(configured.encode(), presented.encode())
