"""G.711 codecs: exact code round trips and quantization error bounded by segment size."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.codecs import alaw_to_pcm, pcm_to_alaw, pcm_to_ulaw, ulaw_to_pcm

ALL_CODES = bytes(range(256))
ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int64)
ULAW_MAX = 32124  # largest mu-law level in 16-bit PCM
samples16 = st.lists(st.integers(-32768, 32767), min_size=1, max_size=400)


def _bit_length(v: np.ndarray) -> np.ndarray:
    return np.frexp(v.astype(np.float64))[1]  # exact for integers below 2**53


def ulaw_bound(x: np.ndarray) -> np.ndarray:
    """Worst |decode(encode(x)) - x| for mu-law, from the segment layout.

    mu-law quantizes |x| + 132 (the bias) on a log scale: segment s covers
    [2**(s+7), 2**(s+8)) and has 16 levels spaced 2**(s+3) apart, decoded at the middle of
    each interval, so the error is at most half a step. The encoder first drops 2 bits (16 -> 14
    bit) with an arithmetic shift, which moves a negative sample up to 3 further from zero:
    that can add 3 and push the sample into the next, coarser segment. Beyond +-32124 it clips.
    """
    m = np.abs(x)
    seen = np.minimum(m + 3, ULAW_MAX)
    step = 8 * 2.0 ** np.clip(_bit_length(seen + 132) - 8, 0, 7)
    return np.maximum(3 + step / 2, m - ULAW_MAX)


def alaw_bound(x: np.ndarray) -> np.ndarray:
    """Worst |decode(encode(x)) - x| for A-law: half a step of the sample's segment.

    A-law's first two segments (|x| < 512) are linear with step 16; segment s >= 2 covers
    [2**(s+7), 2**(s+8)) with step 2**(s+3). Negative samples are mirrored exactly, and the top
    level 32256 is within half a step (512) of full scale, so there is no separate clipping term.
    """
    step = 16 * 2.0 ** np.maximum(_bit_length(np.abs(x)) - 9, 0)
    return step / 2


def _round_trip(x: np.ndarray, law: str) -> np.ndarray:
    pcm = x.astype("<i2").tobytes()
    back = ulaw_to_pcm(pcm_to_ulaw(pcm)) if law == "ulaw" else alaw_to_pcm(pcm_to_alaw(pcm))
    return np.frombuffer(back, dtype="<i2").astype(np.int64)


def test_every_ulaw_code_survives_decode_encode_but_negative_zero():
    back = pcm_to_ulaw(ulaw_to_pcm(ALL_CODES))
    # 0x7F is mu-law's negative zero: it decodes to 0, which encodes as positive zero 0xFF.
    assert ulaw_to_pcm(b"\x7f") == ulaw_to_pcm(b"\xff") == b"\x00\x00"
    expected = bytearray(ALL_CODES)
    expected[0x7F] = 0xFF
    assert back == bytes(expected)


def test_every_alaw_code_survives_decode_encode():
    # A-law has no zero level: its two smallest codes decode to +8 (0xD5) and -8 (0x55).
    assert alaw_to_pcm(b"\xd5\x55") == np.array([8, -8], dtype="<i2").tobytes()
    assert pcm_to_alaw(alaw_to_pcm(ALL_CODES)) == ALL_CODES


@pytest.mark.parametrize(("law", "bound"), [("ulaw", ulaw_bound), ("alaw", alaw_bound)])
def test_error_bound_holds_for_every_sample_and_is_tight(law, bound):
    err = np.abs(_round_trip(ALL_SAMPLES, law) - ALL_SAMPLES)
    slack = bound(ALL_SAMPLES) - err
    assert slack.min() >= 0
    # The bound is reached in every segment below clipping, so it is derived, not padded.
    for s in range(8):
        lo, hi = (0 if s == 0 else 2 ** (s + 7)), 2 ** (s + 8) - 132 * (law == "ulaw")
        in_seg = (np.abs(ALL_SAMPLES) >= lo) & (np.abs(ALL_SAMPLES) < min(hi, ULAW_MAX))
        assert slack[in_seg].min() == 0, (law, s)


@given(samples16)
def test_ulaw_round_trip_error_within_segment_bound(values):
    x = np.array(values, dtype=np.int64)
    assert np.all(np.abs(_round_trip(x, "ulaw") - x) <= ulaw_bound(x))


@given(samples16)
def test_alaw_round_trip_error_within_segment_bound(values):
    x = np.array(values, dtype=np.int64)
    assert np.all(np.abs(_round_trip(x, "alaw") - x) <= alaw_bound(x))


@given(st.binary(max_size=400))
def test_decode_then_encode_is_stable_and_keeps_length(codes):
    pcm = ulaw_to_pcm(codes)
    assert len(pcm) == 2 * len(codes)
    assert ulaw_to_pcm(pcm_to_ulaw(pcm)) == pcm
    pcm = alaw_to_pcm(codes)
    assert len(pcm) == 2 * len(codes)
    assert pcm_to_alaw(pcm) == codes
