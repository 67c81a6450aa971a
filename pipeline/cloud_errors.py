"""The one error type every cloud STT/LLM/TTS client raises, whatever the vendor.

The conversation decides what to do (apologise, retry later, fall back) from `kind` alone, so
vendor clients map their failures onto these kinds and keep the vendor's words in `message`.
"""

from __future__ import annotations

from typing import Literal

import httpx

ErrorKind = Literal["timeout", "auth", "rate_limited", "server", "stream_broken", "connection"]
"""timeout: no (first) answer in time; auth: 401/403; rate_limited: 429; server: any other
HTTP error status (4xx request errors included); stream_broken: the answer stopped or was
malformed part way; connection: the service could not be reached or dropped the connection."""


class ServiceError(Exception):
    """A cloud service failed. Never carries credentials: `message` is the vendor's text."""

    def __init__(
        self,
        service: str,
        kind: ErrorKind,
        message: str,
        status: int | None = None,
        retry_after_secs: float | None = None,
    ) -> None:
        self.service = service
        self.kind = kind
        self.status = status
        self.message = message
        self.retry_after_secs = retry_after_secs
        where = f"{service} {kind}" + (f" (HTTP {status})" if status is not None else "")
        super().__init__(f"{where}: {message}")


def http_error(
    service: str, status: int, message: str, headers: httpx.Headers | None = None
) -> ServiceError:
    """The error for an HTTP error status; `message` is what the vendor's body said."""
    kind: ErrorKind = "server"
    if status in (401, 403):
        kind = "auth"
    elif status == 429:
        kind = "rate_limited"
    return ServiceError(service, kind, message, status, _retry_after(headers))


def _retry_after(headers: httpx.Headers | None) -> float | None:
    """`Retry-After` in seconds when given as a number (the HTTP-date form is ignored)."""
    value = headers.get("retry-after") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def from_httpx(service: str, exc: httpx.HTTPError, in_body: bool = False) -> ServiceError:
    """Maps an httpx transport failure (not an HTTP status) onto a `ServiceError`;
    `in_body`: it happened while reading an answer that had begun."""
    name = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return ServiceError(service, "timeout", name)
    return ServiceError(service, "stream_broken" if in_body else "connection", f"{name}: {exc}")
