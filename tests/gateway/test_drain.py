"""Graceful drain of a real gateway: SIGTERM with live calls from the real `callgate call`."""

from __future__ import annotations

import secrets
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from gateway.media_calls import BUSY_MESSAGE
from tests.corpus import select_prompts
from tests.gateway.cli_calls import events_named, finish_cli_call, start_cli_call, wait_for_logs
from tests.gateway.server import TEST_AGENT, Server, free_port, start_server, write_config
from tests.gateway.twilio_client import post_webhook, signed, voice_form

pytestmark = pytest.mark.slow

DRAIN_MESSAGE = "We are closing for maintenance. Goodbye."


def drain_server(directory: Path, drain_timeout_secs: float) -> Server:
    calls = {"drain_timeout_secs": drain_timeout_secs, "drain_message": DRAIN_MESSAGE}
    config = write_config(directory, {"terse": TEST_AGENT}, calls=calls)
    env = {
        "CALLGATE_API_KEY": "test-api-key-" + secrets.token_hex(8),
        "CALLGATE_SECRET": secrets.token_hex(16),
        "TWILIO_ACCOUNT_SID": "AC" + secrets.token_hex(16),
        "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
        "TWILIO_API_BASE": f"http://127.0.0.1:{free_port()}",  # nothing listens: no real calls
    }
    return start_server(config, env, directory / "server.log")


def live_calls(server: Server, n: int, wavs: list[Path]) -> list[subprocess.Popen[str]]:
    calls = [start_cli_call(server.url, server.env, wavs, "--agent", "terse") for _ in range(n)]
    wait_for_logs(server, lambda lines: len(events_named(lines, "call_started")) == n)
    return calls


def webhook(server: Server) -> str:
    path = "/twilio/voice?agent=terse"
    form = voice_form()
    return post_webhook(server, path, form, signed(server, path, form)).text


def test_sigterm_refuses_new_calls_and_lets_live_ones_finish(tmp_path: Path):
    timeout = 60.0
    server = drain_server(tmp_path, timeout)
    try:
        prompts = select_prompts(3, seed=21)
        calls = live_calls(server, 2, [p.wav for p in prompts])
        sent = time.monotonic()
        server.process.send_signal(signal.SIGTERM)

        ready = httpx.get(f"{server.url}/readyz", timeout=5)
        assert time.monotonic() - sent < 1.0
        assert ready.status_code == 503 and ready.json()["draining"] is True
        metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
        assert "callgate_draining 1.0" in metrics
        refused = webhook(server)
        assert BUSY_MESSAGE in refused and "<Stream" not in refused
        api = {"Authorization": f"Bearer {server.env['CALLGATE_API_KEY']}"}
        body = {"to": "+15005550009", "from": "+15005550001", "provider": "twilio"}
        placed = httpx.post(f"{server.url}/v1/calls", json=body, headers=api, timeout=5)
        assert placed.status_code == 503, placed.text

        for call in calls:
            events = finish_cli_call(call)
            assert len(events_named(events, "caller_turn")) == len(prompts)
            assert events[-1]["status"] == "completed" and events[-1]["hangup_by"] == "caller"
        assert server.process.wait(timeout=timeout) == 0
        assert time.monotonic() - sent < timeout
        logs = server.logs()
        assert events_named(logs, "drain_started") and events_named(logs, "drain_done")
        assert not events_named(logs, "drain_goodbye")
        # The callers may ask for their transcripts after the server is gone: its log has them.
        ended = events_named(logs, "call_ended")
        assert len(ended) == 2
        for call in ended:
            said = [t["text"] for t in call["transcript"] if t["role"] == "user"]
            assert len(said) == len(prompts) and all(said), call["transcript"]
            answered = [t for t in call["transcript"] if t["role"] == "assistant"]
            assert len(answered) == len(prompts) + 1  # the greeting, then every turn answered
            assert call["hangup_by"] == "caller" and call["end_reason"] != "drain"
    finally:
        server.stop()


def test_calls_still_live_at_the_drain_timeout_hear_goodbye(tmp_path: Path):
    timeout = 3.0
    server = drain_server(tmp_path, timeout)
    try:
        prompts = select_prompts(6, seed=22)
        (call,) = live_calls(server, 1, [p.wav for p in prompts])
        sent = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        events = finish_cli_call(call)
        assert server.process.wait(timeout=30) == 0
        exited_after = time.monotonic() - sent

        names = [e["event"] for e in events]
        cleared = len(names) - 1 - names[::-1].index("clear_received")
        assert "agent_audio_started" in names[cleared:]  # the goodbye, after the clear
        assert "mark_echoed" in names[cleared:]  # ... played to its end
        hangup = events_named(events, "hangup")
        assert hangup and hangup[0]["by"] == "agent"
        assert events[-1]["hangup_by"] == "agent"
        said = [e for e in events if e["event"] == "caller_turn"]
        assert len(said) < len(prompts)  # cut short by the drain, not by the script ending
        assert timeout < exited_after < timeout + 20
        logs = server.logs()
        assert events_named(logs, "call_goodbye")
        ended = events_named(logs, "call_ended")
        assert ended and ended[0]["end_reason"] == "drain"
    finally:
        server.stop()


def test_a_second_sigterm_exits_at_once(tmp_path: Path):
    server = drain_server(tmp_path, 60.0)
    try:
        prompts = select_prompts(6, seed=23)
        (call,) = live_calls(server, 1, [p.wav for p in prompts])
        server.process.send_signal(signal.SIGTERM)
        wait_for_logs(server, lambda lines: bool(events_named(lines, "drain_started")), 10)
        sent = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=5) == 1
        assert time.monotonic() - sent < 2.0
        assert events_named(server.logs(), "drain_forced")
        call.communicate(timeout=30)  # the caller's line went dead
    finally:
        server.stop()
