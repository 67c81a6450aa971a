"""Plivo end to end: a real `callgate serve` process, `callgate call --provider plivo` with real
human speech, the fake Plivo REST API for hang-up, and hand-made Plivo traffic for the checks a
genuine Plivo would never fail (signatures, call tokens, bad stream input)."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from gateway.security import encode_token_alnum, issue_call_token
from tests.corpus import asterisk_prompts, normalize_words, select_prompts
from tests.fakes.plivo_rest import FakePlivoRest
from tests.gateway.plivo_client import (
    PlivoStream,
    answer_call,
    answer_form,
    headers_with_token,
    media_socket,
    post_callback,
    signature,
    stream_element,
    upgrade_signature,
)
from tests.gateway.server import CALLGATE, TEST_AGENT, Server
from tests.gateway.test_twilio_e2e import finish_call, said_by
from tests.gateway.twilio_client import (
    call_ids,
    call_record,
    close_code,
    metric,
    wait_for_status,
)

pytestmark = pytest.mark.slow

GREETING = TEST_AGENT["greeting"]


def start_call(server: Server, wavs: list[Path], *extra: str) -> subprocess.Popen[str]:
    args = [str(CALLGATE), "call", "--gateway", server.url, "--provider", "plivo"]
    for wav in wavs:
        args += ["--wav", str(wav)]
    return subprocess.Popen(
        [*args, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=server.env,
    )


def rejected(server: Server, reason: str) -> float:
    return metric(server, "callgate_calls_rejected_total", provider="plivo", reason=reason)


def calls_started(server: Server) -> float:
    return metric(server, "callgate_calls_total", provider="plivo")


def _overlap(reference: str, heard: str) -> float:
    ref = normalize_words(reference)
    hyp = set(normalize_words(heard))
    return sum(word in hyp for word in ref) / len(ref)


def test_real_speech_and_the_default_agents_goodbye(
    gateway: Server, fake_plivo: FakePlivoRest, tmp_path: Path, report_figure
):
    """Two simulated Plivo calls at once: three real prompts to the terse agent, and the default
    agent's goodbye, which hangs up through the (fake) Plivo REST API."""
    prompts = select_prompts(3, seed=23, max_secs=3.5)
    terse = start_call(gateway, [p.wav for p in prompts], "--agent", "terse")
    named = {p.name: p for p in asterisk_prompts()}
    live = fake_plivo.add_call()
    goodbye = start_call(
        gateway,
        [named["hours"].wav, named["vm-goodbye"].wav],
        "--call-sid", live.call_uuid,
        "--out", str(tmp_path / "default.wav"),
    )
    terse_events, goodbye_events = finish_call(terse, 90), finish_call(goodbye, 90)

    summary = terse_events[-1]
    heard = said_by(summary, "user")
    assert len(heard) == 3, summary
    overlaps = [_overlap(p.text, h) for p, h in zip(prompts, heard, strict=True)]
    assert min(overlaps) >= 0.6, list(zip([p.text for p in prompts], heard, strict=True))
    assert said_by(summary, "assistant") == [GREETING, "Okay.", "Okay.", "Okay."]
    latencies = summary["latency_ms"]["end_of_speech_to_first_audio"]
    assert len(latencies) == 3 and max(latencies) < 2500, latencies
    assert summary["latency_ms"]["first_greeting_audio"] < 2000
    assert summary["hangup_by"] == "caller"
    names = [e["event"] for e in terse_events]
    assert "plivo_xml" in names and "mark_echoed" in names  # playedStream for each checkpoint
    report_figure("plivo_eos_to_first_audio_ms", latencies)
    report_figure("plivo_eos_to_first_audio_ms_median", statistics.median(latencies))
    report_figure("plivo_first_greeting_audio_ms", summary["latency_ms"]["first_greeting_audio"])
    report_figure("plivo_word_overlap", [round(o, 2) for o in overlaps])

    summary = goodbye_events[-1]
    answers = said_by(summary, "assistant")
    assert answers[0].startswith("Hello! Thanks for calling Callgate")
    assert "open from nine" in answers[1]
    assert answers[-1] == "Thank you for calling. Goodbye!"
    assert summary["hangup_by"] == "agent"
    hangups = [r for r in fake_plivo.requests if r.path.endswith(f"/Call/{live.call_uuid}/")]
    assert [r.method for r in hangups] == ["DELETE"]
    assert fake_plivo.calls[live.call_uuid].status == "completed"
    record = call_record(gateway, summary["call_id"])
    assert (record["provider"], record["provider_call_id"]) == ("plivo", live.call_uuid)
    assert record["to"] == "+15005550006" and record["status"] == "completed"


