import base64
import hashlib
import hmac

from hypothesis import given, settings
from hypothesis import strategies as st
from plivo.utils.signature_v3 import validate_v3_signature

from providers.plivo.signature import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    sign,
    signature_headers,
    verify_webhook,
)

TOKEN = "MzYxNjg0ZDc3ZWJiZDE3NTk1YTc3ZjkzYjAyMDQ4"
URL = "https://gw.example.com/plivo/answer?agent=sales"
NONCE = "05429567804466091622"
PARAMS = {
    "CallUUID": "fad58e02-b297-11e4-96d7-377ffe01233f",
    "From": "14155550199",
    "To": "14155550100",
    "Direction": "inbound",
}


def test_sign_matches_the_documented_construction() -> None:
    # POST: URL with its sorted query, then sorted body params as keyvalue pairs, "." nonce.
    body = "".join(f"{k}{PARAMS[k]}" for k in sorted(PARAMS))
    base = f"https://gw.example.com/plivo/answer?agent=sales.{body}.{NONCE}"
    digest = hmac.new(TOKEN.encode(), base.encode(), hashlib.sha256).digest()
    assert sign(TOKEN, URL, NONCE, PARAMS) == base64.b64encode(digest).decode()


def test_sign_verifies_with_the_sdk_validator() -> None:
    for method in ("POST", "GET"):
        signature = sign(TOKEN, URL, NONCE, PARAMS, method)
        assert validate_v3_signature(method, URL, NONCE, TOKEN, signature, dict(PARAMS))
        assert verify_webhook(TOKEN, URL, NONCE, signature, PARAMS, method)


def test_any_of_several_signatures_is_enough() -> None:
    good = sign(TOKEN, URL, NONCE, PARAMS)
    other = sign("another-token", URL, NONCE, PARAMS)
    assert verify_webhook(TOKEN, URL, NONCE, f"{other},{good}", PARAMS)
    assert verify_webhook(TOKEN, URL, NONCE, f"{other}, {good}", PARAMS)
    assert not verify_webhook(TOKEN, URL, NONCE, f"{other},{other}", PARAMS)


def test_tampering_fails() -> None:
    good = sign(TOKEN, URL, NONCE, PARAMS)
    assert not verify_webhook("wrong", URL, NONCE, good, PARAMS)
    assert not verify_webhook(TOKEN, URL + "&agent=admin", NONCE, good, PARAMS)
    assert not verify_webhook(TOKEN, URL.replace("https", "http"), NONCE, good, PARAMS)
    assert not verify_webhook(TOKEN, URL, NONCE + "1", good, PARAMS)
    assert not verify_webhook(TOKEN, URL, NONCE, good, {**PARAMS, "To": "19005550100"})
    assert not verify_webhook(TOKEN, URL, NONCE, good, {**PARAMS, "Extra": "1"})
    assert not verify_webhook(TOKEN, URL, NONCE, good, PARAMS, method="GET")
    assert not verify_webhook(TOKEN, URL, NONCE, good, PARAMS, method="PUT")


def test_missing_parts_fail_without_raising() -> None:
    good = sign(TOKEN, URL, NONCE, PARAMS)
    assert not verify_webhook("", URL, NONCE, good, PARAMS)
    assert not verify_webhook(TOKEN, URL, "", good, PARAMS)
    assert not verify_webhook(TOKEN, URL, NONCE, "", PARAMS)
    assert not verify_webhook(TOKEN, "http://[::1", NONCE, good, PARAMS)
    assert not verify_webhook(TOKEN, URL, NONCE, "ünïcode,\x00", PARAMS)


def test_params_are_not_mutated_and_lists_are_signed() -> None:
    params = {"Digits": ["1", "2"], "CallUUID": "u"}
    signature = sign(TOKEN, URL, NONCE, params)
    assert params == {"Digits": ["1", "2"], "CallUUID": "u"}
    assert verify_webhook(TOKEN, URL, NONCE, signature, params)
    assert validate_v3_signature("POST", URL, NONCE, TOKEN, signature, dict(params))


def test_signature_headers_for_the_simulated_caller() -> None:
    headers = signature_headers(TOKEN, URL, PARAMS)
    assert set(headers) == {SIGNATURE_HEADER, NONCE_HEADER}
    assert headers[NONCE_HEADER] != signature_headers(TOKEN, URL, PARAMS)[NONCE_HEADER]
    assert verify_webhook(TOKEN, URL, headers[NONCE_HEADER], headers[SIGNATURE_HEADER], PARAMS)


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


@settings(max_examples=150, deadline=None)
@given(
    params=st.dictionaries(st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,8}", fullmatch=True), _text),
    query=st.from_regex(
        r"(?:[a-z]{1,5}=[a-z0-9]{0,5}&){0,3}[a-z]{1,5}=[a-z0-9]{0,5}", fullmatch=True
    ),
    nonce=st.from_regex(r"[0-9]{1,20}", fullmatch=True),
    method=st.sampled_from(["GET", "POST"]),
    same_token=st.booleans(),
)
def test_agrees_with_the_sdk_validator(params, query, nonce, method, same_token) -> None:
    url = f"https://gw.example.com/plivo/answer?{query}"
    signature = sign(TOKEN if same_token else "other", url, nonce, params, method)
    expected = validate_v3_signature(method, url, nonce, TOKEN, signature, dict(params))
    assert expected is same_token
    assert verify_webhook(TOKEN, url, nonce, signature, params, method) is expected
