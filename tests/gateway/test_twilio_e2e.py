"""The spine: real gateway process, `callgate call` with real human speech, the offline agent."""

from __future__ import annotations

import json
import statistics
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.corpus import Prompt, asterisk_prompts, select_prompts, word_error_rate
from tests.gateway.server import CALLGATE, Server

pytestmark = pytest.mark.slow


def start_call(server: Server, wavs: list[Path], *extra: str) -> subprocess.Popen[str]:
    args = [str(CALLGATE), "call", "--gateway", server.url, "--provider", "twilio"]
    for wav in wavs:
        args += ["--wav", str(wav)]
    return subprocess.Popen(
        [*args, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=server.env,
    )


def finish_call(process: subprocess.Popen[str], timeout: float = 180) -> list[dict]:
    """Every JSON event the simulated caller printed; the summary is the last."""
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, (err[-2000:], out[-3000:])
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert events and events[-1]["event"] == "summary", out
    return events


def said_by(summary: dict, role: str) -> list[str]:
    return [turn["text"] for turn in summary["transcript"] if turn["role"] == role]


def test_real_speech_is_understood_and_answered(gateway: Server, tmp_path: Path, report_figure):
    prompts = select_prompts(20, seed=7)
    halves = [prompts[:10], prompts[10:]]
    outs = [tmp_path / "first.wav", tmp_path / "second.wav"]
    calls = [
        start_call(gateway, [p.wav for p in half], "--agent", "terse", "--out", str(out))
        for half, out in zip(halves, outs, strict=True)
    ]
    summaries = [finish_call(call)[-1] for call in calls]

    refs = [" ".join(p.text for p in half) for half in halves]
    hyps = [" ".join(said_by(summary, "user")) for summary in summaries]
    wer = word_error_rate(refs, hyps)
    latencies = [ms for s in summaries for ms in s["latency_ms"]["end_of_speech_to_first_audio"]]
    report_figure("spine_wer_20_prompts", round(wer, 3))
    report_figure("spine_eos_to_first_audio_ms_median", statistics.median(latencies))
    report_figure("spine_eos_to_first_audio_ms_all", latencies)
    report_figure(
        "spine_first_greeting_audio_ms",
        [s["latency_ms"]["first_greeting_audio"] for s in summaries],
    )
    assert wer <= 0.25, list(zip(refs, hyps, strict=True))
    for summary, out, half in zip(summaries, outs, halves, strict=True):
        answers = said_by(summary, "assistant")
        assert answers[0] == "Hello, how can I help?"
        assert len(answers) >= len(half) + 1  # the greeting, then one answer per caller turn
        assert len(summary["latency_ms"]["end_of_speech_to_first_audio"]) == len(half)
        assert _voiced_seconds(out) > 0.8 * len(answers) * 0.4


def test_default_agent_greets_answers_and_hangs_up_through_rest(
    gateway: Server, fake_twilio, tmp_path: Path
):
    prompts = {p.name: p for p in asterisk_prompts()}
    live = fake_twilio.add_call()
    wavs = [prompts["hours"].wav, prompts["vm-goodbye"].wav]
    call = start_call(gateway, wavs, "--out", str(tmp_path / "o.wav"), "--call-sid", live.sid)
    events = finish_call(call)
    summary = events[-1]
    answers = said_by(summary, "assistant")
    assert answers[0].startswith("Hello! Thanks for calling Callgate")
    assert "open from nine" in answers[1]  # the "hours" intent matched the caller's words
    assert answers[-1] == "Thank you for calling. Goodbye!"
    assert summary["hangup_by"] == "agent"
    hangups = [r for r in fake_twilio.requests if r.path.endswith(f"/Calls/{live.sid}.json")]
    assert [r.form for r in hangups] == [{"Status": "completed"}]
    assert fake_twilio.calls[live.sid].status == "completed"


def _voiced_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as recording:
        audio = np.frombuffer(recording.readframes(recording.getnframes()), dtype="<i2")
        rate = recording.getframerate()
    frames = audio[: len(audio) // 160 * 160].reshape(-1, 160).astype(np.float32)
    loud = np.sqrt((frames**2).mean(axis=1)) > 300
    return float(loud.sum()) * 160 / rate


def test_prompt_texts_are_loaded():
    prompt: Prompt = next(p for p in asterisk_prompts() if p.name == "vm-goodbye")
    assert prompt.text.lower().startswith("goodbye")
