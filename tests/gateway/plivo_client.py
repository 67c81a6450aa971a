"""Plivo's side of the wire, hand-made, for tests that send what a genuine Plivo would not:
signed (or badly signed) callbacks, media socket upgrades, and Audio Streaming messages."""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from xml.etree import ElementTree as ET

import httpx
from websockets.asyncio.client import ClientConnection, connect

from providers.plivo.media import parse_extra_headers
from providers.plivo.signature import NONCE_HEADER, SIGNATURE_HEADER, sign
from tests.gateway.server import Server

MEDIA_PATH = "/plivo/media"
ULAW_SILENCE_20MS = bytes([0xFF]) * 160


def answer_form(call_uuid: str | None = None) -> dict[str, str]:
    """The answer URL's form for a ringing inbound call (Plivo writes numbers without `+`)."""
    return {
        "CallUUID": call_uuid or str(uuid.uuid4()),
        "CallStatus": "ringing",
        "Direction": "inbound",
        "Event": "StartApp",
        "From": "15005550001",
        "To": "15005550006",
    }


def signature(
    server: Server, path: str, params: dict[str, str] | None, *, token: str | None = None,
    nonce: str = "", url: str | None = None,
) -> dict[str, str]:
    """Both V3 headers for `path` on the server's public URL (POST with params, else GET)."""
    nonce = nonce or secrets.token_hex(10)
    url = url or server.env["CALLGATE_PUBLIC_URL"] + path
    method = "GET" if params is None else "POST"
    value = sign(token or server.env["PLIVO_AUTH_TOKEN"], url, nonce, params, method)
    return {SIGNATURE_HEADER: value, NONCE_HEADER: nonce}


def post_callback(
    server: Server, path: str, form: dict[str, str], headers: dict[str, str]
) -> httpx.Response:
    return httpx.post(server.url + path, data=form, headers=headers, timeout=10)


@dataclass(frozen=True)
class Answered:
    call_id: str
    token: str  # the alphanumeric form, as it rides in extraHeaders
    stream: ET.Element
    call_uuid: str


def stream_element(xml: str) -> ET.Element:
    stream = ET.fromstring(xml).find("Stream")
    assert stream is not None, xml
    return stream


def answer_call(server: Server, agent: str = "terse", call_uuid: str | None = None) -> Answered:
    """A correctly signed answer-URL request; the Stream element, its token and call id."""
    path = f"/plivo/answer?agent={agent}"
    form = answer_form(call_uuid)
    response = post_callback(server, path, form, signature(server, path, form))
    assert response.status_code == 200, response.text
    stream = stream_element(response.text)
    headers = parse_extra_headers(stream.get("extraHeaders"))
    call_id = bytes.fromhex(headers["callid"]).decode()
    return Answered(call_id, headers["calltoken"], stream, form["CallUUID"])


def media_url(server: Server) -> str:
    return "ws" + server.url.removeprefix("http") + MEDIA_PATH


def upgrade_signature(server: Server, **kw: str) -> dict[str, str]:
    """The upgrade's V3 headers: a GET of the stream URL's http(s) form, no params."""
    return signature(server, MEDIA_PATH, None, **kw)


@asynccontextmanager
async def media_socket(
    server: Server, headers: dict[str, str] | None = None
) -> AsyncIterator[ClientConnection]:
    """A media WebSocket; `headers` None signs it right, {} sends no signature."""
    async with connect(
        media_url(server),
        additional_headers=upgrade_signature(server) if headers is None else headers,
        proxy=None,
        compression=None,
        ping_interval=None,
        open_timeout=5,
        close_timeout=2,
        max_size=None,
    ) as ws:
        yield ws


class PlivoStream:
    """Plivo-shaped Audio Streaming messages for one stream."""

    def __init__(self, call_uuid: str | None = None, extra_headers: str = "") -> None:
        self.stream_id = str(uuid.uuid4())
        self.call_uuid = call_uuid or str(uuid.uuid4())
        self.extra_headers = extra_headers
        self._sequence = 0
        self._chunk = 0

    def _message(self, event: str, **body: object) -> str:
        self._sequence += 1
        return json.dumps({"event": event, "sequenceNumber": self._sequence, **body})

    def start(self) -> str:
        return self._message(
            "start",
            start={
                "callId": self.call_uuid,
                "streamId": self.stream_id,
                "accountId": "MA" + secrets.token_hex(9).upper(),
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
            },
            extra_headers=self.extra_headers,
        )

    def media(self, payload: str | None = None) -> str:
        """A 20 ms inbound media message; `payload` (base64 text) defaults to silence."""
        if payload is None:
            payload = base64.b64encode(ULAW_SILENCE_20MS).decode("ascii")
        self._chunk += 1
        media = {"track": "inbound", "timestamp": str(self._chunk * 20), "chunk": self._chunk}
        return self._message(
            "media", streamId=self.stream_id, media={**media, "payload": payload},
            extra_headers=self.extra_headers,
        )

    def played(self, name: str) -> str:
        return self._message("playedStream", streamId=self.stream_id, name=name)


def headers_with_token(token: str | None, call_id: str = "") -> str:
    """An `extra_headers` string as Plivo sends it back (`;`-separated)."""
    parts = [f"callid={call_id.encode().hex()}"] if call_id else []
    if token is not None:
        parts.append(f"calltoken={token}")
    return ";".join(parts)
