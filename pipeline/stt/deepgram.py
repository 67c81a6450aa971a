"""Deepgram live streaming STT: one WebSocket per call, fed the caller's 8 kHz mu-law as is.

The socket opens at pre-warm time (`connect()`) or on first use and lives for the whole call.
Caller audio goes out as it arrives (`feed_mulaw`, no decode, no resample); while none flows a
KeepAlive goes out every few seconds. Deepgram answers with interim and final results that
carry their times in the stream, so a turn's transcript is the final words that fall inside the
turn: `transcribe(turn_pcm)` sends Finalize (which flushes what Deepgram still holds), waits a
bounded time for the results it releases, and returns the words heard in the last
`len(turn_pcm)` worth of audio. Timing, not a reset, delimits turns, so a speculative
transcript that the conversation throws away costs the next one nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Literal
from urllib.parse import urlencode

import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from pipeline.cloud_errors import ServiceError
from pipeline.cloud_ws import closed_error, kind_of_text, open_socket, parse_json

__all__ = ["DeepgramSTT", "DeepgramSTTConfig"]

log = structlog.get_logger()

SERVICE = "deepgram"
DEFAULT_URL = "wss://api.deepgram.com"
_MULAW_RATE = 8000
_PCM16K_BYTES_PER_SEC = 32_000
_KEEPALIVE = json.dumps({"type": "KeepAlive"})
_FINALIZE = json.dumps({"type": "Finalize"})
_CLOSE_STREAM = json.dumps({"type": "CloseStream"})
_KEEP_WORDS_SECS = 130.0
"""Final words older than this are forgotten (longer than the longest turn)."""

Word = tuple[float, float, str]
"""(start, end, text) with times in seconds of audio fed since the call began."""


class DeepgramSTTConfig(BaseModel):
    """`stt:` of an agent file for Deepgram. Key and URL default to DEEPGRAM_API_KEY and
    DEEPGRAM_URL."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Literal["deepgram"] = "deepgram"
    model: str = "nova-3"
    language: str | None = None
    endpointing_ms: int = Field(default=300, ge=10, le=5000)
    utterance_end_ms: int | None = Field(default=None, ge=1000, le=5000)
    keepalive_secs: float = Field(default=4.0, gt=0, le=8)
    finalize_timeout_secs: float = Field(default=0.5, gt=0, le=5)
    api_key: SecretStr | None = None
    base_url: str | None = None


