"""Whisper's log-mel spectrogram in numpy: 80 Slaney mel bins, 25 ms Hann frames every 10 ms.

Matches `WhisperFeatureExtractor` (transformers) and faster-whisper's `FeatureExtractor`:
centred frames with reflect padding, power spectrum, Slaney-normalised mel filterbank,
log10 floored at 1e-10, clamped to 8 decades below the loudest bin, then scaled by
(x + 4) / 4. The last frame (centred on the final sample) is dropped, so N samples give
N // 160 frames.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16_000
N_FFT = 400
HOP = 160
N_MELS = 80

_F_SP = 200.0 / 3.0  # Hz per mel below 1 kHz (Slaney)
_LOG_MEL_START = 1000.0 / _F_SP  # mel of 1 kHz, where the scale turns logarithmic
_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear to 1 kHz, logarithmic above (librosa's `htk=False`)."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _F_SP
    above = np.log(np.maximum(hz, 1000.0) / 1000.0) / _LOG_STEP + _LOG_MEL_START
    return np.where(hz >= 1000.0, above, linear)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _F_SP
    above = 1000.0 * np.exp(_LOG_STEP * (np.maximum(mel, _LOG_MEL_START) - _LOG_MEL_START))
    return np.where(mel >= _LOG_MEL_START, above, linear)


def mel_filterbank(
    n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Triangular filters [n_mels, n_fft // 2 + 1] from 0 Hz to Nyquist, each scaled to unit
    area (Slaney norm), so wide high-frequency bands do not outweigh narrow low ones."""
    edges = mel_to_hz(np.linspace(0.0, hz_to_mel(sample_rate / 2), n_mels + 2))
    bins = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - low) / (centre - low)
    falling = (high - bins) / (high - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= 2.0 / (high - low)
    return weights.astype(np.float32)


def hann_window(n: int = N_FFT) -> np.ndarray:
    """Periodic Hann window (torch.hann_window's default)."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)


_FILTERS = mel_filterbank()
_WINDOW = hann_window()


def constant_frames(lead_samples: int, n_frames: int) -> int:
    """How many leading frames see only the first `lead_samples` samples (with the reflected
    padding before them): frame k spans samples k*160 - 200 .. k*160 + 199, frame 0 reaching
    sample 200 through the reflection."""
    if lead_samples <= N_FFT // 2:
        return 0
    return min(n_frames, (lead_samples - N_FFT // 2) // HOP + 1)


def log_mel(audio: np.ndarray, constant_lead: int = 0) -> np.ndarray:
    """Log-mel features [80, len(audio) // 160] of float32 mono audio at 16 kHz.

    `constant_lead` says the first that many samples hold one value (a left padding): the
    frames that see only them are alike, so one is computed and stands for them all.
    """
    n_frames = len(audio) // HOP
    if n_frames == 0:
        return np.zeros((N_MELS, 0), dtype=np.float32)
    half = N_FFT // 2
    padded = np.pad(audio.astype(np.float32, copy=False), half, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:n_frames]
    alike = max(0, constant_frames(constant_lead, n_frames) - 1)
    spectrum = np.fft.rfft(frames[alike:] * _WINDOW, axis=-1)
    power = spectrum.real**2 + spectrum.imag**2  # [frames, bins]
    mel = _FILTERS @ power.T  # [mels, frames]
    if alike:
        mel = np.concatenate((np.broadcast_to(mel[:, :1], (N_MELS, alike)), mel), axis=1)
    np.maximum(mel, 1e-10, out=mel)
    np.log10(mel, out=mel)
    np.maximum(mel, mel.max() - 8.0, out=mel)
    mel += 4.0
    mel *= 0.25
    return mel
