"""Silero VAD on real speech and real noise, heard the way a phone line delivers them."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.codecs import pcm_to_ulaw, ulaw_to_pcm
from pipeline.resample import StreamResampler
from pipeline.vad import (
    CHUNK,
    CONTEXT,
    SpeechPaused,
    SpeechStarted,
    VadSegmenter,
    VadStream,
)

FRAME = 320  # samples in a 20 ms frame at 16 kHz
LEAD, TAIL = 0.5, 1.0  # seconds of digital silence around a prompt
# Recordings with speech-like babble in them; only their own (quiet) level counts as noise.
BABBLE = {"coffee_shop_44k.wav"}


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono float samples (int16 scale) and the rate of a 16-bit WAV, stereo mixed down."""
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2, path
        raw = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        return raw.reshape(-1, w.getnchannels()).mean(axis=1), w.getframerate()


def phone_line(x: np.ndarray, rate: int) -> bytes:
    """What the pipeline gets from a G.711 call: 8 kHz, mu-law, streamed back up to 16 kHz."""
    x8 = soxr.resample(x.astype(np.float32), rate, 8000) if rate != 8000 else x
    wire = pcm_to_ulaw(np.clip(x8, -32768, 32767).astype(np.int16).tobytes())
    up = StreamResampler(8000, 16000)
    return up.process(ulaw_to_pcm(wire)) + up.flush()


def run_vad(vad_model, pcm16k: bytes, segmenter: VadSegmenter | None = None):
    """Pushes 20 ms frames; returns (probabilities, events)."""
    stream, segmenter = VadStream(vad_model), segmenter or VadSegmenter()
    probs, events = [], []
    for start in range(0, len(pcm16k), 2 * FRAME):
        p = stream.push(pcm16k[start : start + 2 * FRAME])
        probs += p
        events += segmenter.update(p)
    return np.array(probs), events


