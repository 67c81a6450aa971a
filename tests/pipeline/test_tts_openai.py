"""OpenAITTS against the loopback fake of the OpenAI API."""

from __future__ import annotations

import asyncio
import statistics
import time

import numpy as np
import pytest

from pipeline.cloud_errors import ServiceError
from pipeline.openai_endpoint import close_shared_clients
from pipeline.resample import StreamResampler
from pipeline.tts.openai import OpenAITTS, OpenAITTSConfig
from tests.fakes.openai_server import FakeOpenAI, SpeechReply, error_reply, tone


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(autouse=True)
async def fresh(fake):
    fake.speech.clear()
    fake.requests.clear()
    yield
    await close_shared_clients()


def tts(fake: FakeOpenAI, **options) -> OpenAITTS:
    return OpenAITTS("tts-1", "nova", fake.base_url, fake.api_key, **options)


async def test_streams_16k_pcm_equal_to_a_one_shot_conversion(fake):
    pcm = tone(0.5)
    fake.speech.append(SpeechReply(pcm, chunk_bytes=1001))  # odd: samples split across chunks
    chunks = [c async for c in tts(fake, instructions="Cheerful.").synthesize("Hello there")]
    assert len(chunks) > 3 and all(len(c) % 2 == 0 for c in chunks)
    one_shot = StreamResampler(24_000, 16_000)
    expected = np.frombuffer(one_shot.process(pcm) + one_shot.flush(), np.int16)
    got = np.frombuffer(b"".join(chunks), np.int16)
    assert len(got) == len(expected) == 8000
    assert np.abs(got.astype(int) - expected).max() <= 2
    sent = fake.requests[-1]
    assert sent.headers["authorization"] == f"Bearer {fake.api_key}"
    assert sent.json == {
        "model": "tts-1",
        "input": "Hello there",
        "voice": "nova",
        "response_format": "pcm",
        "instructions": "Cheerful.",
    }


async def test_first_audio_before_the_answer_ends(fake):
    fake.speech.append(SpeechReply(tone(1.0), chunk_bytes=4800, chunk_delay_secs=0.05))
    started = time.perf_counter()
    async for chunk in tts(fake).synthesize("x"):
        assert chunk
        break
    assert time.perf_counter() - started < 0.3  # the whole answer takes 0.5 s


async def test_stopping_early_closes_the_stream(fake):
    total = tone(2.0)
    fake.speech.append(SpeechReply(total, chunk_bytes=4800, chunk_delay_secs=0.02))
    fake.speech_closed.clear()
    audio = tts(fake).synthesize("long")
    await anext(audio)
    await audio.aclose()
    for _ in range(50):
        if fake.speech_closed:
            break
        await asyncio.sleep(0.01)
    assert fake.speech_closed, "the server never saw the client leave"
    assert fake.speech_closed[0][1] < len(total) / 4


async def test_cancelling_the_consumer_closes_the_stream(fake):
    fake.speech.append(SpeechReply(tone(2.0), chunk_bytes=4800, chunk_delay_secs=0.02))
    fake.speech_closed.clear()

    async def play() -> None:
        async for _ in tts(fake).synthesize("long"):
            pass

    task = asyncio.create_task(play())
    await asyncio.sleep(0.1)
    task.cancel()
    cancelled = time.perf_counter()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(50):
        if fake.speech_closed:
            break
        await asyncio.sleep(0.01)
    assert fake.speech_closed and fake.speech_closed[0][0] - cancelled < 0.3


ERRORS = [(401, "auth"), (429, "rate_limited"), (500, "server")]


@pytest.mark.parametrize(("status", "kind"), ERRORS)
async def test_http_errors(fake, status, kind):
    reply = error_reply(status, f"failure {status}", "server_error", None)
    fake.speech.append(SpeechReply(status=status, error=reply.error))
    with pytest.raises(ServiceError) as caught:
        async for _ in tts(fake).synthesize("x"):
            pass
    assert (caught.value.kind, caught.value.status) == (kind, status)


async def test_dropped_mid_answer_is_stream_broken_after_the_audio_so_far(fake):
    fake.speech.append(SpeechReply(tone(1.0), chunk_bytes=4800, drop_after=3))
    got = []
    with pytest.raises(ServiceError) as caught:
        async for chunk in tts(fake).synthesize("x"):
            got.append(chunk)
    assert caught.value.kind == "stream_broken"
    assert got


async def test_slow_answer_times_out(fake):
    fake.speech.append(SpeechReply(tone(0.2), chunk_delay_secs=1.0))
    with pytest.raises(ServiceError) as caught:
        async for _ in tts(fake, timeout_secs=0.2).synthesize("x"):
            pass
    assert caught.value.kind == "timeout"


def test_config():
    config = OpenAITTSConfig(voice="shimmer", api_key="sk-abc")
    assert "sk-abc" not in repr(config)
    assert isinstance(OpenAITTS.from_config(config), OpenAITTS)


async def test_first_chunk_latency(fake, report_figure):
    """Gateway-added latency: the fake's first PCM byte -> the client's first 16 kHz chunk
    (100 ms network chunks, as resampling needs ~40 ms of input before its first output)."""
    model = tts(fake)
    samples = []
    for _ in range(30):
        fake.speech.append(SpeechReply(tone(0.3), chunk_bytes=4800, chunk_delay_secs=0.005))
        async for _ in model.synthesize("x"):
            samples.append((time.perf_counter() - fake.first_audio_sent[-1]) * 1000)
            break
    samples.sort()
    p95 = samples[int(0.95 * len(samples)) - 1]
    report_figure(
        "openai_tts_first_chunk_ms",
        {"p50": round(statistics.median(samples), 2), "p95": round(p95, 2)},
    )
    assert p95 < 20  # the target is 5 ms; loose here for a shared CI machine
