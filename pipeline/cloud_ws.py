"""What the streaming cloud clients (Deepgram, ElevenLabs, Cartesia) share: opening their
WebSockets, turning socket failures into `ServiceError`s, and waiting for audio in time.

Credentials travel in headers only, never in the URL, and the socket library gets a logger that
never logs at debug level, so handshake headers (and the keys in them) are never written.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

from pipeline.cloud_errors import ErrorKind, ServiceError, http_error

_SOCKET_LOG = logging.getLogger("callgate.cloud_ws")
_SOCKET_LOG.setLevel(logging.INFO)  # websockets logs handshake headers at DEBUG

_AUTH_WORDS = ("auth", "api_key", "api key", "unauthorized", "forbidden", "permission")
_RATE_WORDS = ("rate", "quota", "too_many", "too many", "concurren", "limit")


async def open_socket(
    service: str, url: str, headers: dict[str, str], open_timeout: float
) -> ClientConnection:
    """Connects, mapping handshake failures: 401/403 -> auth, 429 -> rate_limited, other
    statuses -> server, unreachable -> connection, too slow -> timeout."""
    try:
        return await connect(
            url,
            additional_headers=headers,
            open_timeout=open_timeout,
            compression=None,  # audio does not compress; deflate only costs CPU
            max_size=4 * 1024 * 1024,
            logger=_SOCKET_LOG,
        )
    except InvalidStatus as exc:
        response = exc.response
        body = response.body.decode("utf-8", "replace")[:200] if response.body else ""
        headers = httpx.Headers(list(response.headers.raw_items()))
        message = body or "handshake refused"
        raise http_error(service, response.status_code, message, headers) from None
    except TimeoutError as exc:
        raise ServiceError(service, "timeout", "no handshake in time") from exc
    except (OSError, InvalidHandshake, InvalidURI) as exc:
        raise ServiceError(service, "connection", type(exc).__name__) from exc


async def close_now(ws: ClientConnection) -> None:
    """Closes without waiting long for the peer (barge-in): a close frame, else an abort."""
    try:
        async with asyncio.timeout(0.1):
            await ws.close()
    except TimeoutError:
        ws.transport.abort()


def kind_of_text(text: str, default: ErrorKind = "server") -> ErrorKind:
    """The kind of a vendor's error words (close reasons and error messages)."""
    lowered = text.lower()
    if any(word in lowered for word in _AUTH_WORDS):
        return "auth"
    if any(word in lowered for word in _RATE_WORDS):
        return "rate_limited"
    return default


def closed_error(service: str, exc: ConnectionClosed, midway: bool) -> ServiceError:
    """A socket the vendor closed: an error close code names its cause in the reason;
    a close without a close frame is a broken stream (midway) or a dropped connection."""
    received = exc.rcvd
    if received is None:
        return ServiceError(service, "stream_broken" if midway else "connection", "socket dropped")
    reason = received.reason or f"closed with code {received.code}"
    if received.code in (1000, 1001):
        return ServiceError(service, "stream_broken", f"closed early: {reason}")
    return ServiceError(service, kind_of_text(reason), f"{received.code} {reason}")


def parse_json(service: str, message: str | bytes) -> dict[str, Any]:
    """One JSON object from the vendor, or a stream_broken error."""
    try:
        value = json.loads(message)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ServiceError(service, "stream_broken", "malformed message") from exc
    if not isinstance(value, dict):
        raise ServiceError(service, "stream_broken", "message is not an object")
    return value


class AudioWait:
    """How long a TTS client may wait for audio: `timeout` from the first text to the first
    audio, and from the end of the input (or the last audio) to the next message. In between
    there is no limit: the LLM sets the pace of the sentences."""

    __slots__ = ("_closed_at", "_first_sent_at", "_last_audio_at", "_timeout")

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._first_sent_at: float | None = None
        self._closed_at: float | None = None
        self._last_audio_at: float | None = None

    @property
    def heard(self) -> bool:
        return self._last_audio_at is not None

    def sent(self) -> None:
        if self._first_sent_at is None:
            self._first_sent_at = time.monotonic()

    def closed(self) -> None:
        self.sent()
        self._closed_at = time.monotonic()

    def audio(self) -> None:
        self._last_audio_at = time.monotonic()

    def deadline(self) -> float | None:
        if self._last_audio_at is None and self._first_sent_at is not None:
            return self._first_sent_at + self._timeout
        if self._closed_at is not None:
            return max(self._closed_at, self._last_audio_at or 0.0) + self._timeout
        return None


_POLL_SECS = 0.25
"""How often a wait without a deadline looks again (text may have gone out meanwhile)."""


async def receive_json(service: str, ws: ClientConnection, wait: AudioWait) -> dict[str, Any]:
    """The next JSON message, within `wait`'s limits (else a timeout error)."""
    while True:
        deadline = wait.deadline()
        left = _POLL_SECS if deadline is None else deadline - time.monotonic()
        if left <= 0:
            raise ServiceError(service, "timeout", "no audio in time")
        try:
            async with asyncio.timeout(min(left, _POLL_SECS)):
                message = await ws.recv()  # cancellation-safe: no message is lost
        except TimeoutError:
            continue
        except ConnectionClosed as exc:
            raise closed_error(service, exc, midway=True) from exc
        return parse_json(service, message)
