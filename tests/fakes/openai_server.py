"""A loopback fake of the OpenAI API: streamed chat completions, transcriptions and speech.

Speaks the documented wire format: `text/event-stream` chunks `data: {chat.completion.chunk}`
ending in `data: [DONE]`, tool calls streamed as `delta.tool_calls` fragments (index, id,
function.name, then `function.arguments` pieces), multipart `/audio/transcriptions`, raw
24 kHz PCM16 from `/audio/speech`, and errors as `{"error": {"message", "type", "param",
"code"}}`. `Authorization: Bearer <key>` is checked on every route. Replies are scripted per
request (queues); every request is recorded, and send/disconnect times are noted so tests can
measure what the client adds.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MODEL = "gpt-4o-mini-2024-07-18"


@dataclass
class ChatReply:
    """One scripted chat completion. `deltas` are the `choices[0].delta` objects in order."""

    deltas: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str = "stop"
    status: int = 200
    error: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_secs: float = 0  # before the response headers
    chunk_delay_secs: float = 0  # before each chunk
    stop_after: int | None = None  # end the body cleanly after this many chunks, no [DONE]
    drop_after: int | None = None  # break the connection after this many chunks


def text_reply(*pieces: str, **options: Any) -> ChatReply:
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": "", "refusal": None}]
    deltas += [{"content": piece} for piece in pieces]
    return ChatReply(deltas, **options)


def tool_reply(*calls: tuple[str, str, list[str]], text: str = "", **options: Any) -> ChatReply:
    """Calls as (id, name, argument fragments), streamed one after another like OpenAI."""
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": text or None}]
    for index, (call_id, name, fragments) in enumerate(calls):
        start = {"index": index, "id": call_id, "type": "function"}
        deltas.append({"tool_calls": [{**start, "function": {"name": name, "arguments": ""}}]})
        deltas += [
            {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
            for piece in fragments
        ]
    return ChatReply(deltas, finish_reason="tool_calls", **options)


def error_reply(status: int, message: str, kind: str, code: str | None, **options: Any):
    error = {"message": message, "type": kind, "param": None, "code": code}
    return ChatReply(status=status, error=error, **options)


@dataclass
class SpeechReply:
    pcm: bytes | None = None  # None: a 440 Hz tone, 10 ms per input character
    chunk_bytes: int = 4800  # 100 ms of 24 kHz PCM16
    chunk_delay_secs: float = 0
    status: int = 200
    error: dict[str, Any] | None = None
    drop_after: int | None = None


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    file: tuple[str, str, bytes] | None = None  # filename, content type, bytes


class _Dropped(Exception):
    """Raised inside a streaming body: uvicorn then closes the connection mid-answer."""


def tone(secs: float, rate: int = 24_000) -> bytes:
    n = int(secs * rate)
    return struct.pack(
        f"<{n}h", *(int(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(n))
    )


class FakeOpenAI:
    """`with FakeOpenAI() as fake:` serves on 127.0.0.1; clients use `fake.base_url`."""

    def __init__(self, api_key: str = "sk-test-fake-key-0123456789abcdef") -> None:
        self.api_key = api_key
        self.chat: deque[ChatReply] = deque()
        self.transcripts: deque[str | ChatReply] = deque()  # ChatReply: only status/error used
        self.speech: deque[SpeechReply] = deque()
        self.requests: list[Recorded] = []
        self.first_content_sent: list[float] = []  # perf_counter when the 1st content chunk left
        self.first_audio_sent: list[float] = []
        self.speech_closed: list[tuple[float, int]] = []  # (when, bytes sent) if client left
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FakeOpenAI:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/audio/transcriptions", self._transcribe, methods=["POST"]),
                Route("/v1/audio/speech", self._speech, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )
        config = uvicorn.Config(
            app, log_level="error", lifespan="off", timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        while not self._server.started:
            time.sleep(0.005)
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(timeout=5)

    def _auth_error(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        if header == f"Bearer {self.api_key}":
            return None
        if not header:
            message = "You didn't provide an API key. You need to provide your API key in an "
            message += "Authorization header using Bearer auth "
            message += "(i.e. Authorization: Bearer YOUR_KEY)."
            return _error(401, message, "invalid_request_error", None)
        given = header.removeprefix("Bearer ")
        masked = given[:3] + "*" * max(len(given) - 7, 0) + given[-4:]
        message = f"Incorrect API key provided: {masked}. You can find your API key at "
        message += "https://platform.openai.com/account/api-keys."
        return _error(401, message, "invalid_request_error", "invalid_api_key")

    async def _models(self, request: Request) -> Response:
        self.requests.append(Recorded(request.url.path, dict(request.headers)))
        if denied := self._auth_error(request):
            return denied
        model = {"id": MODEL, "object": "model", "created": 1721172741, "owned_by": "system"}
        return JSONResponse({"object": "list", "data": [model]})

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(Recorded(request.url.path, dict(request.headers), json=body))
        if denied := self._auth_error(request):
            return denied
        reply = self.chat.popleft() if self.chat else text_reply("OK.")
        if reply.delay_secs:
            await asyncio.sleep(reply.delay_secs)
        if reply.error is not None:
            return JSONResponse({"error": reply.error}, reply.status, headers=reply.headers)
        headers = {"Cache-Control": "no-cache", **reply.headers}
        return StreamingResponse(
            self._chunks(reply, body.get("model", MODEL)),
            media_type="text/event-stream; charset=utf-8",
            headers=headers,
        )

    async def _chunks(self, reply: ChatReply, model: str) -> AsyncIterator[bytes]:
        base = {
            "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_44709d6fcb",
        }
        choices = [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
            for delta in reply.deltas
        ]
        last = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": reply.finish_reason}
        choices.append(last)
        sent_content = False
        for n, choice in enumerate(choices):
            if n == reply.stop_after:
                return
            if n == reply.drop_after:
                raise _Dropped
            if reply.chunk_delay_secs:
                await asyncio.sleep(reply.chunk_delay_secs)
            data = json.dumps({**base, "choices": [choice]}, separators=(",", ":"))
            delta = choice["delta"]
            if not sent_content and (delta.get("content") or delta.get("tool_calls")):
                sent_content = True
                self.first_content_sent.append(time.perf_counter())
            yield f"data: {data}\n\n".encode()
        yield b"data: [DONE]\n\n"

    async def _transcribe(self, request: Request) -> Response:
        form = await request.form()
        upload = form.get("file")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        recorded = Recorded(request.url.path, dict(request.headers), form=fields)
        if upload is not None and not isinstance(upload, str):
            data = await upload.read()
            recorded.file = (upload.filename or "", upload.content_type or "", data)
        self.requests.append(recorded)
        if denied := self._auth_error(request):
            return denied
        reply = self.transcripts.popleft() if self.transcripts else ""
        if isinstance(reply, ChatReply):
            return JSONResponse({"error": reply.error}, reply.status, headers=reply.headers)
        problem = _wav_problem(recorded.file[2]) if recorded.file else "'file' is missing"
        if not fields.get("model"):
            problem = "you must provide a model parameter"
        if problem:
            return _error(400, problem, "invalid_request_error", None)
        return JSONResponse({"text": reply})

    async def _speech(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(Recorded(request.url.path, dict(request.headers), json=body))
        if denied := self._auth_error(request):
            return denied
        reply = self.speech.popleft() if self.speech else SpeechReply()
        if reply.error is not None:
            return JSONResponse({"error": reply.error}, reply.status)
        pcm = reply.pcm if reply.pcm is not None else tone(0.01 * len(body["input"]))
        return StreamingResponse(self._audio(reply, pcm), media_type="audio/pcm")

    async def _audio(self, reply: SpeechReply, pcm: bytes) -> AsyncIterator[bytes]:
        sent = 0
        try:
            for n, start in enumerate(range(0, len(pcm), reply.chunk_bytes)):
                if n == reply.drop_after:
                    raise _Dropped
                if reply.chunk_delay_secs:
                    await asyncio.sleep(reply.chunk_delay_secs)
                if n == 0:
                    self.first_audio_sent.append(time.perf_counter())
                chunk = pcm[start : start + reply.chunk_bytes]
                sent += len(chunk)
                yield chunk
        except asyncio.CancelledError:  # Starlette cancels the body when the client leaves
            self.speech_closed.append((time.perf_counter(), sent))
            raise


def _error(status: int, message: str, kind: str, code: str | None) -> Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status)


def _wav_problem(data: bytes) -> str | None:
    """Why `data` is not a 16 kHz mono 16-bit PCM WAV of consistent sizes, or None."""
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:16] != b"WAVEfmt ":
        return "Invalid file format: not a RIFF/WAVE file."
    riff_size, fmt_size, fmt, channels, rate, byte_rate, align, bits = struct.unpack(
        "<I4x4xIHHIIHH", data[4:36]
    )
    if (fmt_size, fmt, channels, rate, byte_rate, align, bits) != (16, 1, 1, 16000, 32000, 2, 16):
        return "Invalid file format: expected 16 kHz mono 16-bit PCM."
    if data[36:40] != b"data" or struct.unpack("<I", data[40:44])[0] != len(data) - 44:
        return "Invalid file format: bad data chunk."
    if riff_size != len(data) - 8:
        return "Invalid file format: bad RIFF size."
    return None


class ConnectionDropper:
    """A loopback TCP relay to `port` that closes its first `drops` connections as soon as
    the request arrives, without answering: a connection lost before the response."""

    def __init__(self, port: int, drops: int) -> None:
        self._port = port
        self._drops = drops
        self.accepted = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self.accepted <= self._drops:
                conn.recv(65536)
                conn.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self._port))
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        sink.close()
