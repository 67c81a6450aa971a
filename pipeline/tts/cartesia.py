"""Cartesia streaming TTS over its WebSocket, in telephone mu-law (pcm_mulaw, 8 kHz).

One socket per call carries every answer (Cartesia multiplexes contexts on a socket; opening
it ahead with `connect()` saves the handshake on the first answer). `synthesize` speaks a
sentence as one context; a context (`open_context`) can also take several pieces, sent with
`continue: true`, until an empty transcript with `continue: false` ends it. The audio of a
context streams back as base64 `chunk` messages until `done`, and goes to the telephone leg as
the vendor's mu-law bytes. Barge-in sends the context's cancel and drops whatever of it still
arrives; the next context reads past those leftovers by context id.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing, suppress
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from pipeline.cloud_errors import ServiceError, http_error
from pipeline.cloud_ws import (
    AudioWait,
    close_now,
    closed_error,
    kind_of_text,
    open_socket,
    receive_json,
)
from pipeline.frames import AudioEncoding

__all__ = ["CartesiaContext", "CartesiaTTS", "CartesiaTTSConfig"]

log = structlog.get_logger()

SERVICE = "cartesia"
DEFAULT_URL = "wss://api.cartesia.ai"
DEFAULT_VERSION = "2025-04-16"
_OUTPUT_FORMAT = {"container": "raw", "encoding": "pcm_mulaw", "sample_rate": 8000}


class CartesiaTTSConfig(BaseModel):
    """`tts:` of an agent file for Cartesia. Key and URL default to CARTESIA_API_KEY and
    CARTESIA_URL."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Literal["cartesia"] = "cartesia"
    voice_id: str
    model_id: str = "sonic-2"
    language: str = "en"
    version: str = DEFAULT_VERSION
    first_audio_timeout_secs: float = Field(default=5.0, gt=0, le=30)
    api_key: SecretStr | None = None
    base_url: str | None = None


class CartesiaTTS:
    """Speaks text with one Cartesia voice over the call's one socket. `aclose()` at the end."""

    encoding: AudioEncoding = "ulaw8k"

    def __init__(
        self,
        voice_id: str,
        model_id: str,
        api_key: str,
        base_url: str | None = None,
        version: str = DEFAULT_VERSION,
        language: str = "en",
        first_audio_timeout_secs: float = 5.0,
        open_timeout_secs: float = 5.0,
    ) -> None:
        base = (base_url or os.environ.get("CARTESIA_URL") or DEFAULT_URL).rstrip("/")
        self._url = f"{base}/tts/websocket"
        self._headers = {"X-API-Key": api_key, "Cartesia-Version": version}
        self._request = {
            "model_id": model_id,
            "voice": {"mode": "id", "id": voice_id},
            "output_format": _OUTPUT_FORMAT,
            "language": language,
        }
        self._first_audio_timeout = first_audio_timeout_secs
        self._open_timeout = open_timeout_secs
        self._ws: ClientConnection | None = None
        self._reading = asyncio.Lock()  # one answer reads the socket at a time

    @classmethod
    def from_config(cls, config: CartesiaTTSConfig) -> CartesiaTTS:
        key = config.api_key.get_secret_value() if config.api_key else None
        return cls(
            config.voice_id,
            config.model_id,
            key or os.environ.get("CARTESIA_API_KEY", ""),
            base_url=config.base_url,
            version=config.version,
            language=config.language,
            first_audio_timeout_secs=config.first_audio_timeout_secs,
        )

    async def warm_up(self) -> None:
        """Nothing to load: the socket opens per call, in `connect()`."""

    async def connect(self) -> None:
        """Opens the call's socket unless it is open (again, if it was closed meanwhile)."""
        if self._ws is None or self._ws.close_code is not None:
            self._ws = await open_socket(SERVICE, self._url, self._headers, self._open_timeout)
            log.info("tts_connected", service=SERVICE)

    async def aclose(self) -> None:
        if self._ws is not None:
            await close_now(self._ws)

    async def open_context(self) -> CartesiaContext:
        """A new context on the call's socket, ready for `send`."""
        await self.connect()
        assert self._ws is not None
        return CartesiaContext(self._ws, self._request, self._reading, self._first_audio_timeout)

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """`text` as the vendor's 8 kHz mu-law chunks, as they arrive."""
        if not text.strip():
            return
        context = await self.open_context()
        try:
            await context.send(text, last=True)
            async with aclosing(context.audio()) as audio:
                async for chunk in audio:
                    yield chunk
        finally:
            await context.cancel()


class CartesiaContext:
    """One context: `send` sentences, `close` when the answer is complete, and read `audio()`
    (mu-law) meanwhile, from another task. `cancel()` stops generation."""

    def __init__(
        self,
        ws: ClientConnection,
        request: dict[str, Any],
        reading: asyncio.Lock,
        first_audio_timeout: float,
    ) -> None:
        self.context_id = str(uuid.uuid4())
        self._ws = ws
        self._request = request
        self._reading = reading
        self._wait = AudioWait(first_audio_timeout)
        self._closed = False
        self._done = False
        self._cancelled = False

    async def send(self, text: str, last: bool = False) -> None:
        """One piece of the answer; `last` ends the context with it."""
        if self._cancelled or self._closed or not text.strip():
            return
        await self._send(text.strip() + " ", last)

    async def close(self) -> None:
        """No more text: Cartesia finishes the audio and ends with `done`."""
        if not self._cancelled and not self._closed:
            await self._send("", True)

    async def cancel(self) -> None:
        """Barge-in: stop generating this context; what still arrives of it is dropped."""
        if self._cancelled:
            return
        self._cancelled = True
        if self._done or self._ws.close_code is not None:
            return
        with suppress(ConnectionClosed):
            await self._ws.send(json.dumps({"context_id": self.context_id, "cancel": True}))

    async def audio(self) -> AsyncIterator[bytes]:
        """mu-law chunks of this context until `done`."""
        async with self._reading:
            while not self._cancelled and not self._done:
                data = await receive_json(SERVICE, self._ws, self._wait)
                if data.get("context_id") != self.context_id:
                    continue  # leftovers of a cancelled answer
                kind = data.get("type")
                if kind == "chunk":
                    chunk = _decode(data.get("data"))
                    self._wait.audio()
                    yield chunk
                elif kind == "error":
                    self._done = True
                    raise _vendor_error(data)
                if data.get("done") or kind == "done":
                    self._done = True

    async def _send(self, transcript: str, last: bool) -> None:
        message = {
            **self._request,
            "context_id": self.context_id,
            "transcript": transcript,
            "continue": not last,
        }
        try:
            await self._ws.send(json.dumps(message))
        except ConnectionClosed as exc:
            raise closed_error(SERVICE, exc, midway=self._wait.heard) from exc
        if last:
            self._closed = True
            self._wait.closed()
        else:
            self._wait.sent()


def _decode(data: object) -> bytes:
    if not isinstance(data, str):
        raise ServiceError(SERVICE, "stream_broken", "chunk without data")
    try:
        return base64.b64decode(data, validate=True)
    except ValueError as exc:
        raise ServiceError(SERVICE, "stream_broken", "malformed chunk data") from exc


def _vendor_error(data: dict[str, Any]) -> ServiceError:
    words = str(data.get("error") or data.get("message") or data.get("title") or "error")[:300]
    status = data.get("status_code")
    if isinstance(status, int) and status >= 400:
        return http_error(SERVICE, status, words)
    return ServiceError(SERVICE, kind_of_text(words), words)
