"""Bad input on the Twilio media socket is contained: a real `callgate serve` process takes
junk, early media, a 1 MB frame and a vanishing peer on some sockets while a real `callgate
call` with real speech runs beside them, unaffected."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable
from contextlib import suppress
from pathlib import Path
from typing import TypeVar

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.corpus import normalize_words, select_prompts
from tests.gateway.server import TEST_AGENT, Server
from tests.gateway.test_twilio_e2e import finish_call, said_by, start_call
from tests.gateway.twilio_client import (
    TwilioStream,
    answer_call,
    api_get,
    close_code,
    media_socket,
    metric,
    start_stream,
    wait_for_status,
)

pytestmark = pytest.mark.slow

T = TypeVar("T")

GREETING = TEST_AGENT["greeting"]
JUNK = {
    "not valid JSON": "{not json",
    "unknown event": json.dumps({"event": "bogus", "sequenceNumber": "2"}),
    "not valid base64": None,  # a media message, made per stream
    "binary frame": b"\x00\x01\x02\x03",
}
FLOOD = 100


async def _until_media(ws: ClientConnection) -> None:
    async with asyncio.timeout(10):
        while json.loads(await ws.recv())["event"] != "media":
            pass


async def ignored_messages(server: Server) -> tuple[str, float]:
    """Junk in the middle of the greeting is dropped; the greeting plays on and its mark,
    echoed after the junk, is processed (the greeting counts as heard in the transcript)."""
    answered = answer_call(server)
    stream = TwilioStream(answered.call_sid)
    async with media_socket(server) as ws:
        await start_stream(ws, stream, answered.token)
        await _until_media(ws)
        for junk in JUNK.values():
            await ws.send(junk if junk is not None else stream.media(payload="@@not*base64@@"))
        for n in range(FLOOD):
            await ws.send(b"\xff" * 8 if n % 2 else "[1, 2")
        await ws.send(stream.media())  # good caller audio still goes in
        audio_after, marks = 0, 0
        try:
            while True:  # read until the agent is quiet for a while, echoing marks
                msg = json.loads(await asyncio.wait_for(ws.recv(), 0.8))
                if msg["event"] == "media":
                    audio_after += len(base64.b64decode(msg["media"]["payload"]))
                elif msg["event"] == "mark":
                    marks += 1
                    await ws.send(stream.mark(msg["mark"]["name"]))
        except TimeoutError:
            pass
        assert marks >= 1
        await ws.send(stream.stop())
        assert await close_code(ws) == 1000
    record = await wait_for_status(server, answered.call_id, "completed")
    assert record["transcript"] == [{"role": "assistant", "text": GREETING}]
    assert record["end_reason"] == "stopped"
    return answered.call_id, audio_after / 8000


async def media_before_start(server: Server) -> list[int | None]:
    codes = []
    for early in ("media", "mark", "stop"):
        stream = TwilioStream()
        message = stream.mark("m1") if early == "mark" else getattr(stream, early)()
        async with media_socket(server) as ws:
            await ws.send(stream.connected())
            await ws.send(message)
            codes.append(await close_code(ws))
    return codes


async def oversized_message(server: Server) -> tuple[int | None, dict]:
    """A 1 MB frame in a live call: the frame cap closes the socket, the call ends cleanly."""
    answered = answer_call(server)
    stream = TwilioStream(answered.call_sid)
    async with media_socket(server) as ws:
        await start_stream(ws, stream, answered.token)
        await _until_media(ws)
        with suppress(ConnectionClosed):  # the server may close before all of it is sent
            await ws.send(stream.media(payload="A" * 1_000_000))
        code = await close_code(ws)
    return code, await wait_for_status(server, answered.call_id, "completed")


async def vanishing_peer(server: Server) -> dict:
    """The TCP connection drops mid-greeting, without a close frame."""
    answered = answer_call(server)
    stream = TwilioStream(answered.call_sid)
    async with media_socket(server) as ws:
        await start_stream(ws, stream, answered.token)
        await _until_media(ws)
        for _ in range(10):
            await ws.send(stream.media())
        ws.transport.abort()
    return await wait_for_status(server, answered.call_id, "completed")


async def _after(delay: float, scenario: Awaitable[T]) -> T:
    await asyncio.sleep(delay)
    return await scenario


def _overlap(reference: str, heard: str) -> float:
    """Share of the reference's words that were recognised."""
    ref = normalize_words(reference)
    hyp = set(normalize_words(heard))
    return sum(word in hyp for word in ref) / len(ref)


