"""The simulated phone against a fake gateway that checks it the way Callgate would.

The fake runs in its own thread and event loop (uvicorn on a free loopback port), so its
timing does not share a loop with the phone's 20 ms clock. It validates Twilio signatures with
the twilio SDK, plays a greeting and answers with tones followed by marks, detects the caller
by energy, clears when the caller talks over an answer, and records when it did each thing
(time.monotonic, shared by both threads) so the phone's measurements can be checked.
"""

from __future__ import annotations

import asyncio
import audioop
import base64
import contextlib
import socket
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from twilio.request_validator import RequestValidator

from gateway.simulated_audio import ULAW_SILENCE, load_caller_wav, speech_bounds
from gateway.simulated_call import CallOptions, run_call
from gateway.simulated_playback import Playout

TOKEN = "test-auth-token"
API_KEY = "test-api-key"
PUBLIC = "https://callgate.example.test"
STREAM_URL = PUBLIC.replace("https", "wss") + "/twilio/media?agent=bench&x=1"
TRANSCRIPT = [{"role": "assistant", "text": "Hello"}, {"role": "user", "text": "Hi"}]
VOICED_RMS = 300.0  # caller frames above this are speech to the fake's detector
TURN_END_SECS = 0.3
THINK_SECS = 0.25
GREETING_DELAY = 0.15


