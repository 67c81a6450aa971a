"""Streaming resampling equals one-shot resampling of the whole signal, whatever the chunking."""

from __future__ import annotations

import sys
import threading
import time
import wave

import numpy as np
import pytest
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.resample import HalfBandResampler, StreamResampler, stream_resampler

RATE_PAIRS = [(8000, 16000), (16000, 8000), (22050, 16000), (24000, 16000)]
# soxr dithers int16 output by up to +-1 LSB in each of the two runs compared.
MAX_DIFF = 4


def sines(rate: int, seconds: float = 1.0) -> np.ndarray:
    """A sum of sines inside the telephone band, loud but not clipping."""
    t = np.arange(int(rate * seconds)) / rate
    x = 9000 * np.sin(2 * np.pi * 440 * t) + 7000 * np.sin(2 * np.pi * 1234.5 * t + 1)
    x += 4000 * np.sin(2 * np.pi * 3100 * t + 2)
    return x.astype(np.int16)


def cut(x: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """`x` in consecutive chunks whose sizes cycle through `sizes`."""
    chunks, start, i = [], 0, 0
    while start < len(x):
        chunks.append(x[start : start + sizes[i % len(sizes)]])
        start += sizes[i % len(sizes)]
        i += 1
    return chunks


def streamed(x: np.ndarray, in_rate: int, out_rate: int, sizes: list[int]) -> np.ndarray:
    r = StreamResampler(in_rate, out_rate)
    out = b"".join(r.process(c.tobytes()) for c in cut(x, sizes)) + r.flush()
    return np.frombuffer(out, dtype=np.int16)


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert abs(len(a) - len(b)) <= 1
    n = min(len(a), len(b))
    return int(np.abs(a[:n].astype(np.int32) - b[:n]).max())


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
@settings(max_examples=10, deadline=None)
@given(sizes=st.lists(st.integers(1, 1200), min_size=1, max_size=20))
def test_stream_matches_one_shot_for_any_chunking(in_rate, out_rate, sizes):
    x = sines(in_rate)
    whole = soxr.resample(x, in_rate, out_rate, quality="HQ")
    assert max_diff(streamed(x, in_rate, out_rate, sizes), whole) <= MAX_DIFF


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
def test_per_chunk_one_shot_resampling_clicks(in_rate, out_rate):
    """The bound above is one that naive per-chunk resampling breaks, by a wide margin."""
    x = sines(in_rate)
    whole = soxr.resample(x, in_rate, out_rate, quality="HQ")
    naive = np.concatenate(
        [soxr.resample(c, in_rate, out_rate, quality="HQ") for c in cut(x, [in_rate // 50])]
    )
    n = min(len(naive), len(whole))
    assert np.abs(naive[:n].astype(np.int32) - whole[:n]).max() > 50 * MAX_DIFF


def test_real_speech_streams_like_one_shot(speech_wav_paths):
    with wave.open(str(speech_wav_paths[0]), "rb") as w:
        x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        rate = w.getframerate()
    whole = soxr.resample(x, rate, 16000, quality="HQ")
    assert max_diff(streamed(x, rate, 16000, [160, 37, 333]), whole) <= MAX_DIFF


def test_flush_returns_the_tail_and_starts_afresh():
    x = sines(8000, 0.5)
    r = StreamResampler(8000, 16000)
    first = r.process(x.tobytes())
    assert len(first) < 2 * 2 * len(x)  # some output is held back ...
    first += r.flush()
    assert len(first) == 2 * 2 * len(x)  # ... until flushed
    again = r.process(x.tobytes()) + r.flush()
    assert max_diff(np.frombuffer(again, np.int16), np.frombuffer(first, np.int16)) <= MAX_DIFF


def test_equal_rates_pass_through():
    r = StreamResampler(16000, 16000)
    pcm = sines(16000, 0.02).tobytes()
    assert r.process(pcm) is pcm
    assert r.flush() == b""


def test_rejects_partial_samples_and_bad_rates():
    with pytest.raises(ValueError):
        StreamResampler(8000, 16000).process(b"\x00\x01\x02")
    with pytest.raises(ValueError):
        StreamResampler(0, 16000)


# -- the low-latency 2:1 converter used on the phone path -------------------------------------


def _tone(freq: float, rate: int, secs: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * secs)) / rate
    return (np.sin(2 * np.pi * freq * t) * 10_000).astype(np.int16)


def _gain_db(pcm: bytes) -> float:
    y = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)[200:-200]
    return 20 * np.log10(np.sqrt((y**2).mean()) / (10_000 / np.sqrt(2)) + 1e-12)


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 16000), (16000, 8000)])
def test_half_band_passes_the_telephone_band(in_rate, out_rate):
    for freq in (300, 1000, 3000, 3400):
        out = HalfBandResampler(in_rate, out_rate).process(_tone(freq, in_rate).tobytes())
        assert len(out) // 2 == out_rate
        assert abs(_gain_db(out)) < 0.1, freq


def test_half_band_removes_what_would_alias_at_8k():
    for freq in (5000, 6000, 7000):
        out = HalfBandResampler(16000, 8000).process(_tone(freq, 16000).tobytes())
        assert _gain_db(out) < -60, freq


@given(st.lists(st.integers(1, 400), min_size=1, max_size=60), st.sampled_from([8000, 16000]))
def test_half_band_streaming_equals_one_shot(chunks, in_rate):
    out_rate = 24000 - in_rate
    signal = (_tone(440, in_rate, 0.5) // 2 + _tone(2500, in_rate, 0.5) // 2).tobytes()
    whole = HalfBandResampler(in_rate, out_rate).process(signal)
    stream = HalfBandResampler(in_rate, out_rate)
    parts, start = [], 0
    for size in chunks:
        parts.append(stream.process(signal[start : start + 2 * size]))
        start += 2 * size
    parts.append(stream.process(signal[start:]))
    streamed = np.frombuffer(b"".join(parts), np.int16).astype(np.int32)
    one_shot = np.frombuffer(whole, np.int16).astype(np.int32)
    assert len(streamed) == len(one_shot)
    assert np.abs(streamed - one_shot).max() <= 1  # float rounding only: no clicks at borders


def test_half_band_delay_is_a_few_milliseconds():
    impulse = np.zeros(800, dtype=np.int16)
    impulse[100] = 20_000
    out = np.frombuffer(HalfBandResampler(8000, 16000).process(impulse.tobytes()), np.int16)
    delay_secs = (int(np.argmax(np.abs(out))) - 200) / 16000
    assert 0 <= delay_secs < 0.004
    assert isinstance(stream_resampler(8000, 16000), HalfBandResampler)
    assert isinstance(stream_resampler(22050, 16000), StreamResampler)


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 16000), (16000, 8000)])
def test_converting_a_frame_never_hands_the_gil_to_another_thread(in_rate, out_rate):
    """On the event loop, a GIL release lets a busy VAD or Smart Turn thread run for up to the
    switch interval (here 0.2 s): one release in 20 frames would show as seconds."""
    frame = _tone(440, in_rate, 0.02).tobytes()
    resampler = HalfBandResampler(in_rate, out_rate)
    resampler.process(frame)  # builds the block's matrix
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            sum(range(100))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.2)
    thread = threading.Thread(target=busy)
    thread.start()
    try:
        time.sleep(0.01)
        started = time.perf_counter()
        for _ in range(20):
            resampler.process(frame)
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    assert elapsed < 0.1, elapsed
