"""The call token's alphanumeric transport form (Plivo's extraHeaders carry only [A-Za-z0-9])."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.security import (
    InvalidToken,
    decode_token_alnum,
    encode_token_alnum,
    issue_call_token,
    verify_call_token,
)
from providers.plivo.xml import MAX_EXTRA_HEADERS_BYTES, encode_extra_headers

SECRET = "s3cret-for-tests"
NOW = 1_700_000_000


def token(agent: str = "sales", ttl: int = 300) -> str:
    return issue_call_token(SECRET, "cg_" + "f" * 32, "plivo", agent, ttl, now=NOW)


def test_round_trip_verifies():
    original = token()
    encoded = encode_token_alnum(original)
    assert encoded.isascii() and encoded.isalnum() and encoded == encoded.lower()
    assert decode_token_alnum(encoded) == original
    assert decode_token_alnum(encoded.upper()) == original  # case folding on the way is harmless
    claims = verify_call_token(SECRET, decode_token_alnum(encoded), now=NOW)
    assert (claims.provider, claims.agent) == ("plivo", "sales")


def test_longest_agent_name_fits_plivos_budget_with_the_call_id():
    encoded = encode_token_alnum(token(agent="a" * 64, ttl=86_400))
    assert len(encoded) < 2 * len(token(agent="a" * 64))  # more compact than hex of the text
    headers = {"calltoken": encoded, "callid": ("cg_" + "f" * 32).encode().hex()}
    assert len(encode_extra_headers(headers)) <= MAX_EXTRA_HEADERS_BYTES - 64


def test_a_flipped_bit_fails_verification():
    raw = bytearray(bytes.fromhex(encode_token_alnum(token())))
    for index in (0, len(raw) // 2, len(raw) - 1):
        tampered = bytearray(raw)
        tampered[index] ^= 0x01
        with pytest.raises(InvalidToken):
            verify_call_token(SECRET, decode_token_alnum(tampered.hex()), now=NOW)


@pytest.mark.parametrize(
    "text",
    [None, "", "xyz", "abc", "ab cd", "ab" * 32, "ab" * 2000, "\u0661\u0662" * 40, "0x" + "ab" * 9],
)
def test_malformed_alnum_tokens(text: str | None):
    with pytest.raises(InvalidToken):
        decode_token_alnum(text)


@pytest.mark.parametrize("text", ["", "no-dot", "a.b.c", "abc.def"])
def test_only_call_tokens_are_encoded(text: str):
    with pytest.raises(InvalidToken):
        encode_token_alnum(text)


@given(st.text(max_size=600))
def test_arbitrary_strings_raise_only_invalid_token(text: str):
    try:
        decoded = decode_token_alnum(text)
    except InvalidToken:
        return
    with pytest.raises(InvalidToken):
        verify_call_token(SECRET, decoded, now=NOW)
