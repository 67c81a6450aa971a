"""X-Twilio-Signature checks, through the twilio SDK's RequestValidator.

The signed string is the full URL Twilio requested (scheme, host, path and the query string
exactly as sent) followed by each POST parameter's name and value, sorted by name; HMAC-SHA1
keyed with the account's auth token, base64. The SDK accepts the URL with and without an
explicit port, since Twilio is inconsistent about including it.
"""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import RequestValidator

SIGNATURE_HEADER = "X-Twilio-Signature"


def sign(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The signature Twilio would send for a request to `url` with form `params`."""
    return RequestValidator(auth_token).compute_signature(url, params)


def verify_webhook(
    auth_token: str, url: str, params: Mapping[str, str], signature: str | None
) -> bool:
    """True if `signature` is Twilio's for a POST to `url` with form `params`.

    `params` may be a multi-dict with `getlist` (Starlette's FormData) for repeated names.
    """
    if not signature:
        return False
    return RequestValidator(auth_token).validate(url, params, signature)


def verify_stream_upgrade(auth_token: str, stream_url: str, signature: str | None) -> bool:
    """True if `signature` signs the WebSocket upgrade: the exact `<Stream url>`, no params."""
    if not signature:
        return False
    return RequestValidator(auth_token).validate(stream_url, {}, signature)