async def test_bad_media_input_is_contained_beside_a_good_call(
    gateway: Server, tmp_path: Path, report_figure
):
    log_from = len(gateway.log_path.read_text().splitlines())
    started_before = metric(gateway, "callgate_calls_total", provider="twilio")
    prompts = select_prompts(2, seed=11, max_secs=3.5)
    good = start_call(
        gateway, [p.wav for p in prompts], "--agent", "terse", "--out", str(tmp_path / "g.wav")
    )
    try:
        early_codes, (ignored_id, greeting_secs), (big_code, big), vanished = await asyncio.gather(
            # Spread over the good call: its greeting, first turn, first answer, second turn.
            _after(1.0, media_before_start(gateway)),
            _after(3.0, ignored_messages(gateway)),
            _after(5.5, oversized_message(gateway)),
            _after(8.0, vanishing_peer(gateway)),
        )
    finally:
        events = await asyncio.to_thread(finish_call, good, 60)
    summary = events[-1]

    # The junk was ignored and the greeting (about 1.4 s) played on.
    assert greeting_secs >= 1.0
    assert early_codes == [1008, 1008, 1008]
    assert big_code == 1009
    assert big["end_reason"] == "disconnected"
    assert vanished["end_reason"] == "disconnected" and vanished["ended_at"]
    assert gateway.process.poll() is None
    assert api_get(gateway, "/healthz").status_code == 200

    # The good call beside them: both turns recognised and answered, in good time.
    heard = said_by(summary, "user")
    assert len(heard) == 2, summary
    overlaps = [_overlap(p.text, h) for p, h in zip(prompts, heard, strict=True)]
    assert min(overlaps) >= 0.6, list(zip([p.text for p in prompts], heard, strict=True))
    assert said_by(summary, "assistant") == [GREETING, "Okay.", "Okay."]
    latencies = summary["latency_ms"]["end_of_speech_to_first_audio"]
    assert len(latencies) == 2 and max(latencies) < 2500, latencies
    assert summary["latency_ms"]["first_greeting_audio"] < 2000
    report_figure("bad_input_good_call_eos_to_first_audio_ms", latencies)
    report_figure("bad_input_good_call_word_overlap", [round(o, 2) for o in overlaps])

    _assert_logs(gateway, log_from, ignored_id)
    _assert_metrics(gateway, started_before)


def _assert_logs(gateway: Server, log_from: int, ignored_id: str) -> None:
    lines = gateway.log_path.read_text().splitlines()[log_from:]
    assert not any("Traceback" in line for line in lines)
    logs = [json.loads(line) for line in lines if line.startswith("{")]
    failures = [e for e in logs if e["event"] == "call_failed" or e["level"] == "error"]
    assert not failures
    ignored = [e for e in logs if e["event"] == "media_message_ignored"]
    assert all(e["level"] == "warning" and e.get("call_id") == ignored_id for e in ignored)
    reasons = " | ".join(e["error"] for e in ignored)
    for kind in JUNK:
        assert kind in reasons, reasons
    assert len(ignored) <= 5 < FLOOD  # a flood of junk does not flood the log


def _assert_metrics(gateway: Server, started_before: float) -> None:
    started = metric(gateway, "callgate_calls_total", provider="twilio") - started_before
    assert started == 4  # the good call, the junk one, the oversized one and the vanished one
    assert metric(gateway, "callgate_calls_active") == 0
    assert metric(gateway, "callgate_media_frames_in_total") > 0
    assert metric(gateway, "callgate_media_frames_out_total") > 0
    count = metric(gateway, "callgate_turn_latency_seconds_count", stage="first_frame_sent")
    assert count >= 2
    bucket = "callgate_turn_latency_seconds_bucket"
    assert metric(gateway, bucket, stage="first_frame_sent", le="+Inf") == count