def test_callbacks_without_a_valid_signature_get_403(gateway: Server):
    before_ids, before_rejected = call_ids(gateway), rejected(gateway, "signature")
    path = "/plivo/answer?agent=terse"
    form = answer_form()
    public = gateway.env["CALLGATE_PUBLIC_URL"]
    good = signature(gateway, path, form)
    bad = {
        "missing": {},
        "nonce_only": {"X-Plivo-Signature-V3-Nonce": good["X-Plivo-Signature-V3-Nonce"]},
        "garbage": {**good, "X-Plivo-Signature-V3": "bm90IGEgc2lnbmF0dXJl"},
        "other_nonce": {**good, "X-Plivo-Signature-V3-Nonce": "1234567890"},
        "other_auth_token": signature(gateway, path, form, token="0" * 40),
        "url_without_query": signature(gateway, "/plivo/answer", form),
        "url_other_host": signature(gateway, path, form, url="https://evil.example" + path),
        "params_tampered": signature(gateway, path, {**form, "From": "15550000000"}),
    }
    for name, headers in bad.items():
        response = post_callback(gateway, path, form, headers)
        assert response.status_code == 403, (name, response.text)
        assert "<Stream" not in response.text
    hangup = {"CallUUID": form["CallUUID"], "CallStatus": "completed"}
    for callback in ("/plivo/hangup", "/plivo/status"):
        assert post_callback(gateway, callback, hangup, {}).status_code == 403
        wrong = signature(gateway, callback, hangup, token="0" * 40)
        assert post_callback(gateway, callback, hangup, wrong).status_code == 403
    assert call_ids(gateway) == before_ids
    assert rejected(gateway, "signature") == before_rejected + len(bad) + 4

    answered = post_callback(gateway, path, form, good)  # the same request, rightly signed
    assert answered.status_code == 200, answered.text
    assert answered.headers["content-type"].startswith("application/xml")
    stream = stream_element(answered.text)
    assert stream.text.strip() == "ws" + public.removeprefix("http") + "/plivo/media"
    assert (stream.get("bidirectional"), stream.get("keepCallAlive")) == ("true", "true")
    assert stream.get("contentType") == "audio/x-mulaw;rate=8000"
    assert stream.get("statusCallbackUrl") == public + "/plivo/status"
    extra = stream.get("extraHeaders")
    assert len(extra.encode()) <= 512 and extra.replace("=", "").replace(",", "").isalnum()
    new = call_ids(gateway) - before_ids
    assert len(new) == 1
    record = call_record(gateway, new.pop())
    assert (record["provider"], record["agent"], record["status"]) == ("plivo", "terse", "ringing")
    assert record["provider_call_id"] == form["CallUUID"]
    assert (record["from"], record["to"]) == ("+15005550001", "+15005550006")
    status = {"CallUUID": form["CallUUID"], "Event": "StartStream"}
    signed_status = signature(gateway, "/plivo/status", status)
    assert post_callback(gateway, "/plivo/status", status, signed_status).status_code == 204
    assert call_record(gateway, record["id"])["provider_status"] == "StartStream"
    signed_hangup = signature(gateway, "/plivo/hangup", hangup)
    assert post_callback(gateway, "/plivo/hangup", hangup, signed_hangup).status_code == 204
    assert call_record(gateway, record["id"])["provider_status"] == "completed"


