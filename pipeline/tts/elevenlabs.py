"""ElevenLabs streaming TTS over the stream-input WebSocket, in telephone mu-law (ulaw_8000).

Stream-input is one utterance per socket: an opening message (voice settings), text in pieces
(each ending at a word boundary), `flush` to have what was sent spoken now, an empty text to
end the input, audio back as base64 JSON (with the characters each chunk speaks, `alignment`)
until `isFinal`. So one answer is one socket: `open_answer()` takes the LLM's words as they
stream, a flush per sentence, while the first sentence already plays, and keeps the prosody of
the whole answer. `connect()` opens the next answer's socket ahead (pre-warming): the greeting
and the first answer pay no handshake. `synthesize(text)` is the one-sentence case.
Audio stays the vendor's mu-law bytes, for the telephone leg as they are.
Stopping the consumer (barge-in) closes the socket at once; nothing later is yielded.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, Literal
from urllib.parse import quote, urlencode

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from pipeline.cloud_errors import ServiceError
from pipeline.cloud_ws import (
    AudioWait,
    close_now,
    closed_error,
    kind_of_text,
    open_socket,
    receive_json,
)
from pipeline.frames import AudioEncoding

__all__ = ["ElevenLabsAnswer", "ElevenLabsTTS", "ElevenLabsTTSConfig"]

SERVICE = "elevenlabs"
DEFAULT_URL = "wss://api.elevenlabs.io"
_END_OF_INPUT = json.dumps({"text": ""})
WARM_SOCKET_MAX_AGE_SECS = 15.0
"""A socket opened ahead is used within this age: the vendor closes one that gets no text for
20 s (its default inactivity timeout)."""


class ElevenLabsTTSConfig(BaseModel):
    """`tts:` of an agent file for ElevenLabs. Key and URL default to ELEVENLABS_API_KEY and
    ELEVENLABS_URL."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Literal["elevenlabs"] = "elevenlabs"
    voice_id: str
    model_id: str = "eleven_flash_v2_5"
    stability: float = Field(default=0.5, ge=0, le=1)
    similarity_boost: float = Field(default=0.75, ge=0, le=1)
    speed: float = Field(default=1.0, ge=0.7, le=1.2)
    first_audio_timeout_secs: float = Field(default=5.0, gt=0, le=30)
    api_key: SecretStr | None = None
    base_url: str | None = None


class ElevenLabsTTS:
    """Speaks text with one ElevenLabs voice: a socket per answer, the next one opened ahead
    by `connect()`. `aclose()` at the end of the call."""

    encoding: AudioEncoding = "ulaw8k"

    def __init__(
        self,
        voice_id: str,
        model_id: str,
        api_key: str,
        base_url: str | None = None,
        output_format: str = "ulaw_8000",
        voice_settings: dict[str, float] | None = None,
        first_audio_timeout_secs: float = 5.0,
        open_timeout_secs: float = 5.0,
    ) -> None:
        if output_format != "ulaw_8000":
            raise ValueError("only ulaw_8000 is spoken here; it is what telephones carry")
        base = (base_url or os.environ.get("ELEVENLABS_URL") or DEFAULT_URL).rstrip("/")
        query = urlencode({"model_id": model_id, "output_format": output_format})
        self._url = f"{base}/v1/text-to-speech/{quote(voice_id, safe='')}/stream-input?{query}"
        self._headers = {"xi-api-key": api_key}
        self._voice_settings = voice_settings or {"stability": 0.5, "similarity_boost": 0.75}
        self._first_audio_timeout = first_audio_timeout_secs
        self._open_timeout = open_timeout_secs
        self._warm: tuple[ClientConnection, float] | None = None
        """A socket opened ahead, with when it opened (monotonic)."""

    @classmethod
    def from_config(cls, config: ElevenLabsTTSConfig) -> ElevenLabsTTS:
        key = config.api_key.get_secret_value() if config.api_key else None
        return cls(
            config.voice_id,
            config.model_id,
            key or os.environ.get("ELEVENLABS_API_KEY", ""),
            base_url=config.base_url,
            voice_settings={
                "stability": config.stability,
                "similarity_boost": config.similarity_boost,
                "speed": config.speed,
            },
            first_audio_timeout_secs=config.first_audio_timeout_secs,
        )

    async def warm_up(self) -> None:
        """Nothing to load: sockets open per call, in `connect()`."""

    async def connect(self) -> None:
        """Opens the next answer's socket now (pre-warming), unless a fresh one waits."""
        if self._take_warm(keep=True) is None:
            self._warm = (await self._open(), time.monotonic())

    async def aclose(self) -> None:
        warm, self._warm = self._warm, None
        if warm is not None:
            await close_now(warm[0])

    async def open_answer(self) -> ElevenLabsAnswer:
        """A socket for one answer, opened and configured (or the one opened ahead)."""
        ws = self._take_warm(keep=False) or await self._open()
        return ElevenLabsAnswer(ws, self._first_audio_timeout)

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """`text` as the vendor's 8 kHz mu-law chunks, as they arrive."""
        if not text.strip():
            return
        answer = await self.open_answer()
        try:
            await answer.send(text, flush=True)
            await answer.close()
            async with aclosing(answer.audio()) as audio:
                async for chunk, _ in audio:
                    yield chunk
        finally:
            await answer.cancel()

    def _take_warm(self, keep: bool) -> ClientConnection | None:
        """The socket opened ahead if it is still usable (kept for later with `keep`)."""
        if self._warm is None:
            return None
        ws, opened_at = self._warm
        if ws.close_code is None and time.monotonic() - opened_at < WARM_SOCKET_MAX_AGE_SECS:
            if not keep:
                self._warm = None
            return ws
        self._warm = None
        ws.transport.abort()  # stale: the vendor is about to close it anyway
        return None

    async def _open(self) -> ClientConnection:
        ws = await open_socket(SERVICE, self._url, self._headers, self._open_timeout)
        try:
            await ws.send(json.dumps({"text": " ", "voice_settings": self._voice_settings}))
        except ConnectionClosed as exc:
            await close_now(ws)
            raise closed_error(SERVICE, exc, midway=False) from exc
        return ws


