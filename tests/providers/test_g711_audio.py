"""The G.711 edge: wire codes at 8 kHz <-> PCM16 at 16 kHz, per call and direction."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.codecs import alaw_to_pcm, pcm_to_alaw, pcm_to_ulaw, ulaw_to_pcm
from pipeline.resample import HalfBandResampler
from providers.g711_audio import G711Audio

CODECS = {"ulaw": (ulaw_to_pcm, pcm_to_ulaw), "alaw": (alaw_to_pcm, pcm_to_alaw)}
chunk_sizes = st.lists(st.integers(1, 600), min_size=1, max_size=10)


def tone(rate: int, hz: float, seconds: float, amplitude: float = 12000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def pieces(data: bytes, sizes: list[int], unit: int = 1) -> list[bytes]:
    """`data` in consecutive pieces of `sizes` (cycled) units of `unit` bytes."""
    out, start, i = [], 0, 0
    while start < len(data):
        size = sizes[i % len(sizes)] * unit
        out.append(data[start : start + size])
        start, i = start + size, i + 1
    return out


def peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
@settings(max_examples=10, deadline=None)
@given(sizes=chunk_sizes)
def test_inbound_is_decode_then_one_shot_upsample(law, sizes):
    decode, encode = CODECS[law]
    wire = encode(tone(8000, 1000, 1.0).tobytes())
    edge = G711Audio(law)
    out = np.frombuffer(b"".join(edge.inbound(p) for p in pieces(wire, sizes)), np.int16)
    whole = np.frombuffer(HalfBandResampler(8000, 16000).process(decode(wire)), np.int16)
    # The 2:1 filter holds nothing back: every sample is out at once, as one-shot would give
    # (to float rounding: pieces cut across 20 ms blocks are filtered in another order).
    assert len(out) == 2 * len(wire)
    assert np.abs(out.astype(np.int32) - whole).max() <= 1
    assert peak_hz(out, 16000) == pytest.approx(1000, abs=5)


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
@settings(max_examples=10, deadline=None)
@given(sizes=chunk_sizes)
def test_outbound_is_one_shot_downsample_then_encode(law, sizes):
    decode, _ = CODECS[law]
    pcm = tone(16000, 700, 1.0)
    edge = G711Audio(law)
    wire = b"".join(edge.outbound(p) for p in pieces(pcm.tobytes(), sizes, unit=2))
    assert len(wire) == len(pcm) // 2  # one code per 8 kHz sample, at once
    wire += edge.flush_outbound()  # plus the filter's few-ms tail
    got = np.frombuffer(decode(wire), np.int16).astype(np.int32)
    down = HalfBandResampler(16000, 8000)
    want = np.frombuffer(down.process(pcm.tobytes()) + down.flush(), np.int16).astype(np.int32)
    assert len(got) == len(want)
    # G.711 error on a 12000-peak tone is at most half a 512-step (plus rounding).
    assert np.abs(got - want).max() <= 256 + 3 + 1
    assert peak_hz(got, 8000) == pytest.approx(700, abs=5)


def test_twenty_ms_wire_frames_make_twenty_ms_canonical_frames_on_average():
    edge = G711Audio()
    wire = pcm_to_ulaw(tone(8000, 440, 2.0).tobytes())
    out = sum(len(edge.inbound(p)) for p in pieces(wire, [160]))
    assert 2.0 - 0.120 < out / 2 / 16000 <= 2.0


def test_interleaved_calls_do_not_share_resampler_state():
    wire_a = pieces(pcm_to_ulaw(tone(8000, 440, 0.5).tobytes()), [160])
    wire_b = pieces(pcm_to_ulaw(tone(8000, 2000, 0.5).tobytes()), [160])
    a, b, alone = G711Audio(), G711Audio(), G711Audio()
    mixed = b""
    for frame_a, frame_b in zip(wire_a, wire_b, strict=True):
        mixed += a.inbound(frame_a)
        b.inbound(frame_b)
    solo = b"".join(alone.inbound(frame) for frame in wire_a)
    assert len(mixed) == len(solo) > 0
    diff = np.frombuffer(mixed, np.int16).astype(np.int32) - np.frombuffer(solo, np.int16)
    assert np.abs(diff).max() <= 4  # dither only


def test_unknown_law_is_rejected():
    with pytest.raises(ValueError):
        G711Audio("gsm")  # type: ignore[arg-type]
