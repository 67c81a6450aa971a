"""Speech-to-text through any OpenAI-compatible `/audio/transcriptions` endpoint (OpenAI,
Groq, self-hosted faster-whisper servers): one multipart POST of a WAV per caller turn."""

from __future__ import annotations

import struct
import time
from typing import Literal

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from pipeline.cloud_errors import ServiceError, from_httpx
from pipeline.openai_endpoint import OpenAIEndpoint

log = structlog.get_logger()

SAMPLE_RATE = 16_000


class OpenAISTTConfig(BaseModel):
    """`stt: {provider: openai, ...}` of an agent file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Literal["openai"] = "openai"
    model: str = "whisper-1"
    base_url: str | None = None
    api_key: SecretStr | None = None
    language: str | None = "en"
    timeout_secs: float = Field(default=10, gt=0, le=120)


def wav_header(data_bytes: int, rate: int = SAMPLE_RATE) -> bytes:
    """The 44-byte RIFF header of 16-bit mono PCM at `rate` with `data_bytes` of samples."""
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,  # fmt chunk size
        1,  # PCM
        1,  # mono
        rate,
        rate * 2,  # byte rate
        2,  # block align
        16,  # bits per sample
        b"data",
        data_bytes,
    )


class OpenAISTT:
    def __init__(
        self,
        model: str = "whisper-1",
        base_url: str | None = None,
        api_key: str | None = None,
        language: str | None = "en",
        timeout_secs: float = 10,
    ) -> None:
        self._endpoint = OpenAIEndpoint("openai_stt", base_url, api_key)
        self._model = model
        self._language = language
        self._timeout = httpx.Timeout(timeout_secs)

    @classmethod
    def from_config(cls, config: OpenAISTTConfig) -> OpenAISTT:
        key = config.api_key.get_secret_value() if config.api_key else None
        return cls(config.model, config.base_url, key, config.language, config.timeout_secs)

    async def warm_up(self) -> None:
        await self._endpoint.warm_up()

    async def transcribe(self, pcm: bytes) -> str:
        """The text of one turn of 16 kHz PCM16 mono; raises `ServiceError`."""
        if len(pcm) < 2:
            return ""
        pcm = pcm[: len(pcm) & ~1]
        fields = {"model": self._model, "response_format": "json"}
        if self._language:
            fields["language"] = self._language
        started = time.perf_counter()
        try:
            response = await self._endpoint.client.post(
                "audio/transcriptions",
                headers=self._endpoint.headers,
                data=fields,
                files={"file": ("audio.wav", wav_header(len(pcm)) + pcm, "audio/wav")},
                timeout=self._timeout,
            )
        except httpx.HTTPError as exc:
            error = from_httpx("openai_stt", exc)
            log.warning("stt_failed", kind=error.kind, message=error.message)
            raise error from exc
        if not response.is_success:
            error = await self._endpoint.error(response)
            log.warning("stt_failed", kind=error.kind, status=error.status, message=error.message)
            raise error
        try:
            text = str(response.json()["text"]).strip()
        except (ValueError, KeyError, TypeError):
            error = ServiceError("openai_stt", "server", "answer has no text")
            log.warning("stt_failed", kind=error.kind, status=response.status_code)
            raise error from None
        log.info(
            "stt_transcribed",
            audio_ms=len(pcm) * 1000 // (2 * SAMPLE_RATE),
            ms=round((time.perf_counter() - started) * 1000),
            chars=len(text),
        )
        return text
