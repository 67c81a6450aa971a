"""CallRecorder: time alignment of the two tracks, clears, the files; the Playout hook."""

from __future__ import annotations

import asyncio
import json
import secrets
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from gateway.playout import Playout
from gateway.recording import CallRecorder
from pipeline.agent import AgentConfig
from pipeline.frames import AudioFrame
from tests.corpus import select_prompts
from tests.gateway.cli_calls import finish_cli_call, start_cli_call, wait_for_logs
from tests.gateway.server import TEST_AGENT, start_server, write_config

RATE = 8000
DELAY = 40
"""Samples of slack for the resampler's filter delay (about 24 samples)."""


class Clock:
    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def tone(secs: float, hz: float = 440, level: float = 8000) -> bytes:
    t = np.arange(round(secs * 16000)) / 16000
    return (level * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def frames(pcm: bytes) -> list[bytes]:
    return [pcm[i : i + 640] for i in range(0, len(pcm), 640)]


def read_wav(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, RATE)
        audio = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return audio[0::2], audio[1::2]


def loud(track: np.ndarray) -> np.ndarray:
    """Indices of samples clearly above silence."""
    return np.flatnonzero(np.abs(track.astype(np.int32)) > 1000)


def test_an_agent_frame_lands_at_its_play_time(tmp_path: Path):
    clock = Clock()
    recorder = CallRecorder(tmp_path, "cg_1", clock=clock)
    for n, frame in enumerate(frames(tone(0.2))):
        recorder.played(frame, "pcm16k", plays_at=100.5 + n * 0.02)
    clock.now = 101.0
    caller, agent = read_wav(recorder.finish([], {}))
    assert len(agent) == RATE  # up to the end of the call
    heard = loud(agent)
    assert 4000 <= heard[0] <= 4000 + DELAY
    assert 5600 - DELAY <= heard[-1] <= 5600 + DELAY
    assert len(loud(caller)) == 0


def test_caller_frames_are_continuous_from_the_first(tmp_path: Path):
    clock = Clock()
    recorder = CallRecorder(tmp_path, "cg_2", clock=clock)
    clock.now = 100.25
    for frame in frames(tone(0.5)):  # a burst: all arrive at once, yet play one after another
        recorder.caller(AudioFrame(frame))
    clock.now = 101.0
    caller, agent = read_wav(recorder.finish([], {}))
    heard = loud(caller)
    assert 2000 <= heard[0] <= 2000 + DELAY
    assert 6000 - DELAY <= heard[-1] <= 6000 + DELAY
    assert np.all(np.diff(heard) < 20)  # no holes in a continuous tone
    assert len(loud(agent)) == 0


def test_a_caller_stream_gap_is_kept_as_silence(tmp_path: Path):
    clock = Clock()
    recorder = CallRecorder(tmp_path, "cg_3", clock=clock)
    for frame in frames(tone(0.2)):
        recorder.caller(AudioFrame(frame))
    clock.now = 102.0  # the stream paused (hold) for almost two seconds
    for frame in frames(tone(0.2)):
        recorder.caller(AudioFrame(frame))
    clock.now = 103.0
    caller, _ = read_wav(recorder.finish([], {}))
    heard = loud(caller)
    assert heard[-1] < 1600 + DELAY or heard[-1] > 16000
    assert 16000 <= heard[heard > 2000][0] <= 16000 + DELAY


def test_a_clear_cuts_what_the_far_end_had_not_played(tmp_path: Path):
    clock = Clock()
    recorder = CallRecorder(tmp_path, "cg_4", clock=clock)
    for n, frame in enumerate(frames(tone(0.4))):  # sent ahead: to play from 100.0 to 100.4
        recorder.played(frame, "pcm16k", plays_at=100.0 + n * 0.02)
    recorder.cleared(at=100.1)
    for n, frame in enumerate(frames(tone(0.1))):  # the next answer, after the clear
        recorder.played(frame, "pcm16k", plays_at=100.6 + n * 0.02)
    clock.now = 101.0
    _, agent = read_wav(recorder.finish([], {}))
    heard = loud(agent)
    assert heard[0] <= DELAY
    assert 800 - DELAY <= heard[heard < 4000][-1] <= 800
    assert 4800 <= heard[heard > 4000][0] <= 4800 + DELAY
    assert 5600 - DELAY <= heard[-1] <= 5600 + DELAY


def test_left_is_the_caller_right_is_the_agent(tmp_path: Path):
    clock = Clock()
    recorder = CallRecorder(tmp_path, "cg_5", clock=clock)
    caller_pcm, agent_pcm = tone(0.4, hz=300), tone(0.4, hz=1200)
    for n, (c, a) in enumerate(zip(frames(caller_pcm), frames(agent_pcm), strict=True)):
        recorder.caller(AudioFrame(c))
        recorder.played(a, "pcm16k", plays_at=100.0 + n * 0.02)
    clock.now = 100.5
    left, right = read_wav(recorder.finish([], {}))
    for track, hz in ((left, 300), (right, 1200)):
        spectrum = np.abs(np.fft.rfft(track[100:3000].astype(np.float32)))
        assert abs(np.argmax(spectrum) * RATE / 2900 - hz) < 10


def test_the_json_holds_transcript_and_call_record(tmp_path: Path):
    clock = Clock()
    recorder = CallRecorder(tmp_path / "new" / "dir", "cg_6", clock=clock)
    clock.now = 100.1
    transcript = [{"role": "assistant", "text": "Hello."}, {"role": "user", "text": "Hi."}]
    wav_path = recorder.finish(transcript, {"id": "cg_6", "status": "completed"})
    assert wav_path == tmp_path / "new" / "dir" / "cg_6.wav"
    summary = json.loads((tmp_path / "new" / "dir" / "cg_6.json").read_text())
    assert summary["transcript"] == transcript
    assert summary["call"] == {"id": "cg_6", "status": "completed"}
    assert summary["audio"] == "cg_6.wav"
    assert sorted(p.name for p in wav_path.parent.iterdir()) == ["cg_6.json", "cg_6.wav"]


def test_a_failing_recording_never_reaches_the_call(tmp_path: Path):
    recorder = CallRecorder(tmp_path, "cg_7")
    recorder._agent.close()  # the disk went away
    with capture_logs() as logs:
        for frame in frames(tone(0.1)):
            recorder.played(frame, "pcm16k", plays_at=0.0)
            recorder.caller(AudioFrame(frame))
        recorder.cleared(0.0)
        assert recorder.finish([], {}) is None
    assert [entry["event"] for entry in logs] == ["call_recording_failed"]
    assert not (tmp_path / "cg_7.wav").exists()


def test_unsafe_call_ids_are_refused(tmp_path: Path):
    with pytest.raises(ValueError):
        CallRecorder(tmp_path, "../escape")


def test_the_recording_section_is_strict():
    assert AgentConfig().recording.enabled is False
    config = AgentConfig.model_validate({"recording": {"enabled": True, "directory": "/x"}})
    assert config.recording.directory == "/x"
    with pytest.raises(ValidationError):
        AgentConfig.model_validate({"recording": {"enabled": True, "dir": "/x"}})


class _Sink:
    async def send_audio(self, audio: bytes, encoding: str = "pcm16k") -> None: ...
    async def send_mark(self, name: str) -> None: ...
    async def send_clear(self) -> None: ...


class _Listener:
    def __init__(self):
        self.plays: list[float] = []
        self.clears: list[float] = []

    def played(self, frame: bytes, encoding: str, plays_at: float) -> None:
        self.plays.append(plays_at)

    def cleared(self, at: float) -> None:
        self.clears.append(at)


async def test_playout_tells_its_listener_when_each_frame_plays():
    playout = Playout(_Sink(), lead_secs=0.1)
    listener = playout.listener = _Listener()
    writer = asyncio.create_task(playout.run())
    try:
        start = asyncio.get_running_loop().time()
        await playout.play(tone(0.2))
        await asyncio.sleep(0.25)
        assert len(listener.plays) == 10
        assert listener.plays[0] == pytest.approx(start, abs=0.03)
        assert np.allclose(np.diff(listener.plays), 0.02)
        playout.play(tone(1.0))
        await asyncio.sleep(0.1)
        cleared_at = asyncio.get_running_loop().time()
        playout.clear()
        assert listener.clears == [pytest.approx(cleared_at, abs=0.01)]
        assert listener.plays[-1] > cleared_at  # that frame was sent ahead, then cut
    finally:
        writer.cancel()


@pytest.mark.slow
def test_a_real_call_is_recorded(tmp_path: Path):
    prompt = select_prompts(1, seed=3)[0]
    recordings = tmp_path / "recordings"
    agent = {**TEST_AGENT, "recording": {"enabled": True, "directory": str(recordings)}}
    config = write_config(tmp_path / "config", {"recorded": agent})
    env = {"CALLGATE_API_KEY": "test-key-" + secrets.token_hex(8)}
    env["CALLGATE_SECRET"] = secrets.token_hex(16)
    server = start_server(config, env, tmp_path / "server.log")
    try:
        call = start_cli_call(server.url, server.env, [prompt.wav], "--agent", "recorded")
        summary = finish_cli_call(call, timeout=120)[-1]
        call_id = summary["call_id"]
        json_path = recordings / f"{call_id}.json"
        wait_for_logs(server, lambda lines: json_path.exists(), timeout=30)
        response = httpx.get(
            f"{server.url}/v1/calls/{call_id}",
            headers={"Authorization": f"Bearer {env['CALLGATE_API_KEY']}"},
        )
    finally:
        assert server.stop() == 0
    record = response.json()
    saved = json.loads(json_path.read_text())
    assert saved["transcript"] == record["transcript"]
    assert [turn["role"] for turn in saved["transcript"]][:2] == ["assistant", "user"]
    assert saved["call"]["id"] == call_id and saved["call"]["status"] == "completed"

    caller, agent_track = read_wav(recordings / f"{call_id}.wav")
    assert len(caller) / RATE == pytest.approx(record["duration_secs"], abs=0.5)
    caller_on, agent_on = voiced(caller), voiced(agent_track)
    assert caller_on.sum() * 0.02 > 0.5 * prompt.duration
    assert agent_on.sum() * 0.02 > 1.0  # the greeting and an answer
    first_caller = np.flatnonzero(caller_on)[0]
    assert first_caller > np.flatnonzero(agent_on)[0]  # the greeting came first
    assert agent_on[first_caller:].any()  # and an answer after the caller spoke
    both = (caller_on & agent_on).sum()
    assert both < 0.1 * min(caller_on.sum(), agent_on.sum())


def voiced(track: np.ndarray) -> np.ndarray:
    """Per 20 ms window: is it louder than line noise?"""
    windows = track[: len(track) // 160 * 160].reshape(-1, 160).astype(np.float32)
    return np.sqrt((windows**2).mean(axis=1)) > 300
