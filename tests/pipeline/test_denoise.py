"""Noise suppressors: streaming invariants on real audio, and (slow) what they do to VAD and STT."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.denoise_eval import (
    noise_false_starts,
    noisy_prompts,
    per_minute,
    phone_line,
    read_wav,
    to_8k,
    wer_by_kind,
)
from pipeline.agent import DenoiseConfig
from pipeline.denoise import HOP, HOP_BYTES, PassThrough, make_denoiser
from pipeline.denoise.upsample3 import ROUND_TRIP_DELAY, Downsampler, Upsampler
from pipeline.frames import CANONICAL_FRAME_BYTES
from tests.corpus import select_prompts, word_error_rate

KINDS = ("speex", "rnnoise")


def by_frames(denoiser, pcm: bytes, size: int = CANONICAL_FRAME_BYTES) -> bytes:
    return b"".join(denoiser.process(pcm[i : i + size]) for i in range(0, len(pcm), size))


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype=np.int16).astype(np.float64)


def rms_db(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(x**2)) + 1e-9)


@pytest.fixture(scope="module")
def speech() -> bytes:
    """Two real prompts with a second of silence before and between, on the phone path."""
    parts = [np.zeros(8000)]
    for prompt in select_prompts(2, seed=3):
        pcm, rate = prompt.pcm()
        parts += [to_8k(samples(pcm), rate), np.zeros(8000)]
    pcm = phone_line(np.concatenate(parts))
    return pcm[: len(pcm) - len(pcm) % CANONICAL_FRAME_BYTES]


@pytest.fixture(scope="module")
def tap_noise(noise_wav_paths) -> bytes:
    """8 s of a running tap at -26 dBFS on the phone path: steady, real noise."""
    (path,) = [p for p in noise_wav_paths if p.name == "speechcommands_running_tap.wav"]
    x8 = to_8k(*read_wav(path))[: 8 * 8000]
    x8 *= 32768 * 10 ** (-26 / 20) / np.sqrt(np.mean(x8**2))
    pcm = phone_line(x8)
    return pcm[: len(pcm) - len(pcm) % CANONICAL_FRAME_BYTES]


def test_none_passes_audio_through(speech):
    assert make_denoiser("none").process(speech) is speech
    assert isinstance(make_denoiser("none"), PassThrough)


def test_unknown_kind_and_bad_options_are_rejected():
    with pytest.raises(ValueError):
        make_denoiser("dfn")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        make_denoiser("speex", suppress_db=0)


def test_agent_config_names_each_backend():
    for kind in ("none", *KINDS):
        config = DenoiseConfig(provider=kind, suppress_db=20)
        assert make_denoiser(config.provider, suppress_db=config.suppress_db).process(b"") == b""
    with pytest.raises(ValueError):
        DenoiseConfig(provider="deepfilter")


@pytest.mark.parametrize("kind", KINDS)
def test_frames_in_give_frames_out(kind, speech):
    denoiser = make_denoiser(kind)
    for start in range(0, 50 * CANONICAL_FRAME_BYTES, CANONICAL_FRAME_BYTES):
        out = denoiser.process(speech[start : start + CANONICAL_FRAME_BYTES])
        assert len(out) == CANONICAL_FRAME_BYTES


@pytest.mark.parametrize("kind", KINDS)
def test_silence_in_silence_out(kind):
    out = by_frames(make_denoiser(kind), bytes(100 * CANONICAL_FRAME_BYTES))
    assert len(out) == 100 * CANONICAL_FRAME_BYTES
    assert np.abs(samples(out)).max() <= 1


@pytest.mark.parametrize("kind", KINDS)
def test_speech_passes_at_the_declared_delay(kind, speech):
    denoiser = make_denoiser(kind)
    x, y = samples(speech), samples(by_frames(denoiser, speech))
    lags = np.arange(0, 600)
    corr = [np.dot(y[lag:], x[: len(x) - lag]) for lag in lags]
    assert lags[int(np.argmax(corr))] == denoiser.delay_samples
    # Speech keeps its level (within 1.5 dB) where it is loud.
    assert abs(rms_db(y) - rms_db(x)) < 1.5


@pytest.mark.parametrize("kind", KINDS)
def test_steady_real_noise_is_suppressed(kind, tap_noise):
    out = samples(by_frames(make_denoiser(kind), tap_noise))
    settled = slice(2 * 16000, None)  # after two seconds to learn the noise
    assert rms_db(out[settled]) < rms_db(samples(tap_noise)[settled]) - 10


@pytest.mark.parametrize("kind", KINDS)
def test_calls_keep_their_own_state(kind, speech, tap_noise):
    n = min(len(speech), len(tap_noise), 4 * 16000 * 2)
    alone = [by_frames(make_denoiser(kind), pcm[:n]) for pcm in (speech, tap_noise)]
    a, b = make_denoiser(kind), make_denoiser(kind)
    mixed: list[list[bytes]] = [[], []]
    for start in range(0, n, CANONICAL_FRAME_BYTES):
        end = start + CANONICAL_FRAME_BYTES
        mixed[0].append(a.process(speech[start:end]))
        mixed[1].append(b.process(tap_noise[start:end]))
    assert [b"".join(m) for m in mixed] == alone


@settings(max_examples=10, deadline=None)
@given(kind=st.sampled_from(KINDS), sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=8))
def test_any_chunking_gives_the_same_audio(speech, kind, sizes):
    pcm = speech[: 3 * 16000 * 2]
    whole = make_denoiser(kind).process(pcm)
    assert len(whole) == len(pcm) - len(pcm) % HOP_BYTES
    denoiser, parts, start, i = make_denoiser(kind), [], 0, 0
    while start < len(pcm):
        size = sizes[i % len(sizes)]  # in bytes: odd sizes cut samples in half
        parts.append(denoiser.process(pcm[start : start + size]))
        start, i = start + size, i + 1
    got = b"".join(parts)
    assert len(got) == len(whole)
    # The resampling filter may round differently at other chunk borders: 1-2 LSB at most.
    assert np.abs(samples(got) - samples(whole)).max() <= 2


def test_three_times_resampling_is_flat_to_7khz_and_stops_aliases():
    t = np.arange(16000) / 16000
    for freq in (300, 1000, 3400, 6000):
        x = (10000 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
        up, down = Upsampler(), Downsampler()
        y = np.concatenate([down.process(up.process(x[i : i + HOP])) for i in range(0, 16000, HOP)])
        assert len(y) == len(x)
        d = ROUND_TRIP_DELAY
        np.testing.assert_allclose(y[d + 500 :], x[500:-d], atol=0.01 * 10000 + 0.05 * freq)
    t48 = np.arange(48000) / 48000
    for freq in (9000, 12000, 20000):
        y = Downsampler().process(np.sin(2 * np.pi * freq * t48).astype(np.float32))
        assert rms_db(y[200:]) < rms_db(np.sin(2 * np.pi * freq * t48)) - 55


# Measurements (slow): real noise through VAD, real speech through Whisper.


@pytest.mark.slow
def test_speex_starts_no_more_false_speech_on_real_noise(noise_wav_paths, report_figure):
    """Measured (bench/denoise_eval.py, 9.3 min of noise): none 0, speex 0 false starts per
    minute at -26 dBFS, and at the recordings' own levels none 0, speex 0.2 (one start, in the
    quiet background talk of the coffee shop). RNNoise is left out here: it *adds* false starts
    (1.9/min at -26 dBFS, 4.9/min at own level; see the bench), and costs 50 times more CPU."""
    rows = noise_false_starts(noise_wav_paths, kinds=("none", "speex"))
    figures = {
        level: {k: round(per_minute(subset, k), 2) for k in ("none", "speex")}
        for level, subset in (
            ("loud", [r for r in rows if r["level"] != "own"]),
            ("own_level", [r for r in rows if r["level"] == "own"]),
        )
    }
    report_figure("denoise_false_starts_per_min", figures)
    assert figures["loud"]["speex"] <= figures["loud"]["none"] + 0.2, rows
    assert figures["own_level"]["speex"] <= figures["own_level"]["none"] + 0.5, rows


@pytest.mark.slow
def test_clean_speech_wer_is_not_worse_by_more_than_two_points(noise_wav_paths, report_figure):
    items = noisy_prompts(select_prompts(20, seed=7), noise_wav_paths, snr_db=None)
    wer = wer_by_kind(items, ("none", *KINDS), word_error_rate)
    report_figure("denoise_clean_wer", {k: round(v, 3) for k, v in wer.items()})
    for kind in KINDS:
        assert wer[kind] <= wer["none"] + 0.02, wer