def energy_span(x: np.ndarray, rate: int, rel_db: float = -30.0) -> tuple[float, float]:
    """First and last 10 ms window within `rel_db` of the loudest one, in seconds."""
    w = rate // 100
    rms = np.sqrt(np.mean(x[: len(x) // w * w].reshape(-1, w) ** 2, axis=1))
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (rel_db / 20))
    return loud[0] * w / rate, (loud[-1] + 1) * w / rate


@pytest.fixture(scope="module")
def prompts(speech_wav_paths) -> list[Path]:
    """Six prompts of 1-5 s spread over the corpus, the same ones every run."""
    paths = []
    for path in sorted(speech_wav_paths):
        with wave.open(str(path), "rb") as w:
            if 1.0 <= w.getnframes() / w.getframerate() <= 5.0:
                paths.append(path)
    assert len(paths) >= 6
    return [paths[i * len(paths) // 6] for i in range(6)]


def test_speech_starts_at_the_onset_and_pauses_after_it(vad_model, prompts):
    for path in prompts:
        x, rate = read_wav(path)
        onset, offset = (LEAD + t for t in energy_span(x, rate))
        silence = np.zeros(int(LEAD * rate)), np.zeros(int(TAIL * rate))
        pcm = phone_line(np.concatenate([silence[0], x, silence[1]]), rate)
        for pause_secs in (0.2, 0.8):
            _, events = run_vad(vad_model, pcm, VadSegmenter(pause_secs=pause_secs))
            assert events, path.name
            assert isinstance(events[0], SpeechStarted), (path.name, events)
            assert abs(events[0].at_seconds - onset) <= 0.150, (path.name, onset, events)
            # The tail of silence (1 s > pause) closes the speech, where the energy ends.
            assert isinstance(events[-1], SpeechPaused), (path.name, events)
            assert offset - 0.2 <= events[-1].at_seconds <= offset + 0.3, (path.name, events)
            assert all(isinstance(e, SpeechStarted) == (i % 2 == 0) for i, e in enumerate(events))


def test_speech_scores_high_and_silence_low(vad_model, prompts):
    x, rate = read_wav(prompts[0])
    onset, offset = energy_span(x, rate)
    pcm = phone_line(np.concatenate([np.zeros(rate), x]), rate)
    probs, _ = run_vad(vad_model, pcm)
    chunk_secs = CHUNK / 16000
    assert probs[: int(0.9 / chunk_secs)].max() < 0.1
    speech = probs[int((1 + onset) / chunk_secs) + 2 : int((1 + offset) / chunk_secs) - 2]
    assert np.median(speech) > 0.8


def test_model_needs_the_64_sample_context(vad_model, prompts):
    """Scored without the previous 64 samples, the model hears no speech at all."""
    x, rate = read_wav(prompts[0])
    pcm = np.frombuffer(phone_line(x, rate), dtype=np.int16) / 32768.0
    n = (len(pcm) - CONTEXT) // CHUNK
    states = {k: np.zeros((2, 1, 128), np.float32) for k in ("with", "without")}
    best = {"with": 0.0, "without": 0.0}
    for i in range(n):
        window = pcm[i * CHUNK : i * CHUNK + CONTEXT + CHUNK].astype(np.float32)[None]
        for key, chunk in (("with", window), ("without", window[:, CONTEXT:])):
            p, states[key] = vad_model.infer(chunk, states[key])
            best[key] = max(best[key], float(p[0]))
    assert best["with"] > 0.9
    assert best["without"] < 0.1


def test_a_pure_tone_is_not_speech(vad_model):
    t = np.arange(3 * 8000) / 8000
    _, events = run_vad(vad_model, phone_line(12000 * np.sin(2 * np.pi * 1000 * t), 8000))
    assert events == []


def test_noise_rarely_starts_speech(vad_model, noise_wav_paths):
    """Measured: 0 false starts on every recording below, at its own level and at -26 dBFS.

    The coffee shop holds real background talk: scaled up to -26 dBFS it starts "speech"
    about 10 times a minute, which is right for a VAD, so only its own quiet level counts.
    """
    minutes = starts = 0.0
    for path in noise_wav_paths:
        x, rate = read_wav(path)
        rms = np.sqrt(np.mean(x**2))
        gains = [1.0] if path.name in BABBLE else [1.0, 32768 * 10 ** (-26 / 20) / rms]
        for gain in gains:
            _, events = run_vad(vad_model, phone_line(x * gain, rate))
            starts += sum(isinstance(e, SpeechStarted) for e in events)
            minutes += len(x) / rate / 60
    assert minutes > 8
    assert starts / minutes < 0.5


def test_batched_inference_equals_one_by_one(vad_model, prompts, noise_wav_paths):
    sources = [read_wav(p) for p in prompts[:3]] + [read_wav(noise_wav_paths[0])]
    signals = [np.frombuffer(phone_line(x, r), np.int16) / 32768.0 for x, r in sources]
    steps = min(len(s) for s in signals) // CHUNK - 1
    batch = len(signals)
    states = np.zeros((2, batch, 128), np.float32)
    singles = [np.zeros((2, 1, 128), np.float32) for _ in signals]
    for i in range(steps):
        chunks = np.stack([s[i * CHUNK : i * CHUNK + CONTEXT + CHUNK] for s in signals])
        probs, states = vad_model.infer(chunks.astype(np.float32), states)
        for b in range(batch):
            p, singles[b] = vad_model.infer(chunks[b : b + 1].astype(np.float32), singles[b])
            assert probs[b] == pytest.approx(float(p[0]), abs=1e-5)
            np.testing.assert_allclose(states[:, b : b + 1], singles[b], atol=1e-5)


@settings(max_examples=8, deadline=None)
@given(sizes=st.lists(st.integers(1, 2000), min_size=1, max_size=8))
def test_push_gives_the_same_probabilities_however_audio_is_cut(vad_model, prompts, sizes):
    x, rate = read_wav(prompts[1])
    pcm = phone_line(x, rate)[: 2 * 16000]
    reference, _ = run_vad(vad_model, pcm)
    stream, got, start, i = VadStream(vad_model), [], 0, 0
    while start < len(pcm):
        size = 2 * sizes[i % len(sizes)]
        got += stream.push(pcm[start : start + size])
        start, i = start + size, i + 1
    assert len(got) == len(pcm) // 2 // CHUNK
    np.testing.assert_allclose(got, reference, atol=1e-6)


# The segmenter alone, on made-up probabilities (chunk = 32 ms).


def test_segmenter_needs_min_speech_and_reports_the_onset():
    seg = VadSegmenter(min_speech_secs=0.1, pause_secs=0.1)  # 4 chunks each
    assert seg.update([0.0, 0.9, 0.9, 0.1, 0.0]) == []  # a 2-chunk blip is not speech
    assert seg.update([0.9, 0.4, 0.4]) == []  # between thresholds, the candidate holds
    assert seg.update([0.4]) == [SpeechStarted(pytest.approx(5 * 0.032))]
    assert seg.in_speech


def test_segmenter_pause_needs_silence_below_neg_threshold():
    seg = VadSegmenter(min_speech_secs=0.032, pause_secs=0.096)  # 1 chunk, 3 chunks
    assert seg.update([0.9]) == [SpeechStarted(0.0)]
    assert seg.update([0.45] * 20) == []  # hysteresis: above neg_threshold is still speech
    assert seg.update([0.1, 0.1, 0.9, 0.1, 0.1]) == []  # speech again resets the silence run
    assert seg.update([0.45]) == [SpeechPaused(pytest.approx(24 * 0.032))]
    assert not seg.in_speech
    assert seg.update([0.9]) == [SpeechStarted(pytest.approx(27 * 0.032))]


def test_segmenter_rejects_inverted_thresholds():
    with pytest.raises(ValueError):
        VadSegmenter(threshold=0.3, neg_threshold=0.5)
