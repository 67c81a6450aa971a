"""Whisper log-mel features in numpy, checked against faster-whisper's implementation."""

from __future__ import annotations

import numpy as np
import pytest
from faster_whisper.feature_extractor import FeatureExtractor

from pipeline.mel import HOP, N_MELS, hann_window, hz_to_mel, log_mel, mel_filterbank, mel_to_hz


def test_mel_scale_is_slaney_and_round_trips():
    # Linear below 1 kHz (200/3 Hz per mel), 27 mels per factor 6.4 above it.
    assert hz_to_mel(np.array(200.0 / 3.0)) == pytest.approx(1.0)
    assert hz_to_mel(np.array(1000.0)) == pytest.approx(15.0)
    assert hz_to_mel(np.array(6400.0)) == pytest.approx(42.0)
    hz = np.array([0.0, 300.0, 999.0, 1000.0, 3456.0, 8000.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(hz)), hz, rtol=1e-12, atol=1e-9)


def test_filterbank_and_window_match_faster_whisper():
    reference = FeatureExtractor(feature_size=80)
    np.testing.assert_allclose(mel_filterbank(), reference.mel_filters, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(hann_window(), np.hanning(401)[:-1], atol=1e-7)


@pytest.mark.parametrize("seconds", [8, 3.3])
def test_log_mel_matches_faster_whisper(seconds):
    rng = np.random.default_rng(7)
    n = int(seconds * 16_000)
    t = np.arange(n) / 16_000
    audio = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)
    audio[: n // 3] = 0.0  # a silent stretch, so the clamp at max - 8 decades bites
    ours = log_mel(audio)
    expected = FeatureExtractor(feature_size=80)(audio, padding=0)
    assert ours.shape == expected.shape == (N_MELS, n // HOP)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    assert ours.min() == pytest.approx(ours.max() - 2.0)  # 8 decades / 4


def test_log_mel_of_nothing_is_empty():
    assert log_mel(np.zeros(100, dtype=np.float32)).shape == (N_MELS, 0)


@pytest.mark.parametrize("lead", [0, 150, 200, 201, 360, 361, 16_000, 48_123, 127_999, 128_000])
def test_a_constant_lead_is_computed_once_with_the_same_result(lead):
    """Smart Turn's window is mostly left padding: the frames that see only it are alike."""
    rng = np.random.default_rng(lead)
    audio = np.full(128_000, -0.37, dtype=np.float32)
    audio[lead:] = rng.standard_normal(128_000 - lead).astype(np.float32)
    np.testing.assert_allclose(log_mel(audio, constant_lead=lead), log_mel(audio), atol=1e-6)


def test_only_frames_that_end_inside_the_lead_are_taken_as_alike():
    """Frame k spans samples k * 160 - 200 .. k * 160 + 199. With a true lead of 8,200
    samples, frame 50 (ending on 8,199) is the last one alike; a lead claimed 160 samples
    too long makes frame 51 stand for the padding, and the frames before it show it."""
    audio = np.full(16_000, 0.25, dtype=np.float32)
    audio[8_200:] = np.random.default_rng(3).standard_normal(16_000 - 8_200)
    exact = log_mel(audio)
    np.testing.assert_allclose(log_mel(audio, constant_lead=8_200), exact, atol=1e-6)
    wrong = np.abs(log_mel(audio, constant_lead=8_360) - exact).max(axis=0)
    assert wrong[:51].min() > 0.1 and wrong[51:].max() < 1e-6
