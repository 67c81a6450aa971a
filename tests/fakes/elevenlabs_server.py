"""A loopback ElevenLabs stream-input server (`/v1/text-to-speech/{voice_id}/stream-input`).

It checks the `xi-api-key` header, requires the opening `{"text": " "}` message, buffers text
until a `flush` or the end of input (`{"text": ""}`), and answers with base64 audio messages
(with alignment) and finally `{"isFinal": true}`. Its "speech" is `bytes_per_char` mu-law
bytes per character (`audio_for`), so tests can check every byte and its order. Errors come as
the vendor's `{"message", "error", "code": 1008}` followed by a 1008 close.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

_LOG = logging.getLogger("tests.fakes.elevenlabs")
_LOG.setLevel(logging.INFO)  # websockets logs handshake headers (the key) at DEBUG


def audio_for(text: str, bytes_per_char: int = 80) -> bytes:
    """The fake's speech for `text`: one byte value per character, repeated."""
    return b"".join(bytes([0x20 + ord(ch) % 64]) * bytes_per_char for ch in text)


@dataclass
class Session:
    """What one connection saw."""

    voice_id: str
    query: dict[str, list[str]]
    messages: list[dict[str, Any]] = field(default_factory=list)
    first_audio_sent_at: float | None = None  # perf_counter, just before the send
    chunks_sent: int = 0
    final_sent: bool = False
    client_closed_early: bool = False


@dataclass
class ElevenLabsFake:
    api_key: str
    bytes_per_char: int = 80  # 10 ms of 8 kHz audio per character
    chunk_bytes: int = 400
    chunk_interval: float = 0.0
    first_audio_delay: float = 0.0
    auth_failure: Literal["close", "http"] = "close"
    drop_after_chunks: int | None = None
    malformed_after_chunks: int | None = None
    input_timeout: float = 20.0
    sessions: list[Session] = field(default_factory=list)
    _server: Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"ws://{host}:{port}"

    async def __aenter__(self) -> ElevenLabsFake:
        self._server = await serve(
            self._handle, "127.0.0.1", 0, process_request=self._check, logger=_LOG
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path).path.split("/")
        if len(parts) != 5 or parts[1:3] != ["v1", "text-to-speech"] or parts[4] != "stream-input":
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        if self.auth_failure == "http" and request.headers.get("xi-api-key") != self.api_key:
            return connection.respond(HTTPStatus.UNAUTHORIZED, '{"detail": "invalid_api_key"}')
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        url = urlsplit(ws.request.path)
        session = Session(url.path.split("/")[3], parse_qs(url.query))
        self.sessions.append(session)
        if ws.request.headers.get("xi-api-key") != self.api_key:
            await _error(ws, "invalid_api_key", "Invalid API key")
            return
        try:
            await self._serve(ws, session)
        except ConnectionClosed:
            session.client_closed_early = not session.final_sent

    async def _serve(self, ws: ServerConnection, session: Session) -> None:
        buffer = ""
        while True:
            try:
                raw = await asyncio.wait_for(ws.recv(), self.input_timeout)
            except TimeoutError:
                await _error(
                    ws,
                    "input_timeout_exceeded",
                    f"Have not received a new text input within the timeout of "
                    f"{self.input_timeout} seconds. Streaming input terminated.",
                )
                return
            message = json.loads(raw)
            session.messages.append(message)
            if len(session.messages) == 1:
                if message.get("text") != " ":
                    await _error(ws, "invalid_input_message", "First message must be ' '")
                    return
                continue
            text = message.get("text")
            if not isinstance(text, str):
                await _error(ws, "invalid_input_message", "Could not parse input message")
                return
            buffer += text
            if message.get("flush") or text == "":
                if not await self._speak(ws, session, buffer.strip()):
                    return
                buffer = ""
            if text == "":
                await ws.send(json.dumps({"isFinal": True}))
                session.final_sent = True
                await ws.close()
                return

    async def _speak(self, ws: ServerConnection, session: Session, text: str) -> bool:
        audio = audio_for(text, self.bytes_per_char)
        for offset in range(0, len(audio), self.chunk_bytes):
            if session.chunks_sent == 0 and self.first_audio_delay:
                await asyncio.sleep(self.first_audio_delay)
            elif self.chunk_interval:
                await asyncio.sleep(self.chunk_interval)
            if session.chunks_sent == self.drop_after_chunks:
                ws.transport.abort()
                return False
            if session.chunks_sent == self.malformed_after_chunks:
                await ws.send('{"audio": "')
            chunk = audio[offset : offset + self.chunk_bytes]
            message = json.dumps(
                {
                    "audio": base64.b64encode(chunk).decode(),
                    "isFinal": None,
                    "normalizedAlignment": _alignment(text, offset, self.bytes_per_char),
                    "alignment": _alignment(text, offset, self.bytes_per_char),
                }
            )
            if session.first_audio_sent_at is None:
                session.first_audio_sent_at = time.perf_counter()
            await ws.send(message)
            session.chunks_sent += 1
        return True


def _alignment(text: str, offset: int, bytes_per_char: int) -> dict[str, list[Any]]:
    ms_per_char = bytes_per_char / 8
    first = offset // bytes_per_char
    chars = list(text[first : first + 5])
    return {
        "chars": chars,
        "charStartTimesMs": [round((first + i) * ms_per_char) for i in range(len(chars))],
        "charsDurationsMs": [round(ms_per_char)] * len(chars),
    }


async def _error(ws: ServerConnection, error: str, message: str) -> None:
    await ws.send(json.dumps({"message": message, "error": error, "code": 1008}))
    await ws.close(1008, message[:120])
