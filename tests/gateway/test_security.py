"""Call tokens (HMAC-signed claims) and the API key check."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.security import (
    CallClaims,
    InvalidToken,
    api_key_matches,
    issue_call_token,
    verify_call_token,
)

SECRET = "s3cret-for-tests"
NOW = 1_700_000_000


def token(**overrides) -> str:
    fields = {"call_id": "cg_abc", "provider": "twilio", "agent": "sales", "ttl_secs": 300}
    return issue_call_token(SECRET, now=NOW, **(fields | overrides))


def signed(body: bytes) -> str:
    """A token whose signature is right but whose claims are whatever `body` is."""
    text = base64.urlsafe_b64encode(body).rstrip(b"=").decode()
    mac = hmac.new(SECRET.encode(), text.encode(), hashlib.sha256).digest()
    return f"{text}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def test_round_trip():
    claims = verify_call_token(SECRET, token(), now=NOW + 1)
    assert claims == CallClaims("cg_abc", "twilio", "sales", NOW + 300)


def test_non_ascii_claims_round_trip():
    claims = verify_call_token(SECRET, token(agent="agënt-☎"), now=NOW)
    assert claims.agent == "agënt-☎"


def test_tampered_body_is_rejected():
    body, mac = token().split(".")
    other_body = token(agent="admin").split(".")[0]
    with pytest.raises(InvalidToken, match="signature"):
        verify_call_token(SECRET, f"{other_body}.{mac}", now=NOW)
    flipped = body[:-1] + ("A" if body[-1] != "A" else "B")
    with pytest.raises(InvalidToken, match="signature"):
        verify_call_token(SECRET, f"{flipped}.{mac}", now=NOW)


def test_tampered_mac_is_rejected():
    body, mac = token().split(".")
    for forged in (mac[:-1] + ("A" if mac[-1] != "A" else "B"), mac[:-1], mac + "A", ""):
        with pytest.raises(InvalidToken):
            verify_call_token(SECRET, f"{body}.{forged}", now=NOW)


def test_wrong_secret_is_rejected():
    with pytest.raises(InvalidToken, match="signature"):
        verify_call_token("another-secret", token(), now=NOW)


def test_expiry():
    assert verify_call_token(SECRET, token(ttl_secs=60), now=NOW + 60).expires_at == NOW + 60
    with pytest.raises(InvalidToken, match="expired"):
        verify_call_token(SECRET, token(ttl_secs=60), now=NOW + 61)


def test_expiry_uses_the_wall_clock_by_default():
    fresh = issue_call_token(SECRET, "cg_1", "plivo", "default", ttl_secs=60)
    assert verify_call_token(SECRET, fresh).call_id == "cg_1"
    with pytest.raises(InvalidToken, match="expired"):
        verify_call_token(SECRET, token(ttl_secs=60))  # issued in 2023


@pytest.mark.parametrize(
    "malformed",
    [None, "", ".", "abc", "a.b.c", "x" * 2000 + ".y", token() + "é", "é" + token()],
)
def test_malformed_tokens(malformed: str | None):
    with pytest.raises(InvalidToken):
        verify_call_token(SECRET, malformed, now=NOW)


@pytest.mark.parametrize(
    "claims",
    [
        b"not json",
        b"[1, 2]",
        b"42",
        b"\xff",
        b'{"c": "x"}',
        b'{"c":"x","p":"t","a":"d","e":"soon"}',
        b'{"c":"x","p":"t","a":"d","e":Infinity}',
    ],
)
def test_signed_but_malformed_claims(claims: bytes):
    with pytest.raises(InvalidToken, match="malformed"):
        verify_call_token(SECRET, signed(claims), now=NOW)


@given(st.text(max_size=300))
def test_arbitrary_strings_raise_only_invalid_token(text: str):
    with pytest.raises(InvalidToken):
        verify_call_token(SECRET, text, now=NOW)


@given(st.text(alphabet="ABCxyz019-_=.é\x00 ", max_size=120))
def test_token_shaped_strings_raise_only_invalid_token(text: str):
    with pytest.raises(InvalidToken):
        verify_call_token(SECRET, text, now=NOW)


@given(st.binary(max_size=200))
def test_any_signed_body_is_claims_or_invalid_token(body: bytes):
    try:
        claims = verify_call_token(SECRET, signed(body), now=NOW)
    except InvalidToken:
        return
    assert isinstance(claims, CallClaims)


def test_api_key_matches():
    assert api_key_matches("key-123", "key-123")
    assert not api_key_matches("key-123", "key-124")
    assert not api_key_matches("key-123", "key-12")
    assert not api_key_matches("key-123", "key-1234")
    assert not api_key_matches("key-123", "")
    assert not api_key_matches("key-123", "ключ")
