"""ElevenLabs streaming TTS over the stream-input WebSocket, in telephone mu-law (ulaw_8000).

Stream-input is one utterance per socket: an opening message (voice settings), text in pieces,
an empty text to end the input, audio back as base64 JSON until `isFinal`. So one answer is one
socket: `open_answer()` lets the conversation send its sentences as the LLM produces them while
the audio of the first is already playing, and keeps the prosody of the whole answer.
`synthesize(text)` is the one-sentence case. Audio comes out as the vendor's mu-law bytes
(`stream_native`, for a pass-through to a mu-law telephone leg) or as 16 kHz PCM16.
Stopping the consumer (barge-in) closes the socket at once; nothing later is yielded.
"""

from __future__ import annotations

import base64
import json
import os
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
    MulawTTS,
    close_now,
    closed_error,
    kind_of_text,
    mulaw_to_pcm16k,
    open_socket,
    receive_json,
)

__all__ = ["ElevenLabsAnswer", "ElevenLabsTTS", "ElevenLabsTTSConfig"]

SERVICE = "elevenlabs"
DEFAULT_URL = "wss://api.elevenlabs.io"
_END_OF_INPUT = json.dumps({"text": ""})


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


class ElevenLabsTTS(MulawTTS):
    """Speaks text with one ElevenLabs voice. Holds no socket between answers."""

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
            raise ValueError("only ulaw_8000 is decoded here; it is what telephones carry")
        base = (base_url or os.environ.get("ELEVENLABS_URL") or DEFAULT_URL).rstrip("/")
        query = urlencode({"model_id": model_id, "output_format": output_format})
        self._url = f"{base}/v1/text-to-speech/{quote(voice_id, safe='')}/stream-input?{query}"
        self._headers = {"xi-api-key": api_key}
        self._voice_settings = voice_settings or {"stability": 0.5, "similarity_boost": 0.75}
        self._first_audio_timeout = first_audio_timeout_secs
        self._open_timeout = open_timeout_secs

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
        """Nothing to load: sockets open per answer."""

    async def open_answer(self) -> ElevenLabsAnswer:
        """A socket for one answer, opened and configured, ready for `send`."""
        ws = await open_socket(SERVICE, self._url, self._headers, self._open_timeout)
        answer = ElevenLabsAnswer(ws, self._first_audio_timeout)
        try:
            await ws.send(json.dumps({"text": " ", "voice_settings": self._voice_settings}))
        except ConnectionClosed as exc:
            await answer.cancel()
            raise closed_error(SERVICE, exc, midway=False) from exc
        return answer

    async def stream_native(self, text: str) -> AsyncIterator[bytes]:
        """`text` as the vendor's 8 kHz mu-law chunks, as they arrive."""
        if not text.strip():
            return
        answer = await self.open_answer()
        try:
            await answer.send(text)
            await answer.close()
            async with aclosing(answer.audio()) as audio:
                async for chunk in audio:
                    yield chunk
        finally:
            await answer.cancel()



class ElevenLabsAnswer:
    """One answer's socket: `send` sentences, `close` when the answer is complete, and read
    `audio()` (mu-law) or `pcm()` meanwhile, from another task. `cancel()` stops it all."""

    def __init__(self, ws: ClientConnection, first_audio_timeout: float) -> None:
        self._ws = ws
        self._wait = AudioWait(first_audio_timeout)
        self._closed = False
        self._cancelled = False

    async def send(self, text: str) -> None:
        """One piece of the answer (a sentence); generated at once (`flush`)."""
        if self._cancelled or not text.strip():
            return
        message = {"text": text.strip() + " ", "flush": True}
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

    async def audio(self) -> AsyncIterator[bytes]:
        """mu-law chunks until the vendor's final message."""
        try:
            while not self._cancelled:
                data = await receive_json(SERVICE, self._ws, self._wait)
                chunk = data.get("audio")
                if chunk:
                    self._wait.audio()
                    yield base64.b64decode(chunk)
                if data.get("isFinal"):
                    return
                if "error" in data and not chunk:
                    raise _vendor_error(data)
        except (ValueError, TypeError) as exc:  # bad base64 or field types
            raise ServiceError(SERVICE, "stream_broken", "malformed audio") from exc

    def pcm(self) -> AsyncIterator[bytes]:
        """16 kHz PCM16 chunks until the vendor's final message."""
        return mulaw_to_pcm16k(self.audio())

    async def _send(self, message: str) -> None:
        try:
            await self._ws.send(message)
        except ConnectionClosed as exc:
            raise closed_error(SERVICE, exc, midway=True) from exc


def _vendor_error(data: dict[str, Any]) -> ServiceError:
    words = f"{data.get('error', '')}: {data.get('message', '')}"
    kind = "timeout" if "timeout" in words else kind_of_text(words)
    return ServiceError(SERVICE, kind, words[:300])
