import asyncio
import time
from contextlib import aclosing

import numpy as np
import pytest

from pipeline.models import ModelMissing
from pipeline.stt.whisper import WhisperSTT, load_whisper
from pipeline.tts.espeak import EspeakError, EspeakTTS, _get_engine
from tests.corpus import normalize_words, skip_or_fail, word_error_rate

SENTENCE = "Thank you for calling. Please say the name of the person you want to reach."
LONG_TEXT = " ".join(["The quick brown fox jumps over the lazy dog."] * 200)  # ~10 minutes


async def speak(tts: EspeakTTS, text: str) -> bytes:
    return b"".join([chunk async for chunk in tts.synthesize(text)])


def seconds(pcm: bytes) -> float:
    return len(pcm) / 2 / 16000


async def test_speech_is_16khz_pcm_of_plausible_length() -> None:
    chunks = [chunk async for chunk in EspeakTTS().synthesize(SENTENCE)]
    assert len(chunks) > 10  # streamed, not one blob
    assert all(len(c) % 2 == 0 and c for c in chunks)
    pcm = np.frombuffer(b"".join(chunks), dtype=np.int16)
    # 15 words at 175 words per minute is about 5 s; the 16 kHz rate makes that ~80k samples.
    assert 3.5 < len(pcm) / 16000 < 7.0
    rms = np.sqrt(np.mean(pcm.astype(np.float64) ** 2))
    assert rms > 1000
    assert np.abs(pcm).max() > 8000


async def test_rate_changes_duration() -> None:
    slow = seconds(await speak(EspeakTTS(rate_wpm=120), SENTENCE))
    fast = seconds(await speak(EspeakTTS(rate_wpm=300), SENTENCE))
    assert slow > 1.8 * fast


async def test_end_pause_adds_trailing_silence() -> None:
    plain = np.frombuffer(await speak(EspeakTTS(), "Yes."), dtype=np.int16)
    paused = np.frombuffer(await speak(EspeakTTS(end_pause=True), "Yes."), dtype=np.int16)
    assert 0.2 < (len(paused) - len(plain)) / 16000 < 0.5
    assert np.abs(paused[len(plain) + 800 :]).max() < 300


async def test_blank_text_yields_nothing() -> None:
    assert await speak(EspeakTTS(), "  ") == b""


async def test_unknown_voice_is_an_error() -> None:
    with pytest.raises(EspeakError):
        await speak(EspeakTTS(voice="no-such-voice"), "Hello.")
    assert seconds(await speak(EspeakTTS(), "Hello.")) > 0.3  # the engine still works


def test_a_failing_sink_aborts_and_its_error_surfaces() -> None:
    calls = 0

    def sink(_pcm: bytes) -> bool:
        nonlocal calls
        calls += 1
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        _get_engine().synth(SENTENCE, "en-us", 175, 50, False, sink)
    assert calls == 1


async def test_first_chunk_arrives_before_synthesis_ends() -> None:
    tts = EspeakTTS()
    await tts.warm_up()
    started = time.perf_counter()
    async with aclosing(tts.synthesize(LONG_TEXT)) as stream:
        first = await anext(stream)
        first_latency = time.perf_counter() - started
        rest = [chunk async for chunk in stream]
    total = time.perf_counter() - started
    print(f"espeak first chunk {first_latency * 1000:.1f} ms, whole text {total * 1000:.0f} ms")
    assert first and rest
    assert first_latency < 0.1
    assert first_latency < total / 10


async def test_concurrent_requests_keep_their_own_settings() -> None:
    voices = [EspeakTTS(rate_wpm=120), EspeakTTS(rate_wpm=300), EspeakTTS(pitch=80)] * 2
    alone = [seconds(await speak(tts, SENTENCE)) for tts in voices]
    together = [seconds(pcm) for pcm in await asyncio.gather(*(speak(t, SENTENCE) for t in voices))]
    assert together == pytest.approx(alone, rel=0.02)


async def test_closing_the_stream_aborts_synthesis() -> None:
    tts = EspeakTTS()
    await tts.warm_up()
    started = time.perf_counter()
    full = await speak(tts, LONG_TEXT)
    full_time = time.perf_counter() - started

    async with aclosing(tts.synthesize(LONG_TEXT)) as stream:
        await anext(stream)
    started = time.perf_counter()
    after = await speak(tts, "Yes.")  # queued behind the aborted request, if it were running
    waited = time.perf_counter() - started
    assert waited < full_time / 5, (waited, full_time, seconds(full))
    assert 0.2 < seconds(after) < 1.0


async def test_cancelling_the_consumer_aborts_synthesis() -> None:
    tts = EspeakTTS()
    await tts.warm_up()
    received = asyncio.Event()

    async def consume() -> None:
        async for _chunk in tts.synthesize(LONG_TEXT):
            received.set()
            await asyncio.sleep(1)  # a slow consumer, like a caller hearing it in real time

    task = asyncio.create_task(consume())
    await received.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    started = time.perf_counter()
    await speak(tts, "Yes.")
    assert time.perf_counter() - started < 0.2


@pytest.mark.slow
async def test_whisper_hears_the_words() -> None:
    try:
        load_whisper()
    except ModelMissing as exc:
        skip_or_fail(str(exc))
    text = "Please enter your account number, then press the pound key."
    heard = await WhisperSTT().transcribe(await speak(EspeakTTS(), text))
    assert word_error_rate([text], [heard]) <= 0.2, heard
    # Once, in a parallel run, "number" went missing (WER still in bound): one miss is allowed.
    assert len({"account", "number", "pound"} - set(normalize_words(heard))) <= 1, heard
