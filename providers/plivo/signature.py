"""Plivo webhook signatures, version 3 (`X-Plivo-Signature-V3` with its nonce).

The signed string is built by the plivo SDK's own functions (`plivo.utils.signature_v3`): the
URL with its query sorted, then for POST the sorted body params concatenated, then `.` and the
nonce; HMAC-SHA256 with the auth token, base64. Plivo may send several comma-separated
signatures (one per auth token it knows, e.g. while a token is being rotated); one match is
enough. Comparison is constant-time, unlike the SDK's `validate_v3_signature`, which our tests
use as the reference.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from typing import Literal

from plivo.utils.signature_v3 import construct_get_url, construct_post_url, get_signature_v3

SIGNATURE_HEADER = "X-Plivo-Signature-V3"
NONCE_HEADER = "X-Plivo-Signature-V3-Nonce"

Params = Mapping[str, str | list[str]]
Method = Literal["GET", "POST"]


def _signed_url(url: str, params: Params | None, method: str) -> bytes:
    copy = dict(params or {})  # the SDK merges the query into the dict it is given
    if method.upper() == "GET":
        return construct_get_url(url, copy)
    return construct_post_url(url, copy)


def sign(
    auth_token: str, url: str, nonce: str, params: Params | None = None, method: Method = "POST"
) -> str:
    """The `X-Plivo-Signature-V3` value Plivo would send for this request."""
    digest = get_signature_v3(
        auth_token.encode(), _signed_url(url, params, method).decode(), nonce.encode()
    )
    return digest.decode("ascii")


def signature_headers(
    auth_token: str, url: str, params: Params | None = None, method: Method = "POST"
) -> dict[str, str]:
    """Both headers for a simulated Plivo request, with a fresh nonce."""
    nonce = secrets.token_hex(10)
    return {
        SIGNATURE_HEADER: sign(auth_token, url, nonce, params, method),
        NONCE_HEADER: nonce,
    }


def verify_webhook(
    auth_token: str,
    url: str,
    nonce: str,
    signature: str,
    params: Params | None,
    method: str = "POST",
) -> bool:
    """True if `signature` (possibly a comma-separated list) signs this request for the token.

    `url` is the full URL Plivo requested (public base + path + query string); `params` the
    POST form fields (ignored for GET, whose parameters are in the query).
    """
    if not (auth_token and nonce and signature) or method.upper() not in ("GET", "POST"):
        return False
    try:
        expected = sign(auth_token, url, nonce, params, method.upper())  # type: ignore[arg-type]
    except (ValueError, UnicodeError):
        return False  # a URL or field urllib cannot even parse was not signed by Plivo
    wanted = expected.encode("ascii")
    return any(
        hmac.compare_digest(wanted, candidate.strip().encode("utf-8", "replace"))
        for candidate in signature.split(",")
    )
