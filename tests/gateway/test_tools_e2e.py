"""Tools and DTMF end to end with the offline (scripted) agent on a real `callgate serve`:
a transfer through Twilio's REST API, an HTTP tool on a loopback server (its success, timeout
and error paths), and keypad entries reaching the conversation."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
import wave
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from tests.corpus import asterisk_prompts
from tests.fakes.twilio_rest import FakeTwilioRest
from tests.gateway.server import Server, start_server, write_config
from tests.gateway.test_twilio_e2e import finish_call, said_by, start_call
from tests.gateway.twilio_client import (
    TwilioStream,
    answer_call,
    media_socket,
    start_stream,
    wait_for_status,
)

pytestmark = pytest.mark.slow

TRANSFER_TO = "+15551230000"


class ToolServer:
    """A loopback HTTP tool: /ok answers, /slow outlasts the tool's timeout, /fail is a 500."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                owner.bodies.append(
                    json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                )
                if self.path == "/slow":
                    time.sleep(2)
                status, body = (500, b"boom") if self.path == "/fail" else (200, b"shipped")
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _agent(tool_path: str, url: str) -> dict:
    return {
        "greeting": "Hi.",
        "llm": {
            "provider": "scripted",
            "intents": [
                {
                    "name": "order",
                    "keywords": ["password"],
                    "reply": "Let me check.",
                    "tool": "order_status",
                    "arguments": {"order_id": "A17"},
                    "after_tool": "Your order is {result}.",
                },
                {
                    "name": "keys_out",
                    "keywords": ["operator"],
                    "reply": "Sending the tones.",
                    "tool": "send_dtmf",
                    "arguments": {"digits": "19"},
                },
                {
                    "name": "transfer",
                    "keywords": ["extension"],
                    "reply": "Transferring you now.",
                    "tool": "transfer_call",
                    "arguments": {"to": TRANSFER_TO},
                },
                {
                    "name": "keys",
                    "regex": r"\(keypad\) 123$",
                    "reply": "You pressed one two three.",
                },
            ],
            "fallback": "Okay.",
        },
        "tools": [
            "end_call",
            "transfer_call",
            "send_dtmf",
            {
                "name": "order_status",
                "description": "Look up an order",
                "parameters": {
                    "type": "object",
                    "properties": {"order_id": {"type": "string"}},
                    "required": ["order_id"],
                },
                "url": url + tool_path,
                "timeout_secs": 0.3,
            },
        ],
        "transfer_targets": [TRANSFER_TO],
    }


@pytest.fixture(scope="module")
def tool_server() -> ToolServer:
    return ToolServer()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tool_server: ToolServer) -> Iterator[tuple[Server, FakeTwilioRest]]:
    directory: Path = tmp_path_factory.mktemp("tools")
    agents = {f"tools_{p}": _agent(f"/{p}", tool_server.url) for p in ("ok", "slow", "fail")}
    config = write_config(directory, agents)
    with FakeTwilioRest() as twilio:
        env = {
            "CALLGATE_API_KEY": "test-api-key-" + secrets.token_hex(8),
            "CALLGATE_SECRET": secrets.token_hex(16),
            "TWILIO_ACCOUNT_SID": twilio.account_sid,
            "TWILIO_AUTH_TOKEN": twilio.auth_token,
            "TWILIO_API_BASE": twilio.base_url,
        }
        gateway = start_server(config, env, directory / "server.log")
        yield gateway, twilio
        gateway.stop()


def _prompt(name: str) -> Path:
    return next(p.wav for p in asterisk_prompts() if p.name == name)


@pytest.mark.parametrize(
    ("path", "spoken"),
    [
        ("ok", "Your order is shipped."),
        ("slow", "Your order is error"),
        ("fail", "Your order is error"),
    ],
)
def test_http_tool_result_reaches_the_caller(server, tool_server: ToolServer, path, spoken):
    gateway, _ = server
    before = len(tool_server.bodies)
    events = finish_call(start_call(gateway, [_prompt("agent-pass")], "--agent", f"tools_{path}"))
    answers = said_by(events[-1], "assistant")
    assert "Let me check." in answers
    assert any(answer.startswith(spoken) for answer in answers), answers
    assert tool_server.bodies[before:] == [{"order_id": "A17"}]


def test_transfer_redirects_the_live_call_to_a_dial(server):
    gateway, twilio = server
    live = twilio.add_call()
    events = finish_call(
        start_call(gateway, [_prompt("transfer")], "--agent", "tools_ok", "--call-sid", live.sid)
    )
    summary = events[-1]
    assert "Transferring you now." in said_by(summary, "assistant")
    assert summary["hangup_by"] == "agent"  # the stream ends: the call left for the <Dial>
    updates = [r for r in twilio.requests if r.path.endswith(f"/Calls/{live.sid}.json")]
    assert len(updates) == 1
    twiml = updates[0].form["Twiml"]
    assert "<Dial" in twiml and f"<Number>{TRANSFER_TO}</Number>" in twiml


def test_keypad_entry_is_a_caller_turn(server):
    gateway, _ = server

    async def call() -> str:
        answered = answer_call(gateway, agent="tools_ok")
        stream = TwilioStream(answered.call_sid)
        async with media_socket(gateway) as ws:

            async def echo_marks() -> None:  # as Twilio does once the audio has played
                async for message in ws:
                    event = json.loads(message)
                    if event["event"] == "mark":
                        await ws.send(stream.mark(event["mark"]["name"]))

            echo = asyncio.create_task(echo_marks())
            await start_stream(ws, stream, answered.token)
            for digit in "123#":
                await ws.send(stream.dtmf(digit))
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:  # caller silence while the agent answers
                await ws.send(stream.media())
                await asyncio.sleep(0.02)
            await ws.send(stream.stop())
            echo.cancel()
        return answered.call_id

    call_id = asyncio.run(call())
    record = asyncio.run(wait_for_status(gateway, call_id, "completed"))
    texts = [(turn["role"], turn["text"]) for turn in record["transcript"]]
    assert ("user", "(keypad) 123") in texts
    assert ("assistant", "You pressed one two three.") in texts


def _blocks(audio: np.ndarray, rate: int) -> np.ndarray:
    block = rate // 50
    return audio[: len(audio) // block * block].reshape(-1, block).astype(np.float64)


def _tone_power(blocks: np.ndarray, rate: int, freq: float) -> np.ndarray:
    """Goertzel power of `freq` in each 20 ms block: half the block's energy for a pure tone."""
    phase = np.exp(-2j * np.pi * freq * np.arange(blocks.shape[1]) / rate)
    return np.abs(blocks @ phase) ** 2 / blocks.shape[1]


def test_send_dtmf_plays_the_keys_to_the_far_end(server, tmp_path: Path):
    gateway, _ = server
    out = tmp_path / "heard.wav"
    events = finish_call(
        start_call(gateway, [_prompt("vm-reachoper")], "--agent", "tools_ok", "--out", str(out))
    )
    assert "Sending the tones." in said_by(events[-1], "assistant")
    with wave.open(str(out), "rb") as recording:
        rate = recording.getframerate()
        heard = np.frombuffer(recording.readframes(recording.getnframes()), np.int16)
    blocks = _blocks(heard, rate)
    energy = (blocks**2).sum(axis=1) + 1e-9
    for low, high in ((697, 1209), (852, 1477)):  # the keys 1 and 9, in the audio heard
        pair = _tone_power(blocks, rate, low) + _tone_power(blocks, rate, high)
        loud = energy > 1e-3 * energy.max()
        assert np.any(loud & (pair > 0.35 * energy)), (low, high)