async def test_media_upgrade_without_a_valid_signature_gets_403(gateway: Server):
    before = (call_ids(gateway), calls_started(gateway), rejected(gateway, "signature"))
    good = upgrade_signature(gateway)
    bad = {
        "missing": {},
        "garbage": {**good, "X-Plivo-Signature-V3": "bm90IGEgc2lnbmF0dXJl"},
        "other_auth_token": upgrade_signature(gateway, token="0" * 40),
        "other_path": signature(gateway, "/plivo/answer", None),
        "signed_as_post": signature(gateway, "/plivo/media", {"a": "b"}),
    }
    for name, headers in bad.items():
        with pytest.raises(InvalidStatus) as refused:
            async with media_socket(gateway, headers):
                pass
        assert refused.value.response.status_code == 403, name
    after = (call_ids(gateway), calls_started(gateway), rejected(gateway, "signature"))
    assert after == (before[0], before[1], before[2] + len(bad))


async def _until_audio(ws: ClientConnection) -> list[dict]:
    """Messages up to and including the first playAudio (the greeting has begun)."""
    seen = []
    async with asyncio.timeout(10):
        while (msg := json.loads(await ws.recv()))["event"] != "playAudio":
            seen.append(msg)
    return [*seen, msg]


async def test_media_without_a_good_call_token_is_closed_1008(gateway: Server):
    secret = gateway.env["CALLGATE_SECRET"]
    ringing = answer_call(gateway)  # a genuine call, whose own token is not used below
    raw = bytes.fromhex(ringing.token)
    forged_mac = (raw[:-1] + bytes([raw[-1] ^ 1])).hex()
    forged_claims = (raw[:-33] + bytes([raw[-33] ^ 1]) + raw[-32:]).hex()

    def alnum(provider: str = "plivo", agent: str = "terse", ttl: int = 300) -> str:
        return encode_token_alnum(issue_call_token(secret, ringing.call_id, provider, agent, ttl))

    tokens = {
        "missing": None,
        "empty": "",
        "not_hex": "zz" * 40,
        "too_short": "ab" * 16,
        "text_form": issue_call_token(secret, ringing.call_id, "plivo", "terse", 300),
        "forged_mac": forged_mac,
        "forged_claims": forged_claims,
        "other_secret": encode_token_alnum(
            issue_call_token("x" * 32, ringing.call_id, "plivo", "terse", 300)
        ),
        "expired": alnum(ttl=-5),
        "other_provider": alnum(provider="twilio"),
        "unknown_agent": alnum(agent="nobody"),
    }
    before = (call_ids(gateway), calls_started(gateway), rejected(gateway, "token"))

    async def refused(token: str | None) -> int | None:
        async with media_socket(gateway) as ws:
            await ws.send(PlivoStream(extra_headers=headers_with_token(token)).start())
            return await close_code(ws)

    codes = await asyncio.gather(*(refused(token) for token in tokens.values()))
    assert dict(zip(tokens, codes, strict=True)) == {name: 1008 for name in tokens}
    # A forged token on the upgrade wins over a good one in `start`.
    headers = {**upgrade_signature(gateway), "calltoken": forged_mac}
    async with media_socket(gateway, headers) as ws:
        await ws.send(PlivoStream(extra_headers=headers_with_token(ringing.token)).start())
        assert await close_code(ws) == 1008
    assert call_ids(gateway) == before[0]
    assert calls_started(gateway) == before[1]
    assert rejected(gateway, "token") == before[2] + len(tokens) + 1
    assert call_record(gateway, ringing.call_id)["status"] == "ringing"


