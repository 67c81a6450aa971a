"""A loopback Cartesia TTS WebSocket server (`/tts/websocket`) speaking the documented protocol.

Auth as documented: an API key in `X-API-Key` (or `Authorization: Bearer`, or the `api_key`
query parameter) and a version in `Cartesia-Version` (or `cartesia_version`); a bad key is
refused with HTTP 401 at the upgrade. Generation requests carry a `context_id`; inputs of one
context are spoken in order, each as base64 `chunk` messages, and the input with
`continue: false` ends the context with `done`. `{"context_id", "cancel": true}` stops a
context. The speech is `audio_for(transcript)`, so tests can check every byte and its order.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

_LOG = logging.getLogger("tests.fakes.cartesia")
_LOG.setLevel(logging.INFO)  # websockets logs handshake headers (the key) at DEBUG
_REQUIRED = ("model_id", "transcript", "voice", "output_format", "context_id")


def audio_for(text: str, bytes_per_char: int = 80) -> bytes:
    """The fake's speech for `text`: one byte value per character, repeated."""
    return b"".join(bytes([0x40 + ord(ch) % 64]) * bytes_per_char for ch in text)


@dataclass
class Context:
    inputs: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    chunks_sent: int = 0
    done: bool = False
    cancelled: bool = False


@dataclass
class CartesiaFake:
    api_key: str
    bytes_per_char: int = 80
    chunk_bytes: int = 400
    chunk_interval: float = 0.0
    first_audio_delay: float = 0.0
    drop_after_chunks: int | None = None
    malformed_after_chunks: int | None = None
    connections: int = 0
    headers: list[dict[str, str]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    contexts: dict[str, Context] = field(default_factory=dict)
    first_audio_sent_at: dict[str, float] = field(default_factory=dict)
    _server: Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"ws://{host}:{port}"

    async def __aenter__(self) -> CartesiaFake:
        self._server = await serve(
            self._handle, "127.0.0.1", 0, process_request=self._check, logger=_LOG
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path != "/tts/websocket":
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        query = parse_qs(url.query)
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        keys = {request.headers.get("X-API-Key"), bearer, *query.get("api_key", [])}
        if self.api_key not in keys:
            return connection.respond(HTTPStatus.UNAUTHORIZED, '{"error": "Invalid API key"}')
        if not (request.headers.get("Cartesia-Version") or query.get("cartesia_version")):
            return connection.respond(HTTPStatus.BAD_REQUEST, '{"error": "Missing version"}')
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        self.headers.append(dict(ws.request.headers.raw_items()))
        try:
            async for raw in ws:
                message = json.loads(raw)
                self.messages.append(message)
                await self._on_message(ws, message)
        except ConnectionClosed:
            pass
        finally:
            for context in self.contexts.values():
                if context.task is not None:
                    context.task.cancel()

    async def _on_message(self, ws: ServerConnection, message: dict[str, Any]) -> None:
        context_id = message.get("context_id")
        if message.get("cancel"):
            context = self.contexts.get(context_id)
            if context is not None and context.task is not None:
                context.cancelled = True
                context.task.cancel()
            return
        missing = [name for name in _REQUIRED if name not in message]
        if missing or message["output_format"].get("encoding") != "pcm_mulaw":
            await ws.send(_error(context_id, f"Invalid request: {missing or 'encoding'}", 400))
            return
        if message["model_id"] == "no-such-model":
            await ws.send(_error(context_id, "Invalid model: The model is not valid", 400))
            return
        context = self.contexts.setdefault(context_id, Context())
        if context.task is None:
            context.task = asyncio.create_task(self._speak(ws, context_id, context))
        context.inputs.put_nowait(message)

    async def _speak(self, ws: ServerConnection, context_id: str, context: Context) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                request = await context.inputs.get()
                audio = audio_for(request["transcript"], self.bytes_per_char)
                for offset in range(0, len(audio), self.chunk_bytes):
                    chunk = audio[offset : offset + self.chunk_bytes]
                    await self._chunk(ws, context_id, context, chunk)
                if not request.get("continue", False):
                    message = {"type": "done", "done": True, "status_code": 206}
                    await ws.send(json.dumps({**message, "context_id": context_id}))
                    context.done = True
                    return

    async def _chunk(
        self, ws: ServerConnection, context_id: str, context: Context, chunk: bytes
    ) -> None:
        total = sum(c.chunks_sent for c in self.contexts.values())
        if context.chunks_sent == 0 and self.first_audio_delay:
            await asyncio.sleep(self.first_audio_delay)
        elif self.chunk_interval:
            await asyncio.sleep(self.chunk_interval)
        if total == self.drop_after_chunks:
            self.drop_after_chunks = None  # once
            ws.transport.abort()
            raise ConnectionClosed(None, None)
        if total == self.malformed_after_chunks:
            await ws.send('{"type": "chunk", "data": ')
        message = {
            "type": "chunk",
            "data": base64.b64encode(chunk).decode(),
            "done": False,
            "status_code": 206,
            "step_time": 12.5,
            "context_id": context_id,
        }
        self.first_audio_sent_at.setdefault(context_id, time.perf_counter())
        await ws.send(json.dumps(message))
        context.chunks_sent += 1


def _error(context_id: str | None, error: str, status: int) -> str:
    message = {"type": "error", "done": True, "error": error, "status_code": status}
    return json.dumps({**message, "context_id": context_id})
