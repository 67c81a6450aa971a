"""Exact 16 <-> 48 kHz conversion for 48 kHz-only suppressors, with a short, fixed delay.

soxr's streaming resampler works in DFT blocks: through 16 -> 48 -> 16 kHz it lags 37-67 ms,
in bursts. A ratio of exactly 3 needs no such machinery: one linear-phase FIR low-pass (Kaiser
window, 121 taps at 48 kHz, cut-off 7.5 kHz, stop band at 8 kHz down by ~60 dB) serves as both
the interpolation and the anti-alias filter. Each direction delays by 60 samples at 48 kHz
(1.25 ms); the round trip by 40 samples at 16 kHz.
"""

from __future__ import annotations

import numpy as np

RATIO = 3
TAPS = 121
ROUND_TRIP_DELAY = (TAPS - 1) // RATIO  # in 16 kHz samples: 2 x 60 at 48 kHz


def _lowpass() -> np.ndarray:
    n = np.arange(TAPS) - (TAPS - 1) / 2
    cutoff = 7_500 / 48_000
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(TAPS, 5.65)
    return (h / h.sum()).astype(np.float32)


_H = _lowpass()
# Polyphase split of the interpolator: output phase p of each input sample uses taps p, p+3, ...
_PHASES = [RATIO * _H[p::RATIO] for p in range(RATIO)]


class Upsampler:
    """16 -> 48 kHz, streaming; float32 in, float32 out (three samples per input sample)."""

    __slots__ = ("_history",)

    def __init__(self) -> None:
        self._history = np.zeros(len(_PHASES[0]) - 1, dtype=np.float32)

    def process(self, x: np.ndarray) -> np.ndarray:
        padded = np.concatenate((self._history, x))
        self._history = padded[len(x) :]
        out = np.empty(RATIO * len(x), dtype=np.float32)
        if len(x):
            for p, taps in enumerate(_PHASES):
                out[p::RATIO] = np.convolve(padded, taps, mode="valid")[-len(x) :]
        return out


class Downsampler:
    """48 -> 16 kHz, streaming; the input length must be a multiple of 3."""

    __slots__ = ("_history",)

    def __init__(self) -> None:
        self._history = np.zeros(TAPS - 1, dtype=np.float32)

    def process(self, x: np.ndarray) -> np.ndarray:
        padded = np.concatenate((self._history, x))
        self._history = padded[len(x) :]
        return np.convolve(padded, _H, mode="valid")[::RATIO]
