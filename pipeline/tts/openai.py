"""Text-to-speech through any OpenAI-compatible `/audio/speech` endpoint, streamed.

`response_format: pcm` is raw 24 kHz 16-bit mono little-endian; it is resampled to 16 kHz
as the bytes arrive, so the first audio plays before the answer is complete.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Literal

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from pipeline.cloud_errors import ServiceError, from_httpx
from pipeline.frames import AudioEncoding
from pipeline.openai_endpoint import OpenAIEndpoint
from pipeline.resample import StreamResampler

log = structlog.get_logger()

PCM_RATE = 24_000
"""The rate of the API's `pcm` format."""


class OpenAITTSConfig(BaseModel):
    """`tts: {provider: openai, ...}` of an agent file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Literal["openai"] = "openai"
    model: str = "gpt-4o-mini-tts"
    voice: str = "alloy"
    base_url: str | None = None
    api_key: SecretStr | None = None
    instructions: str | None = None
    """How to speak (tone, pace); gpt-4o-mini-tts only."""
    timeout_secs: float = Field(default=10, gt=0, le=120)


class OpenAITTS:
    encoding: AudioEncoding = "pcm16k"

    def __init__(
        self,
        model: str = "gpt-4o-mini-tts",
        voice: str = "alloy",
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_secs: float = 10,
        instructions: str | None = None,
    ) -> None:
        self._endpoint = OpenAIEndpoint("openai_tts", base_url, api_key)
        self._model = model
        self._voice = voice
        self._instructions = instructions
        self._timeout = httpx.Timeout(timeout_secs)

    @classmethod
    def from_config(cls, config: OpenAITTSConfig) -> OpenAITTS:
        key = config.api_key.get_secret_value() if config.api_key else None
        return cls(
            config.model,
            config.voice,
            config.base_url,
            key,
            config.timeout_secs,
            config.instructions,
        )

    async def warm_up(self) -> None:
        await self._endpoint.warm_up()

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        """16 kHz PCM16 chunks as the answer streams in; raises `ServiceError`. Closing the
        generator (or cancelling its consumer) closes the HTTP stream at once."""
        body = {"model": self._model, "input": text, "voice": self._voice, "response_format": "pcm"}
        if self._instructions:
            body["instructions"] = self._instructions
        started = time.perf_counter()
        resampler = StreamResampler(PCM_RATE, 16_000)
        odd = b""  # a sample split across two network chunks
        received = 0
        answering = False  # the answer's body has begun
        try:
            async with self._endpoint.client.stream(
                "POST",
                "audio/speech",
                json=body,
                headers=self._endpoint.headers,
                timeout=self._timeout,
            ) as response:
                if not response.is_success:
                    raise await self._endpoint.error(response)
                answering = True
                async for chunk in response.aiter_bytes():
                    received += len(chunk)
                    if odd:
                        chunk = odd + chunk
                    odd = chunk[-1:] if len(chunk) & 1 else b""
                    pcm = resampler.process(chunk[:-1] if odd else chunk)
                    if pcm:
                        yield pcm
        except httpx.HTTPError as exc:
            error = from_httpx("openai_tts", exc, in_body=answering)
            log.warning("tts_failed", kind=error.kind, message=error.message)
            raise error from exc
        except ServiceError as exc:
            log.warning("tts_failed", kind=exc.kind, status=exc.status, message=exc.message)
            raise
        tail = resampler.flush()
        if tail:
            yield tail
        log.info(
            "tts_synthesized",
            chars=len(text),
            audio_ms=received * 1000 // (2 * PCM_RATE),
            ms=round((time.perf_counter() - started) * 1000),
        )