async def test_token_on_the_upgrade_serves_one_stream_only(gateway: Server):
    answered = answer_call(gateway)
    before = calls_started(gateway)
    headers = {**upgrade_signature(gateway), "calltoken": answered.token}
    async with media_socket(gateway, headers) as ws:
        await ws.send(PlivoStream(answered.call_uuid).start())  # no extra_headers at all
        await _until_audio(ws)
        assert call_record(gateway, answered.call_id)["status"] == "in-progress"
        async with media_socket(gateway, headers) as replay:
            await replay.send(PlivoStream(answered.call_uuid).start())
            assert await close_code(replay) == 1008
    record = await wait_for_status(gateway, answered.call_id, "completed")
    assert record["end_reason"] == "disconnected"  # Plivo has no stop: the socket closed
    assert calls_started(gateway) == before + 1


async def test_bad_stream_input_is_ignored_and_early_media_closes_1008(gateway: Server):
    answered = answer_call(gateway)
    stream = PlivoStream(answered.call_uuid, headers_with_token(answered.token, answered.call_id))
    async with media_socket(gateway) as ws:
        await ws.send(stream.start())
        first = await _until_audio(ws)
        assert first[-1]["media"]["contentType"] == "audio/x-mulaw"
        for junk in (
            "{not json",
            json.dumps({"event": "bogus", "sequenceNumber": 3}),
            stream.media(payload="@@not*base64@@"),
            stream.played("never-sent"),
        ):
            await ws.send(junk)
        await ws.send(stream.media())  # good caller audio still goes in
        checkpoints, audio_msgs = 0, 0
        try:
            while True:  # until the agent is quiet, acknowledging checkpoints as Plivo does
                msg = json.loads(await asyncio.wait_for(ws.recv(), 0.8))
                assert msg.get("streamId", stream.stream_id) == stream.stream_id
                if msg["event"] == "playAudio":
                    audio_msgs += 1
                elif msg["event"] == "checkpoint":
                    checkpoints += 1
                    await ws.send(stream.played(msg["name"]))
        except TimeoutError:
            pass
        assert checkpoints >= 1 and audio_msgs >= 10
    record = await wait_for_status(gateway, answered.call_id, "completed")
    assert record["transcript"] == [{"role": "assistant", "text": GREETING}]  # heard in full
    assert record["end_reason"] == "disconnected"

    codes = []
    for early in ("media", "played"):
        before_start = PlivoStream()
        async with media_socket(gateway) as ws:
            message = before_start.media() if early == "media" else before_start.played("m1")
            await ws.send(message)
            codes.append(await close_code(ws))
    assert codes == [1008, 1008]


def test_talking_over_the_agent_clears_plivos_queue(gateway: Server, report_figure):
    """Barge-in on Plivo: the gateway sends clearAudio, the phone drops its queue and answers
    clearedAudio, and the gateway takes the caller's turn."""
    first, over = select_prompts(2, seed=5, min_secs=1.5, max_secs=3.5)
    call = start_call(
        gateway, [first.wav, over.wav], "--agent", "chatty", "--barge-in-at", "1.0",
        "--hangup-after", "12",
    )
    events = finish_call(call, 60)
    summary = events[-1]
    names = [e["event"] for e in events]
    assert "clear_received" in names and "clear_answered" in names, names
    assert summary["barge_in_clear_ms"] is not None and summary["barge_in_clear_ms"] < 1500
    # What Plivo still held is dropped: never more than the gateway's playout lead (100 ms).
    assert 0 < summary["agent_audio_dropped_secs"] <= 0.25
    cleared = names.index("clear_received")
    stopped = [e["t"] for e in events[cleared:] if e["event"] == "agent_audio_stopped"]
    assert stopped and stopped[0] - events[cleared]["t"] < 1.0  # quiet at once (+ quiet_secs)
    assert len(said_by(summary, "user")) == 2
    record = call_record(gateway, summary["call_id"])
    assert record["interruptions"] >= 1
    report_figure("plivo_barge_in_clear_ms", summary["barge_in_clear_ms"])
