"""A loopback Deepgram live-streaming server (`/v1/listen`) speaking the documented protocol.

Its recogniser is a stand-in: every `secs_per_word` of non-silent mu-law audio is the next word
of `words`. It sends interim Results while a word grows, a final one (speech_final) after
`endpointing` ms of silence (0xFF/0x7F bytes), flushes on Finalize (from_finalize), answers
CloseStream with the last results and Metadata, and closes idle sockets (no audio or KeepAlive
for `idle_timeout`) with 1011 NET-0001, as Deepgram does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

RATE = 8000
_LOG = logging.getLogger("tests.fakes.deepgram")
_LOG.setLevel(logging.INFO)  # websockets logs handshake headers (the key) at DEBUG
_SILENCE = (0xFF, 0x7F)


@dataclass
class DeepgramFake:
    api_key: str
    words: list[str] = field(default_factory=list)
    secs_per_word: float = 0.2
    idle_timeout: float = 10.0
    reject_status: int | None = None
    """Answer every upgrade with this HTTP status (e.g. 429)."""
    drop_after_bytes: int | None = None
    """Drop the first connection (no close frame) once this much audio came in."""
    malformed_after_bytes: int | None = None
    """Send a non-JSON message once this much audio came in (on every connection)."""
    close_after_bytes: tuple[int, int, str] | None = None
    """(bytes, code, reason): close with an error code once this much audio came in."""
    ignore_finalize: bool = False
    connections: int = 0
    queries: list[dict[str, list[str]]] = field(default_factory=list)
    controls: list[str] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    _server: Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"ws://{host}:{port}"

    async def __aenter__(self) -> DeepgramFake:
        self._server = await serve(
            self._handle, "127.0.0.1", 0, process_request=self._check, compression=None, logger=_LOG
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != "/v1/listen":
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        if self.reject_status is not None:
            return connection.respond(HTTPStatus(self.reject_status), "rejected\n")
        if request.headers.get("Authorization") != f"Token {self.api_key}":
            body = json.dumps({"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials."})
            return connection.respond(HTTPStatus.UNAUTHORIZED, body)
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        query = parse_qs(urlsplit(ws.request.path).query)
        self.queries.append(query)
        stream = _Stream(self, ws, float(query.get("endpointing", ["10"])[0]) / 1000)
        first = self.connections == 1
        received = 0
        while True:
            try:
                message = await asyncio.wait_for(ws.recv(), self.idle_timeout)
            except TimeoutError:
                await ws.close(1011, "NET-0001")
                return
            except Exception:
                return
            if isinstance(message, bytes):
                received += len(message)
                self.audio += message
                if first and _past(self.drop_after_bytes, received):
                    ws.transport.abort()
                    return
                if _past(self.malformed_after_bytes, received):
                    await ws.send("{not json")
                if self.close_after_bytes and received >= self.close_after_bytes[0]:
                    await ws.close(self.close_after_bytes[1], self.close_after_bytes[2])
                    return
                await stream.audio(message)
                continue
            kind = json.loads(message)["type"]
            self.controls.append(kind)
            if kind == "Finalize" and not self.ignore_finalize:
                await stream.final(from_finalize=True, speech_final=False)
            elif kind == "CloseStream":
                await stream.final(from_finalize=False, speech_final=False)
                await ws.send(json.dumps(_metadata(stream.position)))
                await ws.close()
                return


class _Stream:
    """One socket's recogniser state: stream position and the words of the open segment."""

    def __init__(self, fake: DeepgramFake, ws: ServerConnection, endpointing: float) -> None:
        self.fake = fake
        self.ws = ws
        self.endpointing = endpointing
        self.position = 0.0
        self.segment_start = 0.0
        self.words: list[dict[str, Any]] = []
        self.voiced = 0  # voiced samples of the word being heard
        self.silence = 0.0

    async def audio(self, chunk: bytes) -> None:
        secs = len(chunk) / RATE
        silent = all(byte in _SILENCE for byte in chunk)
        if not silent:
            if not self.words and self.voiced == 0:
                self.segment_start = self.position
            self.silence = 0.0
            self.voiced += len(chunk)
            if self.voiced >= round(self.fake.secs_per_word * RATE) and self.fake.words:
                start = self.position + secs - self.voiced / RATE
                text = self.fake.words.pop(0)
                self.words.append(_word(text, start, self.position + secs))
                self.voiced = 0
                self.position += secs
                await self.ws.send(json.dumps(self.results(False, False, False)))
                return
        else:
            self.silence += secs
            if self.words and self.silence >= self.endpointing:
                self.position += secs
                await self.final(from_finalize=False, speech_final=True)
                return
        self.position += secs

    async def final(self, from_finalize: bool, speech_final: bool) -> None:
        await self.ws.send(json.dumps(self.results(True, speech_final, from_finalize)))
        self.words = []
        self.voiced = 0
        self.segment_start = self.position

    def results(self, is_final: bool, speech_final: bool, from_finalize: bool) -> dict[str, Any]:
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(self.position - self.segment_start, 3),
            "start": round(self.segment_start, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "channel": {
                "alternatives": [
                    {
                        "transcript": " ".join(w["punctuated_word"] for w in self.words),
                        "confidence": 0.99,
                        "words": list(self.words),
                    }
                ]
            },
            "metadata": {
                "request_id": str(uuid.uuid4()),
                "model_info": {"name": "general-nova-3", "version": "2024-12-20", "arch": "nova-3"},
                "model_uuid": str(uuid.uuid4()),
            },
            "from_finalize": from_finalize,
        }


def _past(limit: int | None, received: int) -> bool:
    return limit is not None and received >= limit


def _word(text: str, start: float, end: float) -> dict[str, Any]:
    return {
        "word": text.lower().strip(".,?!"),
        "start": round(start, 3),
        "end": round(end, 3),
        "confidence": 0.98,
        "punctuated_word": text,
    }


def _metadata(duration: float) -> dict[str, Any]:
    return {
        "type": "Metadata",
        "transaction_key": "deprecated",
        "request_id": str(uuid.uuid4()),
        "sha256": "0" * 64,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "duration": round(duration, 3),
        "channels": 1,
    }
