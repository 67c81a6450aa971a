import asyncio
import time

import pytest

from pipeline.codecs import pcm_to_ulaw, ulaw_to_pcm
from pipeline.models import ModelMissing
from pipeline.resample import StreamResampler
from pipeline.stt.whisper import WhisperSTT, load_whisper, whisper_threads
from tests.corpus import select_prompts, skip_or_fail, word_error_rate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_ready() -> None:
    try:
        load_whisper()
    except ModelMissing as exc:
        skip_or_fail(str(exc))


def phone_line(pcm8k: bytes) -> bytes:
    """What a caller's audio goes through: G.711 mu-law at 8 kHz, then up to 16 kHz."""
    resampler = StreamResampler(8000, 16000)
    pcm = ulaw_to_pcm(pcm_to_ulaw(pcm8k))
    return resampler.process(pcm) + resampler.flush()


def test_threads_fit_the_cores() -> None:
    assert whisper_threads(1) == (1, 1)
    assert whisper_threads(2) == (1, 2)
    assert whisper_threads(8) == (2, 4)


@pytest.mark.usefixtures("model_ready")
def test_model_is_loaded_once_per_process() -> None:
    assert load_whisper() is load_whisper()


@pytest.mark.usefixtures("model_ready")
async def test_empty_audio_is_empty_text() -> None:
    assert await WhisperSTT().transcribe(b"") == ""


@pytest.mark.usefixtures("model_ready")
async def test_phone_quality_prompts_are_transcribed() -> None:
    prompts = select_prompts(20, seed=0)
    audio = []
    for prompt in prompts:
        pcm, rate = prompt.pcm()
        assert rate == 8000
        audio.append(phone_line(pcm))
    stt = WhisperSTT(beam_size=1)
    await stt.warm_up()

    started = time.perf_counter()
    hyps = await asyncio.gather(*(stt.transcribe(a) for a in audio))
    elapsed = time.perf_counter() - started

    wer = word_error_rate([p.text for p in prompts], hyps)
    seconds = sum(len(a) for a in audio) / 32000
    print(f"whisper beam=1: WER {wer:.3f} over {len(prompts)} prompts, RTF {elapsed / seconds:.3f}")
    assert wer <= 0.25, list(zip([p.text for p in prompts], hyps, strict=True))


@pytest.mark.usefixtures("model_ready")
@pytest.mark.timed
async def test_transcription_does_not_block_the_event_loop() -> None:
    prompt = max(select_prompts(20, seed=0), key=lambda p: p.duration)
    audio = phone_line(prompt.pcm()[0])
    stt = WhisperSTT()
    await stt.warm_up()
    longest_gap = 0.0
    done = asyncio.Event()

    async def tick() -> None:
        nonlocal longest_gap
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            longest_gap = max(longest_gap, now - last)
            last = now

    ticker = asyncio.create_task(tick())
    text = await stt.transcribe(audio)
    done.set()
    await ticker
    assert word_error_rate([prompt.text], [text]) <= 0.5
    assert longest_gap < 0.1
