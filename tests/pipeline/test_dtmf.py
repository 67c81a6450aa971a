"""DTMF: collecting the caller's keys into entries, and tones that a receiver decodes back,
also after the phone path (16 kHz -> 8 kHz mu-law -> 16 kHz)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.codecs import ulaw_to_pcm
from pipeline.dtmf import DTMF_DIGITS, DTMF_FREQUENCIES, DtmfCollector, dtmf_tones
from providers.g711_audio import G711Audio

ROWS = (697, 770, 852, 941)
COLUMNS = (1209, 1336, 1477, 1633)
KEY_AT = {freqs: key for key, freqs in DTMF_FREQUENCIES.items()}


def goertzel_power(block: np.ndarray, hz: float, rate: int) -> float:
    """Mean power of the `hz` component of `block` (a sine of amplitude A gives about A²/2)."""
    coefficient = 2 * np.cos(2 * np.pi * hz / rate)
    s1 = s2 = 0.0
    for x in block:
        s1, s2 = x + coefficient * s1 - s2, s1
    return 2 * (s1 * s1 + s2 * s2 - coefficient * s1 * s2) / len(block) ** 2


def detect_block(block: np.ndarray, rate: int) -> str | None:
    """The key in one block, as a receiver judges it: the strongest row and column tone must
    carry most of the block's energy, stand 10 dB above the other tones of their group, and
    be within 8 dB of each other (twist)."""
    total = float(np.mean(block**2))
    if total < 1e-6:
        return None
    rows = [goertzel_power(block, hz, rate) for hz in ROWS]
    columns = [goertzel_power(block, hz, rate) for hz in COLUMNS]
    row, column = int(np.argmax(rows)), int(np.argmax(columns))
    best_row, best_column = rows[row], columns[column]
    if (best_row + best_column) / total < 0.8:
        return None
    if sorted(rows)[-2] * 10 > best_row or sorted(columns)[-2] * 10 > best_column:
        return None
    if not 1 / 6.3 < best_row / best_column < 6.3:
        return None
    return KEY_AT[(ROWS[row], COLUMNS[column])]


def decode(pcm: bytes, rate: int, block_ms: int = 20) -> str:
    """Keys in order: a key counts when two blocks in a row agree, and a new key needs a
    block without that key in between (the pause)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768
    n = rate * block_ms // 1000
    blocks = [detect_block(samples[i : i + n], rate) for i in range(0, len(samples) - n + 1, n)]
    keys, previous, current = [], None, None
    for block in blocks:
        if block is not None and block == previous and block != current:
            keys.append(block)
            current = block
        elif block is None:
            current = None
        previous = block
    return "".join(keys)


def phone_path(pcm16k: bytes) -> tuple[bytes, bytes]:
    """What the far end hears at 8 kHz, and that audio brought back to 16 kHz."""
    sender, receiver = G711Audio("ulaw"), G711Audio("ulaw")
    wire = b"".join(sender.outbound(pcm16k[i : i + 640]) for i in range(0, len(pcm16k), 640))
    wire += sender.flush_outbound()
    return ulaw_to_pcm(wire), receiver.inbound(wire)


def test_tones_decode_back_to_every_key() -> None:
    pcm = dtmf_tones(DTMF_DIGITS)
    assert decode(pcm, 16000) == DTMF_DIGITS
    assert len(pcm) == len(DTMF_DIGITS) * 2 * (1600 + 960)


def test_repeated_keys_stay_separate_and_lowercase_letters_work() -> None:
    assert decode(dtmf_tones("1100#a"), 16000) == "1100#A"


def test_tones_survive_the_phone_path() -> None:
    keys = "5551234*0#9D"
    at_8k, back_at_16k = phone_path(dtmf_tones(keys))
    assert decode(at_8k, 8000) == keys
    assert decode(back_at_16k, 16000) == keys


@pytest.mark.parametrize("key", ["1", "#", "D"])
def test_tone_frequencies_are_within_one_and_a_half_percent(key: str) -> None:
    samples = np.frombuffer(dtmf_tones(key, rate=8000, tone_ms=1000, gap_ms=0), dtype="<i2")
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    peaks = sorted(np.argsort(spectrum)[-2:] * 8000 / len(samples))
    assert peaks[0] == pytest.approx(DTMF_FREQUENCIES[key][0], rel=0.015)
    assert peaks[1] == pytest.approx(DTMF_FREQUENCIES[key][1], rel=0.015)
    assert abs(peaks[1] - peaks[0]) > 200


