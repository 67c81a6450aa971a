"""Purpose-bound signed claims (`sign_claims` / `verify_claims`), e.g. a transfer target."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.security import (
    InvalidToken,
    issue_call_token,
    sign_claims,
    verify_call_token,
    verify_claims,
)

SECRET = "s3cret-for-tests"
NOW = 1_700_000_000
TARGET = {"to": "+15551230000", "caller_id": "+15005550006", "call": "0f1e-uuid"}


def token(purpose: str = "transfer", ttl_secs: int = 120, **claims: str) -> str:
    return sign_claims(SECRET, purpose, claims or TARGET, ttl_secs, now=NOW)


def signed(body: bytes, purpose: str = "transfer") -> str:
    """Right signature, claims of our choosing."""
    text = base64.urlsafe_b64encode(body).rstrip(b"=").decode()
    mac = hmac.new(SECRET.encode(), f"{purpose}.{text}".encode(), hashlib.sha256).digest()
    return f"{text}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def test_round_trip_and_url_safe():
    text = token()
    assert verify_claims(SECRET, "transfer", text, now=NOW + 120) == TARGET
    assert all(c.isalnum() or c in "-_." for c in text)  # travels in a query string as is


def test_expiry():
    with pytest.raises(InvalidToken, match="expired"):
        verify_claims(SECRET, "transfer", token(), now=NOW + 121)
    fresh = sign_claims(SECRET, "transfer", {"to": "x"}, 60)
    assert verify_claims(SECRET, "transfer", fresh) == {"to": "x"}


def test_other_purpose_secret_or_body_is_refused():
    with pytest.raises(InvalidToken, match="signature"):
        verify_claims(SECRET, "other", token(), now=NOW)
    with pytest.raises(InvalidToken, match="signature"):
        verify_claims("another-secret", "transfer", token(), now=NOW)
    mac = token().split(".")[1]
    premium = token(to="+19005550000").split(".")[0]
    with pytest.raises(InvalidToken, match="signature"):
        verify_claims(SECRET, "transfer", f"{premium}.{mac}", now=NOW)


def test_call_tokens_and_purpose_tokens_do_not_cross():
    call_token = issue_call_token(SECRET, "cg_1", "plivo", "default", 300, now=NOW)
    with pytest.raises(InvalidToken):
        verify_claims(SECRET, "transfer", call_token, now=NOW)
    with pytest.raises(InvalidToken):
        verify_call_token(SECRET, token(), now=NOW)


@pytest.mark.parametrize(
    "body",
    [b"nope", b"[]", b'{"e": 1}', b'{"e": "soon", "v": {}}', b'{"e": 1e999, "v": {}}',
     b'{"e": 1800000000, "v": []}', b'{"e": 1800000000, "v": {"to": 5}}'],
)
def test_signed_but_malformed_claims(body: bytes):
    with pytest.raises(InvalidToken, match="malformed"):
        verify_claims(SECRET, "transfer", signed(body), now=NOW)


@given(st.text(max_size=300))
def test_arbitrary_strings_raise_only_invalid_token(text: str):
    with pytest.raises(InvalidToken):
        verify_claims(SECRET, "transfer", text, now=NOW)


@given(st.binary(max_size=200))
def test_any_signed_body_is_claims_or_invalid_token(body: bytes):
    try:
        claims = verify_claims(SECRET, "transfer", signed(body), now=NOW)
    except InvalidToken:
        return
    assert isinstance(claims, dict) and all(isinstance(v, str) for v in claims.values())