def tone(secs: float, freq: float, rate: int = 8000, amp: float = 8000.0) -> np.ndarray:
    t = np.arange(int(secs * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def write_wav(path: Path, samples: np.ndarray, rate: int = 8000, channels: int = 1) -> Path:
    data = np.repeat(samples[:, None], channels, axis=1) if channels > 1 else samples
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(data.astype(np.int16).tobytes())
    return path


def caller_wav(path: Path, lead: float, speech: float, tail: float, rate: int = 8000, **kw) -> Path:
    rng = np.random.default_rng(7)
    noise = lambda secs: rng.normal(0, 8, int(secs * rate)).astype(np.int16)  # noqa: E731
    samples = np.concatenate([noise(lead), tone(speech, 300, rate), noise(tail)])
    return write_wav(path, samples, rate, **kw)


@dataclass
class Fake:
    """What the fake gateway does and saw; times are time.monotonic()."""

    answers: list[float]  # seconds of each answer tone, one per caller turn
    public: str | None = PUBLIC  # CALLGATE_PUBLIC_URL the phone should sign over (None: our URL)
    clear_on_barge: bool = False  # clear the first answer when the caller talks over it
    greeting_secs: float = 0.6
    twiml: str | None = None  # override the answer document
    hang_up_after_last: float | None = None  # close the socket this long after the last answer
    webhook_ok: bool | None = None
    upgrade_ok: bool | None = None
    start: dict = field(default_factory=dict)
    start_rx: float = 0.0
    greeting_tx: float = 0.0
    answer_tx: list[float] = field(default_factory=list)
    last_voiced_rx: list[float] = field(default_factory=list)
    marks_tx: dict[str, float] = field(default_factory=dict)
    marks_rx: dict[str, float] = field(default_factory=dict)
    barge_onset_rx: float | None = None
    clear_tx: float | None = None
    sent_secs: float = 0.0
    stop_rx: bool = False
    polls: int = 0
    media_seq: list[int] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/twilio/voice", self.voice, methods=["POST"]),
                WebSocketRoute("/twilio/media", self.media),
                Route("/v1/calls/{call_id}", self.call_record),
            ]
        )

    async def voice(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        url = str(request.url)
        if self.public is not None:
            url = (
                self.public
                + request.url.path
                + (f"?{request.url.query}" if request.url.query else "")
            )
        sig = request.headers.get("X-Twilio-Signature", "")
        self.webhook_ok = RequestValidator(TOKEN).validate(url, form, sig)
        if not self.webhook_ok:
            return Response("bad signature", status_code=403)
        twiml = self.twiml or (
            f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="'
            f'{STREAM_URL.replace("&", "&amp;")}"><Parameter name="call_id" value="c-1"/>'
            '<Parameter name="token" value="tok-1"/></Stream></Connect></Response>'
        )
        return Response(twiml, media_type="text/xml")

    async def call_record(self, request: Request) -> Response:
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return JSONResponse({"error": {"code": "unauthorized"}}, status_code=401)
        self.polls += 1
        status = "completed" if self.polls > 1 else "in-progress"  # makes the phone poll
        return JSONResponse({"id": "c-1", "status": status, "transcript": TRANSCRIPT})

    async def media(self, ws: WebSocket) -> None:
        sig = ws.headers.get("x-twilio-signature", "")
        self.upgrade_ok = RequestValidator(TOKEN).validate(STREAM_URL, {}, sig)
        if not self.upgrade_ok:
            await ws.close(code=1008)
            return
        await ws.accept()
        assert (await ws.receive_json())["event"] == "connected"
        self.start = await ws.receive_json()
        self.start_rx = time.monotonic()
        sid = self.start["streamSid"]
        turn_ended: asyncio.Queue[float] = asyncio.Queue()
        barged = asyncio.Event()
        answering = False

        async def listen() -> None:
            speaking, last_voiced, run = False, 0.0, 0
            with contextlib.suppress(Exception):
                while True:
                    msg = await ws.receive_json()
                    now = time.monotonic()
                    self.media_seq.append(int(msg["sequenceNumber"]))
                    if msg["event"] == "mark":
                        self.marks_rx[msg["mark"]["name"]] = now
                    elif msg["event"] == "stop":
                        self.stop_rx = True
                        return
                    elif msg["event"] == "media":
                        pcm = audioop.ulaw2lin(base64.b64decode(msg["media"]["payload"]), 2)
                        if audioop.rms(pcm, 2) > VOICED_RMS:
                            run += 1
                            if run == 1 and answering and self.barge_onset_rx is None:
                                self.barge_onset_rx = now
                            if run == 3 and answering:
                                barged.set()
                            speaking, last_voiced = True, now
                        else:
                            run = 0
                            if speaking and now - last_voiced >= TURN_END_SECS:
                                speaking = False
                                self.last_voiced_rx.append(last_voiced)
                                turn_ended.put_nowait(last_voiced)

        async def play(secs: float, mark: str) -> float:
            chunks = audioop.lin2ulaw(tone(secs, 600).tobytes(), 2)
            sent = time.monotonic()
            for i in range(0, len(chunks), 160):  # sent ahead, all at once, as a gateway may
                payload = base64.b64encode(chunks[i : i + 160]).decode()
                await ws.send_json(
                    {"event": "media", "streamSid": sid, "media": {"payload": payload}}
                )
            await ws.send_json({"event": "mark", "streamSid": sid, "mark": {"name": mark}})
            self.marks_tx[mark] = sent
            self.sent_secs += secs
            return sent

        listener = asyncio.create_task(listen())
        await asyncio.sleep(GREETING_DELAY)
        self.greeting_tx = await play(self.greeting_secs, "greeting")
        for i, secs in enumerate(self.answers):
            await turn_ended.get()
            await asyncio.sleep(THINK_SECS)
            answering = True
            self.answer_tx.append(await play(secs, f"answer{i}"))
            if i == 0 and self.clear_on_barge:
                await barged.wait()
                await ws.send_json({"event": "clear", "streamSid": sid})
                self.clear_tx = time.monotonic()
            answering = False
        if self.hang_up_after_last is not None:
            await asyncio.sleep(self.hang_up_after_last)
            await ws.close()
        with contextlib.suppress(Exception):
            await listener


@contextlib.contextmanager
def serve(fake: Fake):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(fake.app(), log_level="warning", lifespan="off", ws_ping_interval=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()


def onset_in(pcm: np.ndarray, after: float, rate: int = 8000) -> float:
    """Seconds at which the recording first goes loud at or after `after` seconds."""
    start = int(after * rate)
    loud = np.flatnonzero(np.abs(pcm[start:].astype(np.int32)) > 2000)
    return (start + loud[0]) / rate


def read_recording(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)


async def test_two_turns_marks_latency_recording(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CALLGATE_PUBLIC_URL", PUBLIC)
    fake = Fake(answers=[0.8, 0.6])
    wavs = [
        caller_wav(tmp_path / "a.wav", 0.1, 0.5, 0.4),
        caller_wav(tmp_path / "b.wav", 0.2, 0.4, 0.5, rate=16000, channels=2),
    ]
    events: list[dict] = []
    with serve(fake) as url:
        summary = await run_call(
            CallOptions(
                url,
                "twilio",
                wavs,
                out=tmp_path / "heard.wav",
                auth_token=TOKEN,
                api_key=API_KEY,
                agent="bench",
            ),
            events.append,
        )

    assert fake.webhook_ok and fake.upgrade_ok
    start = fake.start["start"]
    assert start["customParameters"] == {"call_id": "c-1", "token": "tok-1"}
    assert start["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert fake.media_seq == sorted(fake.media_seq) and len(set(fake.media_seq)) == len(
        fake.media_seq
    )
    assert fake.stop_rx
    assert summary["event"] == "summary" and events[-1] is summary
    assert summary["call_id"] == "c-1" and summary["status"] == "completed"
    assert summary["hangup_by"] == "caller"
    assert summary["transcript"] == TRANSCRIPT and fake.polls == 2
    names = [e["event"] for e in events]
    for expected in (
        "webhook",
        "twiml",
        "ws_open",
        "start_sent",
        "agent_audio_started",
        "agent_audio_stopped",
        "caller_speech_started",
        "caller_speech_ended",
        "mark_echoed",
        "hangup",
    ):
        assert expected in names

    # Marks come back when their audio has played out, not when it arrived.
    for name, secs in (("greeting", 0.6), ("answer0", 0.8), ("answer1", 0.6)):
        held = fake.marks_rx[name] - fake.marks_tx[name]
        assert secs - 0.01 <= held <= secs + 0.08, (name, held)

    # Latencies are what the fake did: its own delays, seen from the other end of the line.
    latency = summary["latency_ms"]
    assert abs(latency["first_greeting_audio"] - (fake.greeting_tx - fake.start_rx) * 1000) < 30
    assert latency["first_greeting_audio"] >= GREETING_DELAY * 1000 - 5
    measured = latency["end_of_speech_to_first_audio"]
    done_by_fake = [
        (a - v) * 1000 for a, v in zip(fake.answer_tx, fake.last_voiced_rx, strict=True)
    ]
    assert len(measured) == 2
    for got, want in zip(measured, done_by_fake, strict=True):
        assert abs(got - want) < 30, (measured, done_by_fake)
        assert got >= (TURN_END_SECS + THINK_SECS) * 1000 - 25

    # The recording is aligned to the stream: tones sit where the fake sent them.
    pcm = read_recording(tmp_path / "heard.wav")
    assert abs(len(pcm) / 8000 - summary["duration_secs"]) < 0.05
    assert abs(onset_in(pcm, 0) - (fake.greeting_tx - fake.start_rx)) < 0.03
    for sent in fake.answer_tx:
        at = sent - fake.start_rx
        assert abs(onset_in(pcm, at - 0.1) - at) < 0.03
    assert summary["agent_audio_secs"] == pytest.approx(2.0, abs=0.01)


async def test_barge_in_clears_queued_audio_and_agent_hangs_up(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CALLGATE_PUBLIC_URL", raising=False)
    fake = Fake(answers=[2.0, 0.4], public=None, clear_on_barge=True, hang_up_after_last=0.5)
    wav = caller_wav(tmp_path / "a.wav", 0.2, 0.5, 0.4)
    events: list[dict] = []
    with serve(fake) as url:
        summary = await run_call(
            CallOptions(
                url,
                "twilio",
                [wav],
                out=tmp_path / "heard.wav",
                barge_in_at=0.5,
                auth_token=TOKEN,
                api_key=API_KEY,
            ),
            events.append,
        )

    assert fake.webhook_ok and fake.upgrade_ok
    assert summary["hangup_by"] == "agent" and not fake.stop_rx
    assert fake.clear_tx is not None and fake.barge_onset_rx is not None
    # The caller started over the answer barge_in_at after it began (speech onset, not the
    # wav's first sample: the wav leads with 0.2 s of near-silence).
    barge_onset = fake.barge_onset_rx - fake.answer_tx[0]
    assert 0.5 + 0.2 - 0.03 <= barge_onset <= 0.5 + 0.2 + 0.06
    want = (fake.clear_tx - fake.barge_onset_rx) * 1000
    assert abs(summary["barge_in_clear_ms"] - want) < 30
    # Clear dropped the queued rest of the long answer, and its mark came back at once.
    assert fake.marks_rx["answer0"] - fake.clear_tx < 0.05
    heard = summary["agent_audio_secs"]
    assert heard < fake.sent_secs - 1.0
    assert summary["agent_audio_dropped_secs"] == pytest.approx(fake.sent_secs - heard, abs=0.03)
    assert any(e["event"] == "clear_received" for e in events)
    pcm = read_recording(tmp_path / "heard.wav")
    cut = fake.clear_tx - fake.start_rx
    assert np.abs(pcm[int((cut + 0.03) * 8000) : int((cut + 0.3) * 8000)]).max() < 100
    assert len(summary["latency_ms"]["end_of_speech_to_first_audio"]) == 2


async def test_bad_signature_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CALLGATE_PUBLIC_URL", PUBLIC)
    fake = Fake(answers=[])
    events: list[dict] = []
    with serve(fake) as url:
        summary = await run_call(
            CallOptions(
                url,
                "twilio",
                [caller_wav(tmp_path / "a.wav", 0, 0.2, 0)],
                auth_token="wrong",
                api_key=API_KEY,
            ),
            events.append,
        )
    assert fake.webhook_ok is False
    assert summary["status"] == "failed" and summary["transcript"] == []
    assert {k: events[0][k] for k in ("event", "status")} == {"event": "webhook", "status": 403}


async def test_reject_ends_without_stream(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CALLGATE_PUBLIC_URL", PUBLIC)
    fake = Fake(answers=[], twiml='<Response><Reject reason="busy"/></Response>')
    events: list[dict] = []
    with serve(fake) as url:
        summary = await run_call(
            CallOptions(
                url,
                "twilio",
                [caller_wav(tmp_path / "a.wav", 0, 0.2, 0)],
                auth_token=TOKEN,
                out=tmp_path / "heard.wav",
            ),
            events.append,
        )
    assert summary["status"] == "rejected" and summary["hangup_by"] == "agent"
    assert any(e["event"] == "no_stream" for e in events)
    assert read_recording(tmp_path / "heard.wav").size == 0


async def test_plivo_call_to_an_unreachable_gateway_fails_cleanly(tmp_path: Path) -> None:
    wav = caller_wav(tmp_path / "x.wav", 0.1, 0.3, 0.1)
    events: list[dict] = []
    options = CallOptions("http://127.0.0.1:1", "plivo", [wav], auth_token="", api_key="")
    summary = await run_call(options, events.append)
    assert (summary["status"], summary["call_id"]) == ("failed", None)
    assert [e["stage"] for e in events if e["event"] == "error"] == ["webhook"]


def test_speech_bounds_ignore_leading_and_trailing_quiet(tmp_path: Path) -> None:
    audio = load_caller_wav(caller_wav(tmp_path / "a.wav", 0.3, 0.5, 0.7, rate=22050))
    assert audio.onset_frame == 15 and audio.last_voiced_frame in (39, 40)
    assert audio.frames == 75
    assert speech_bounds(np.zeros(800, dtype=np.int16)) is None


def test_playout_marks_clear_and_alignment() -> None:
    p = Playout()
    chunk = audioop.lin2ulaw(tone(0.02, 600).tobytes(), 2)
    assert p.push_mark("early", 0.0) == ["early"]  # nothing queued: reached at once
    for _ in range(10):
        assert p.push_audio(chunk, 0.5) == []  # 0.2 s arrives at once, at 0.5 s
    assert p.push_mark("m1", 0.5) == []
    assert p.advance(0.69) == [] and p.playing
    assert p.advance(0.70) == ["m1"] and not p.playing
    for _ in range(10):
        p.push_audio(chunk, 1.0)
    p.push_mark("m2", 1.0)
    assert p.clear(1.05) == ["m2"]
    assert p.played_secs == pytest.approx(0.25, abs=1e-3)
    assert p.dropped_secs == pytest.approx(0.15, abs=1e-3)
    rec = np.frombuffer(bytes(p.recording(1.2)), dtype=np.int16)
    assert len(rec) == 9600
    assert np.abs(rec[:4000]).max() == 0 and np.abs(rec[4000:5600]).max() > 2000
    assert np.abs(rec[5600:8000]).max() == 0 and np.abs(rec[8000:8400]).max() > 2000
    assert np.abs(rec[8400:]).max() == 0
    assert audioop.ulaw2lin(ULAW_SILENCE, 2) == bytes(320)


async def test_hangup_after_caps_the_call(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CALLGATE_PUBLIC_URL", PUBLIC)
    fake = Fake(answers=[], greeting_secs=3.0)
    with serve(fake) as url:
        summary = await run_call(
            CallOptions(
                url,
                "twilio",
                [caller_wav(tmp_path / "a.wav", 0, 0.2, 0)],
                out=tmp_path / "heard.wav",
                hangup_after=0.6,
                auth_token=TOKEN,
                api_key=API_KEY,
            ),
            lambda e: None,
        )
    assert summary["hangup_by"] == "caller" and fake.stop_rx
    assert summary["duration_secs"] == pytest.approx(0.6, abs=0.03)
    assert "greeting" not in fake.marks_rx  # its audio never finished playing
    heard = 0.6 - summary["latency_ms"]["first_greeting_audio"] / 1000
    assert summary["agent_audio_secs"] == pytest.approx(heard, abs=0.03)
    assert read_recording(tmp_path / "heard.wav").size == pytest.approx(0.6 * 8000, abs=250)


async def test_upgrade_signed_over_the_stream_url(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CALLGATE_PUBLIC_URL", PUBLIC)
    other = STREAM_URL.replace("x=1", "x=2")  # the phone signs this; the fake expects STREAM_URL
    twiml = f'<Response><Connect><Stream url="{other.replace("&", "&amp;")}"/></Connect></Response>'
    fake = Fake(answers=[], twiml=twiml)
    events: list[dict] = []
    with serve(fake) as url:
        summary = await run_call(
            CallOptions(
                url,
                "twilio",
                [caller_wav(tmp_path / "a.wav", 0, 0.2, 0)],
                auth_token=TOKEN,
                api_key=API_KEY,
            ),
            events.append,
        )
    assert fake.webhook_ok and fake.upgrade_ok is False
    assert summary["status"] == "failed"
    assert any(e["event"] == "error" and e["stage"] == "media" for e in events)
