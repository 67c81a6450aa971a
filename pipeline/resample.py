"""Streaming sample-rate conversion of 16-bit PCM, one stream per call and direction."""

from __future__ import annotations

import numpy as np
import soxr

_EMPTY = np.zeros(0, dtype=np.int16)


class StreamResampler:
    """Converts a continuous PCM16 LE mono stream from `in_rate` to `out_rate`.

    Resampling each chunk on its own clicks at chunk borders (every chunk restarts the filter);
    this keeps the filter state across `process` calls, so the concatenated output equals a
    one-shot conversion of the whole signal (to within soxr's +-2 LSB of dither).

    Quality is soxr 'HQ' (passband flat to 3.7 kHz at 8 kHz). MQ measured the same delay and
    LQ/QQ lose 8 dB at 3.4 kHz or alias, so HQ costs nothing extra. soxr filters in DFT blocks,
    so output comes in bursts. Measured when fed 20 ms chunks (latency = input fed - output
    given): 8k<->16k mean 64 ms (12..115 ms), first output after 120 ms of input;
    22.05k/24k->16k mean 21-23 ms (6..39 ms), first output after 40 ms. Call `flush()` at the
    end of a stretch of audio (e.g. the end of a TTS utterance) to get the held-back tail.

    Equal rates pass bytes through untouched.
    """

    __slots__ = ("_stream",)

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ")
        )

    def process(self, pcm: bytes) -> bytes:
        """Feeds whole 16-bit samples; returns whatever output is ready (may be empty)."""
        if self._stream is None:
            return pcm
        return self._stream.resample_chunk(np.frombuffer(pcm, dtype=np.int16)).tobytes()

    def flush(self) -> bytes:
        """Returns the held-back tail and resets, ready for a new, unrelated stretch of audio."""
        if self._stream is None:
            return b""
        tail = self._stream.resample_chunk(_EMPTY, last=True).tobytes()
        self._stream.clear()
        return tail


def _half_band_filter(taps: int = 96, cutoff_hz: float = 3800, rate: int = 16_000) -> np.ndarray:
    """Kaiser-windowed sinc low-pass at the higher rate of a 2:1 pair (~70 dB stopband)."""
    n = np.arange(taps) - (taps - 1) / 2
    fc = cutoff_hz / rate
    return (2 * fc * np.sinc(2 * fc * n) * np.kaiser(taps, 7.0)).astype(np.float32)


_HALF_BAND = _half_band_filter()


class HalfBandResampler:
    """Exact 2:1 conversion (8 kHz <-> 16 kHz) with a short FIR: 3 ms of delay, no bursts.

    soxr's block filter holds back 64 ms on average between 8 and 16 kHz, which the caller
    hears twice per turn (inbound and outbound) and which delays barge-in; this polyphase-free
    FIR keeps `len(taps) - 1` samples of history and returns every sample as soon as it can.
    """

    __slots__ = ("_down", "_history", "_phase")

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if (in_rate, out_rate) not in ((8000, 16000), (16000, 8000)):
            raise ValueError(f"HalfBandResampler converts 8k<->16k, not {in_rate} -> {out_rate}")
        self._down = in_rate > out_rate
        self._history = np.zeros(len(_HALF_BAND) - 1, dtype=np.float32)
        self._phase = 0  # downsampling: index of the next kept sample, relative to this chunk

    def process(self, pcm: bytes) -> bytes:
        if not pcm:  # np.convolve would swap its operands and invent samples
            return b""
        samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
        if not self._down:
            stuffed = np.zeros(2 * len(samples), dtype=np.float32)
            stuffed[::2] = samples * 2
            samples = stuffed
        signal = np.concatenate((self._history, samples))
        filtered = np.convolve(signal, _HALF_BAND, mode="valid")
        self._history = signal[len(signal) - len(self._history) :]
        if self._down:
            kept = filtered[self._phase :: 2]
            self._phase = (self._phase - len(filtered)) % 2
            filtered = kept
        return np.clip(np.rint(filtered), -32768, 32767).astype(np.int16).tobytes()

    def flush(self) -> bytes:
        """Returns the filter's tail (its delay's worth of samples) and resets."""
        fill = len(_HALF_BAND) // 2 if self._down else len(_HALF_BAND) // 4
        tail = self.process(bytes(2 * fill))
        self._history[:] = 0
        self._phase = 0
        return tail


def stream_resampler(in_rate: int, out_rate: int) -> StreamResampler | HalfBandResampler:
    """The lowest-latency streaming converter for the pair of rates."""
    if {in_rate, out_rate} == {8000, 16000}:
        return HalfBandResampler(in_rate, out_rate)
    return StreamResampler(in_rate, out_rate)