class ElevenLabsAnswer:
    """One answer's socket: `send` text as it is written, `close` when the answer is complete,
    and read `audio()` meanwhile, from another task. `cancel()` stops it all."""

    def __init__(self, ws: ClientConnection, first_audio_timeout: float) -> None:
        self._ws = ws
        self._wait = AudioWait(first_audio_timeout)
        self._closed = False
        self._cancelled = False

    async def send(self, text: str, flush: bool = False) -> None:
        """A piece of the answer (whole words); `flush` has all sent so far spoken now."""
        if self._cancelled or self._closed:
            return
        if not text.strip():
            if not flush:
                return
            text = " "
        elif not text.endswith(" "):
            text += " "  # the vendor reads a piece as ending at a word boundary
        message: dict[str, Any] = {"text": text}
        if flush:
            message["flush"] = True
        await self._send(json.dumps(message))
        self._wait.sent()

    async def close(self) -> None:
        """No more text: the vendor finishes the audio and ends with `isFinal`."""
        if self._cancelled or self._closed:
            return
        self._closed = True
        await self._send(_END_OF_INPUT)
        self._wait.closed()

    async def cancel(self) -> None:
        """Barge-in: the socket closes now and whatever is in flight is dropped."""
        self._cancelled = True
        await close_now(self._ws)

    async def audio(self) -> AsyncIterator[tuple[bytes, int | None]]:
        """mu-law chunks, each with the non-blank characters it speaks, until `isFinal`."""
        try:
            while not self._cancelled:
                data = await receive_json(SERVICE, self._ws, self._wait)
                chunk = data.get("audio")
                if chunk:
                    self._wait.audio()
                    yield base64.b64decode(chunk), _spoken_chars(data.get("alignment"))
                if data.get("isFinal"):
                    return
                if "error" in data and not chunk:
                    raise _vendor_error(data)
        except (ValueError, TypeError) as exc:  # bad base64 or field types
            raise ServiceError(SERVICE, "stream_broken", "malformed audio") from exc

    async def _send(self, message: str) -> None:
        try:
            await self._ws.send(message)
        except ConnectionClosed as exc:
            raise closed_error(SERVICE, exc, midway=True) from exc


def _spoken_chars(alignment: object) -> int | None:
    """Non-blank characters of the vendor's `alignment.chars` (None if it sent none)."""
    if not isinstance(alignment, dict):
        return None
    chars = alignment.get("chars")
    if not isinstance(chars, list):
        return None
    return sum(1 for ch in chars if isinstance(ch, str) and ch.strip())


def _vendor_error(data: dict[str, Any]) -> ServiceError:
    words = f"{data.get('error', '')}: {data.get('message', '')}"
    kind = "timeout" if "timeout" in words else kind_of_text(words)
    return ServiceError(SERVICE, kind, words[:300])