class DeepgramSTT:
    """One call's live transcription. `aclose()` when the call ends."""

    def __init__(
        self,
        api_key: str,
        *,
        model: str = "nova-3",
        language: str | None = None,
        endpointing_ms: int = 300,
        utterance_end_ms: int | None = None,
        base_url: str | None = None,
        keepalive_secs: float = 4.0,
        finalize_timeout_secs: float = 0.5,
        open_timeout_secs: float = 5.0,
        max_backlog_secs: float = 5.0,
        on_endpoint: Callable[[float], None] | None = None,
    ) -> None:
        params: dict[str, str] = {
            "encoding": "mulaw",
            "sample_rate": str(_MULAW_RATE),
            "channels": "1",
            "interim_results": "true",
            "punctuate": "true",
            "endpointing": str(endpointing_ms),
            "model": model,
        }
        if language:
            params["language"] = language
        if utterance_end_ms:
            params["utterance_end_ms"] = str(utterance_end_ms)
        base = (base_url or os.environ.get("DEEPGRAM_URL") or DEFAULT_URL).rstrip("/")
        self._url = f"{base}/v1/listen?{urlencode(params)}"
        self._headers = {"Authorization": f"Token {api_key}"}
        self._keepalive_secs = keepalive_secs
        self._finalize_timeout = finalize_timeout_secs
        self._open_timeout = open_timeout_secs
        self._max_backlog = int(max_backlog_secs * _MULAW_RATE)
        self._on_endpoint = on_endpoint
        self.last_speech_final_at: float | None = None
        """Monotonic time of Deepgram's last endpoint (speech_final or UtteranceEnd)."""
        self._outbox: deque[bytes | str] = deque()
        self._backlog = 0  # mu-law bytes queued, not yet sent
        self._fed = 0  # mu-law bytes fed since the call began (= samples)
        self._wakeup = asyncio.Event()
        self._started = asyncio.Event()  # first connection attempt finished (either way)
        self._task: asyncio.Task[None] | None = None
        self._error: ServiceError | None = None
        self._closing = False
        self._offset = 0.0  # where the current socket's stream time 0 is in call time
        self._finals: deque[Word] = deque()
        self._interim: list[Word] = []
        self._finalize: asyncio.Future[None] | None = None
        self._unfinalized = False  # audio went out since the last Finalize
        self._reconnects_left = 1

    @classmethod
    def from_config(cls, config: DeepgramSTTConfig, **kwargs: Any) -> DeepgramSTT:
        key = config.api_key.get_secret_value() if config.api_key else None
        return cls(
            key or os.environ.get("DEEPGRAM_API_KEY", ""),
            model=config.model,
            language=config.language,
            endpointing_ms=config.endpointing_ms,
            utterance_end_ms=config.utterance_end_ms,
            base_url=config.base_url,
            keepalive_secs=config.keepalive_secs,
            finalize_timeout_secs=config.finalize_timeout_secs,
            **kwargs,
        )

    @property
    def interim_text(self) -> str:
        """Deepgram's latest guess at the words not yet final."""
        return " ".join(word[2] for word in self._interim)

    async def warm_up(self) -> None:
        """Nothing to load: the socket opens per call, in `connect()`."""

    async def connect(self) -> None:
        """Opens the socket (once); raises ServiceError if that failed."""
        self._start()
        await self._started.wait()
        if self._error is not None:
            raise self._error

    def feed_mulaw(self, payload: bytes) -> None:
        """Queues caller audio (8 kHz mu-law) for Deepgram. Never blocks; opens the socket
        on first use. While the socket is down at most `max_backlog_secs` are held."""
        self._fed += len(payload)
        if self._error is not None or self._closing:
            return
        self._outbox.append(payload)
        self._backlog += len(payload)
        while self._backlog > self._max_backlog and isinstance(self._outbox[0], bytes):
            self._backlog -= len(self._outbox.popleft())
        self._unfinalized = True
        self._wakeup.set()
        self._start()

    async def transcribe(self, pcm: bytes) -> str:
        """The final words of the turn whose audio (16 kHz PCM16) is `pcm`: only its length
        matters, it places the turn at the end of the audio fed so far."""
        await self.connect()
        turn_start = self._fed / _MULAW_RATE - len(pcm) / _PCM16K_BYTES_PER_SEC
        if self._unfinalized:
            self._unfinalized = False
            if self._finalize is None or self._finalize.done():
                self._finalize = asyncio.get_running_loop().create_future()
            self._push(_FINALIZE)
        if self._finalize is not None and not self._finalize.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._finalize), self._finalize_timeout)
            except TimeoutError:
                log.info("stt_finalize_late", service=SERVICE, wait_ms=self._finalize_timeout * 1e3)
                return self._text_since(turn_start, with_interim=True)
        if self._error is not None:
            raise self._error
        return self._text_since(turn_start, with_interim=False)

    async def aclose(self) -> None:
        """Sends CloseStream, lets Deepgram answer briefly, then stops."""
        if self._closing:
            return
        self._closing = True
        task = self._task
        if task is None:
            return
        if self._error is None:
            self._push(_CLOSE_STREAM)
            with suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), 1.0)
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task

    def _push(self, control: str) -> None:
        self._outbox.append(control)
        self._wakeup.set()

    def _start(self) -> None:
        if self._task is None and not self._closing:
            self._task = asyncio.create_task(self._run(), name="deepgram-stt")

    def _text_since(self, turn_start: float, with_interim: bool) -> str:
        # a word belongs to the turn whose audio holds its middle
        words = [word for word in self._finals if word[0] + word[1] > 2 * turn_start]
        if with_interim:
            last_end = words[-1][1] if words else turn_start
            words += [word for word in self._interim if word[0] + word[1] > 2 * last_end]
        return " ".join(word[2] for word in words)

    async def _run(self) -> None:
        """Connects and serves the socket; reconnects once when it drops mid-call."""
        while True:
            try:
                ws = await open_socket(SERVICE, self._url, self._headers, self._open_timeout)
            except ServiceError as exc:
                self._fail(exc)
                return
            self._offset = (self._fed - self._backlog) / _MULAW_RATE
            self._started.set()
            log.info("stt_connected", service=SERVICE)
            error = await self._serve(ws)
            if self._closing:
                return
            if error.kind in ("auth", "rate_limited") or self._reconnects_left <= 0:
                self._fail(error)
                return
            self._reconnects_left -= 1
            self._interim = []
            log.warning("stt_reconnecting", service=SERVICE, kind=error.kind)

    async def _serve(self, ws: ClientConnection) -> ServiceError:
        """Runs one socket until it ends; returns why it ended."""
        sender = asyncio.create_task(self._send_loop(ws))
        try:
            async for message in ws:
                self._on_message(message)
            return ServiceError(SERVICE, "connection", "socket closed")
        except ConnectionClosed as exc:
            return closed_error(SERVICE, exc, midway=False)
        except ServiceError as exc:
            return exc
        finally:
            sender.cancel()
            with suppress(asyncio.CancelledError, ConnectionClosed):
                await sender
            await ws.close()

    async def _send_loop(self, ws: ClientConnection) -> None:
        outbox = self._outbox
        while True:
            if not outbox:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), self._keepalive_secs)
                except TimeoutError:
                    await ws.send(_KEEPALIVE)
                    continue
            while outbox:
                item = outbox.popleft()
                if isinstance(item, bytes):
                    self._backlog -= len(item)
                await ws.send(item)

    def _on_message(self, message: str | bytes) -> None:
        data = parse_json(SERVICE, message)
        kind = data.get("type")
        if kind == "Results":
            self._on_results(data)
        elif kind == "UtteranceEnd":
            self._endpoint()
        elif kind == "Error":
            text = str(data.get("description") or data.get("message") or "error")
            raise ServiceError(SERVICE, kind_of_text(text), text)

    def _on_results(self, data: dict[str, Any]) -> None:
        offset = self._offset
        try:
            alternative = data["channel"]["alternatives"][0]
            transcript = str(alternative["transcript"])
            start = offset + float(data["start"])
            end = start + float(data["duration"])
            words = [
                (offset + float(w["start"]), offset + float(w["end"]), _text(w))
                for w in alternative.get("words") or ()
            ]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ServiceError(SERVICE, "stream_broken", "malformed Results") from exc
        if not words and transcript:
            words = [(start, end, transcript)]
        if data.get("is_final"):
            self._finals.extend(words)
            self._interim = []
            self._reconnects_left = 1  # this socket works: a later drop may reconnect again
            horizon = self._fed / _MULAW_RATE - _KEEP_WORDS_SECS
            while self._finals and self._finals[0][1] < horizon:
                self._finals.popleft()
        else:
            self._interim = words
        if data.get("speech_final"):
            self._endpoint()
        if data.get("from_finalize") and self._finalize is not None and not self._finalize.done():
            self._finalize.set_result(None)

    def _endpoint(self) -> None:
        self.last_speech_final_at = now = time.monotonic()
        if self._on_endpoint is not None:
            self._on_endpoint(now)

    def _fail(self, error: ServiceError) -> None:
        log.warning("stt_failed", service=SERVICE, kind=error.kind, status=error.status)
        self._error = error
        self._started.set()
        if self._finalize is not None and not self._finalize.done():
            self._finalize.set_exception(error)
            self._finalize.exception()  # retrieved: the awaiting transcribe re-raises it


def _text(word: dict[str, Any]) -> str:
    return str(word.get("punctuated_word") or word["word"])
