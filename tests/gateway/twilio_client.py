"""Twilio's side of the wire, hand-made, for tests that send what a genuine Twilio would not:
signed (or badly signed) webhooks, media socket upgrades, and Media Streams messages."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from xml.etree import ElementTree as ET

import httpx
from prometheus_client.parser import text_string_to_metric_families
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.gateway.server import Server

SIGNATURE_HEADER = "X-Twilio-Signature"
MEDIA_PATH = "/twilio/media"
ULAW_SILENCE_20MS = bytes([0xFF]) * 160


def sign(auth_token: str, url: str, params: dict[str, str]) -> str:
    return RequestValidator(auth_token).compute_signature(url, params)


def voice_form(call_sid: str | None = None) -> dict[str, str]:
    """The voice webhook's form for a ringing inbound call."""
    return {
        "AccountSid": "AC" + secrets.token_hex(16),
        "CallSid": call_sid or "CA" + secrets.token_hex(16),
        "CallStatus": "ringing",
        "Direction": "inbound",
        "From": "+15005550001",
        "To": "+15005550006",
    }


def post_webhook(
    server: Server, path: str, form: dict[str, str], signature: str | None
) -> httpx.Response:
    """POST `form` to `path` (query included) with `signature` (None: no header at all)."""
    headers = {SIGNATURE_HEADER: signature} if signature is not None else {}
    return httpx.post(server.url + path, data=form, headers=headers, timeout=10)


def signed(server: Server, path: str, form: dict[str, str]) -> str:
    """Twilio's signature for `path` (query included) on the server's public URL."""
    return sign(server.env["TWILIO_AUTH_TOKEN"], server.env["CALLGATE_PUBLIC_URL"] + path, form)


@dataclass(frozen=True)
class Answered:
    call_id: str
    token: str
    stream_url: str
    call_sid: str


def answer_call(server: Server, agent: str = "terse") -> Answered:
    """A correctly signed voice webhook; the TwiML's stream URL, call token and call id."""
    path = f"/twilio/voice?agent={agent}"
    form = voice_form()
    response = post_webhook(server, path, form, signed(server, path, form))
    assert response.status_code == 200, response.text
    stream = _stream_element(response.text)
    params = {p.get("name"): p.get("value") for p in stream.iter("Parameter")}
    return Answered(params["call_id"], params["token"], stream.get("url"), form["CallSid"])


def _stream_element(twiml: str) -> ET.Element:
    stream = ET.fromstring(twiml).find("Connect/Stream")
    assert stream is not None, twiml
    return stream


def media_url(server: Server) -> str:
    return "ws" + server.url.removeprefix("http") + MEDIA_PATH


def upgrade_signature(server: Server, url: str | None = None, auth_token: str | None = None) -> str:
    """The upgrade's signature: over the exact Stream URL, with no params."""
    return sign(auth_token or server.env["TWILIO_AUTH_TOKEN"], url or media_url(server), {})


@asynccontextmanager
async def media_socket(
    server: Server, signature: str | None = "valid"
) -> AsyncIterator[ClientConnection]:
    """A media WebSocket; `signature` "valid" signs it right, None sends no signature."""
    if signature == "valid":
        signature = upgrade_signature(server)
    headers = {SIGNATURE_HEADER: signature} if signature is not None else {}
    async with connect(
        media_url(server),
        additional_headers=headers,
        proxy=None,
        compression=None,
        ping_interval=None,
        open_timeout=5,
        close_timeout=2,
        max_size=None,
    ) as ws:
        yield ws


class TwilioStream:
    """Twilio-shaped Media Streams messages for one stream."""

    def __init__(self, call_sid: str | None = None) -> None:
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.call_sid = call_sid or "CA" + secrets.token_hex(16)
        self._sequence = 0

    def _message(self, event: str, **body: object) -> str:
        self._sequence += 1
        msg = {"event": event, "sequenceNumber": str(self._sequence), **body}
        return json.dumps({**msg, "streamSid": self.stream_sid})

    @staticmethod
    def connected() -> str:
        return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self, token: str | None, call_id: str = "") -> str:
        params = {"call_id": call_id} if call_id else {}
        if token is not None:
            params["token"] = token
        return self._message(
            "start",
            start={
                "accountSid": "AC" + secrets.token_hex(16),
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": params,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        )

    def media(self, payload: str | None = None) -> str:
        """A 20 ms inbound media message; `payload` (base64 text) defaults to silence."""
        if payload is None:
            payload = base64.b64encode(ULAW_SILENCE_20MS).decode("ascii")
        return self._message("media", media={"track": "inbound", "payload": payload})

    def mark(self, name: str) -> str:
        return self._message("mark", mark={"name": name})

    def dtmf(self, digit: str) -> str:
        return self._message("dtmf", dtmf={"track": "inbound_track", "digit": digit})

    def stop(self) -> str:
        return self._message("stop", stop={"callSid": self.call_sid})


async def start_stream(ws: ClientConnection, stream: TwilioStream, token: str | None) -> None:
    await ws.send(stream.connected())
    await ws.send(stream.start(token))


async def close_code(ws: ClientConnection, timeout: float = 5.0) -> int | None:
    """Read (and drop) whatever comes until the server closes; the close code it sent."""
    async with asyncio.timeout(timeout):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed:
            pass
    return ws.close_code


def api_get(server: Server, path: str, **headers: str) -> httpx.Response:
    return httpx.get(server.url + path, headers=headers, timeout=10)


def api_key_header(server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.env['CALLGATE_API_KEY']}"}


def call_record(server: Server, call_id: str) -> dict:
    response = api_get(server, f"/v1/calls/{call_id}", **api_key_header(server))
    assert response.status_code == 200, response.text
    return response.json()


def call_ids(server: Server) -> set[str]:
    response = api_get(server, "/v1/calls", **api_key_header(server))
    assert response.status_code == 200, response.text
    return {call["id"] for call in response.json()["calls"]}


async def wait_for_status(server: Server, call_id: str, status: str, timeout: float = 5) -> dict:
    """The call's record once it has `status`; TimeoutError if it does not in time."""
    async with asyncio.timeout(timeout):
        while (record := await asyncio.to_thread(call_record, server, call_id))["status"] != status:
            await asyncio.sleep(0.1)
    return record


def metrics_text(server: Server) -> str:
    response = httpx.get(server.url + "/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


def metric(server: Server, sample: str, **labels: str) -> float:
    """One sample's value from /metrics (0 if absent), parsed as Prometheus text."""
    for family in text_string_to_metric_families(metrics_text(server)):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0