@pytest.mark.parametrize("level", [-10.0, -20.0])
def test_level_is_per_tone_and_timing_is_as_asked(level: float) -> None:
    pcm = dtmf_tones("8", tone_ms=200, gap_ms=50, level_dbfs=level)
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32767
    tone, gap = samples[:3200], samples[3200:]
    assert len(gap) == 800 and not gap.any()
    steady = tone[100:-100]  # inside the 3 ms ramps
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(steady**2)))
    assert rms_dbfs == pytest.approx(level, abs=0.1)  # two tones of peak A: RMS is A
    assert np.max(np.abs(tone)) <= 2 * 10 ** (level / 20) + 1e-3
    assert abs(tone[0]) < 0.01 and abs(tone[-1]) < 0.01  # ramped, no click


def test_tones_refuse_bad_keys_and_clipping_levels() -> None:
    with pytest.raises(ValueError, match="not DTMF keys"):
        dtmf_tones("12w3")
    with pytest.raises(ValueError, match="clip"):
        dtmf_tones("1", level_dbfs=-3)
    assert dtmf_tones("") == b""


def test_terminator_ends_an_entry_and_is_not_part_of_it() -> None:
    collector = DtmfCollector()
    assert collector.push("1", 0.0) is None
    assert collector.push("2", 0.5) is None
    assert collector.pending == "12"
    assert collector.push("#", 1.0) == "12"
    assert collector.pending == ""
    assert collector.push("#", 1.2) is None  # a lone terminator: nothing entered


def test_inter_digit_timeout_ends_an_entry() -> None:
    collector = DtmfCollector(inter_digit_timeout_secs=2.0)
    collector.push("4", 10.0)
    collector.push("2", 11.5)
    assert collector.poll(13.4) is None  # 1.9 s after the last key
    assert collector.poll(13.5) == "42"
    assert collector.poll(20.0) is None


def test_max_digits_ends_an_entry() -> None:
    collector = DtmfCollector(max_digits=3)
    assert [collector.push(k, i * 0.1) for i, k in enumerate("12345")] == [
        None, None, "123", None, None,
    ]  # fmt: skip
    assert collector.pending == "45"


def test_a_key_after_the_timeout_starts_a_new_entry() -> None:
    """A late key first returns the timed-out entry, even if poll was not called in time."""
    collector = DtmfCollector(inter_digit_timeout_secs=3.0, max_digits=2)
    collector.push("7", 0.0)
    assert collector.push("8", 5.0) == "7"
    assert collector.pending == "8"
    assert collector.push("9", 5.1) == "89"
    collector.push("1", 6.0)
    assert collector.push("#", 9.5) == "1"  # the late terminator ends nothing more
    assert collector.pending == ""


def test_without_terminator_every_key_is_a_digit() -> None:
    collector = DtmfCollector(inter_digit_timeout_secs=1.0, max_digits=1, terminator=None)
    assert collector.push("1", 0.0) == "1"
    assert collector.push("#", 5.1) == "#"
    assert collector.poll(9.0) is None


def test_collector_checks_its_input() -> None:
    collector = DtmfCollector()
    with pytest.raises(ValueError, match="not a DTMF key"):
        collector.push("x", 0.0)
    assert collector.push("a", 0.0) is None and collector.pending == "A"
    with pytest.raises(ValueError, match="terminator"):
        DtmfCollector(terminator="##")
    with pytest.raises(ValueError):
        DtmfCollector(max_digits=0)


def test_the_test_detector_is_not_fooled() -> None:
    """Speech-like single tones, off-grid pairs and noise must decode to nothing."""
    rate, t = 16000, np.arange(16000) / 16000
    single = 0.3 * np.sin(2 * np.pi * 697 * t)
    off_grid = 0.3 * (np.sin(2 * np.pi * 600 * t) + np.sin(2 * np.pi * 1100 * t))
    noise = np.random.default_rng(7).normal(0, 0.1, rate)
    for signal in (single, off_grid, noise):
        assert decode((signal * 32767).astype("<i2").tobytes(), rate) == ""
