import base64
import hashlib
import hmac

import pytest
from starlette.datastructures import FormData

from providers.twilio.signature import sign, verify_stream_upgrade, verify_webhook

TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
PUBLISHED = "RSOYDt4T1cUTdK1PDd93/VVr8B8="  # Twilio's worked example for these inputs


def by_the_docs(token: str, url: str, pairs: list[tuple[str, str]]) -> str:
    """The documented algorithm: URL, then each name+value sorted by name; HMAC-SHA1; base64."""
    data = url + "".join(name + value for name, value in sorted(pairs))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def test_sign_matches_the_documented_algorithm_and_published_vector() -> None:
    assert by_the_docs(TOKEN, URL, list(PARAMS.items())) == PUBLISHED
    assert sign(TOKEN, URL, PARAMS) == PUBLISHED


def test_verify_webhook_accepts_the_genuine_request() -> None:
    assert verify_webhook(TOKEN, URL, PARAMS, PUBLISHED)


@pytest.mark.parametrize(
    ("token", "url", "params", "signature"),
    [
        ("54321", URL, PARAMS, PUBLISHED),
        (TOKEN, URL.replace("foo=1", "foo=2"), PARAMS, PUBLISHED),
        (TOKEN, URL.replace("?foo=1&bar=2", ""), PARAMS, PUBLISHED),
        (TOKEN, URL.replace("https", "http"), PARAMS, PUBLISHED),
        (TOKEN, URL, {**PARAMS, "Digits": "1235"}, PUBLISHED),
        (TOKEN, URL, {**PARAMS, "Extra": ""}, PUBLISHED),
        (TOKEN, URL, PARAMS, None),
        (TOKEN, URL, PARAMS, ""),
        (TOKEN, URL, PARAMS, PUBLISHED[:-2]),
    ],
)
def test_verify_webhook_rejects_any_change(
    token: str, url: str, params: dict[str, str], signature: str | None
) -> None:
    assert not verify_webhook(token, url, params, signature)


def test_an_explicit_default_port_is_accepted_either_way() -> None:
    with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    assert verify_webhook(TOKEN, with_port, PARAMS, PUBLISHED)
    assert verify_webhook(TOKEN, URL, PARAMS, sign(TOKEN, with_port, PARAMS))


def test_repeated_form_names_from_a_starlette_form() -> None:
    pairs = [
        ("To", "+18005551212"),
        ("StatusCallbackEvent", "ringing"),
        ("StatusCallbackEvent", "answered"),
    ]
    signature = by_the_docs(TOKEN, URL, pairs)
    assert verify_webhook(TOKEN, URL, FormData(pairs), signature)
    assert not verify_webhook(TOKEN, URL, FormData(pairs[:2]), signature)


def test_stream_upgrade_signs_the_exact_stream_url_without_params() -> None:
    stream_url = "wss://gw.example.com/twilio/media?agent=sales"
    signature = by_the_docs(TOKEN, stream_url, [])
    assert verify_stream_upgrade(TOKEN, stream_url, signature)
    assert not verify_stream_upgrade(TOKEN, stream_url.replace("sales", "support"), signature)
    assert not verify_stream_upgrade(TOKEN, "wss://gw.example.com/twilio/media", signature)
    assert not verify_stream_upgrade("other", stream_url, signature)
    assert not verify_stream_upgrade(TOKEN, stream_url, None)
