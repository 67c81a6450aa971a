"""Touch-tone keys: collecting the caller's digits into entries, and generating tones to send.

Twilio and Plivo media streams report the caller's keys as messages, one digit each, but have
no message to send a key: the agent's `send_dtmf` reaches the far end (an IVR the agent
navigates) as in-band tones in the audio itself, which survive G.711.
"""

from __future__ import annotations

import numpy as np

# ITU-T Q.23: each key is one low-group (row) and one high-group (column) frequency.
_ROWS = (697, 770, 852, 941)
_COLUMNS = (1209, 1336, 1477, 1633)
_KEYPAD = ("123A", "456B", "789C", "*0#D")
DTMF_FREQUENCIES: dict[str, tuple[int, int]] = {
    key: (row_hz, column_hz)
    for row_hz, keys in zip(_ROWS, _KEYPAD, strict=True)
    for column_hz, key in zip(_COLUMNS, keys, strict=True)
}
DTMF_DIGITS = "0123456789*#ABCD"
_RAMP_MS = 3
"""Raised-cosine edges: a hard-keyed tone splatters energy across the band and clicks."""


class DtmfCollector:
    """Groups the caller's keys into entries (an account number, a menu choice).

    An entry ends when the terminator is pressed (not included in the entry), when it reaches
    `max_digits`, or when `inter_digit_timeout_secs` pass after its last key. `now` is any
    clock in seconds (media time, `time.monotonic()`): nothing here sleeps or reads a clock.
    Call `poll` regularly (e.g. once per caller frame) so timed-out entries come out.
    A terminator with no digits before it yields nothing.
    """

    __slots__ = ("_digits", "_last_at", "max_digits", "terminator", "timeout_secs")

    def __init__(
        self,
        inter_digit_timeout_secs: float = 3.0,
        terminator: str | None = "#",
        max_digits: int = 32,
    ) -> None:
        if inter_digit_timeout_secs <= 0:
            raise ValueError("inter_digit_timeout_secs must be positive")
        if terminator is not None and (len(terminator) != 1 or terminator not in DTMF_DIGITS):
            raise ValueError(f"terminator must be one DTMF key of {DTMF_DIGITS!r} or None")
        if max_digits < 1:
            raise ValueError("max_digits must be at least 1")
        self.timeout_secs = inter_digit_timeout_secs
        self.terminator = terminator
        self.max_digits = max_digits
        self._digits: list[str] = []
        self._last_at = 0.0

    @property
    def pending(self) -> str:
        """The digits of the entry in progress."""
        return "".join(self._digits)

    def push(self, digit: str, now: float) -> str | None:
        """One key; returns an entry if one is complete now.

        A key after the timeout (when `poll` was not called in time) returns the timed-out
        entry and starts the next one: that key can never complete an entry itself too.
        """
        digit = digit.upper()
        if len(digit) != 1 or digit not in DTMF_DIGITS:
            raise ValueError(f"{digit!r} is not a DTMF key")
        expired = self.poll(now)
        if digit == self.terminator:
            return expired or self._take()
        self._digits.append(digit)
        self._last_at = now
        if len(self._digits) >= self.max_digits:
            return self._take()
        return expired

    def poll(self, now: float) -> str | None:
        """Returns the entry in progress once its inter-digit timeout has passed."""
        if self._digits and now - self._last_at >= self.timeout_secs:
            return self._take()
        return None

    def _take(self) -> str | None:
        entry = "".join(self._digits) or None
        self._digits.clear()
        return entry


def dtmf_tones(
    digits: str,
    rate: int = 16000,
    tone_ms: int = 100,
    gap_ms: int = 60,
    level_dbfs: float = -10.0,
) -> bytes:
    """In-band DTMF as PCM16 LE mono: for each key, `tone_ms` of its two tones, then `gap_ms`
    of silence. `level_dbfs` is each tone's peak level, so the pair peaks 6 dB higher (the
    default pair is near the -7 dBm0 of a phone's keypad and clear of mu-law clipping).
    Q.24 receivers want at least 40 ms of tone and 40 ms of pause.
    """
    keys = digits.upper()
    bad = sorted(set(keys) - set(DTMF_DIGITS))
    if bad:
        raise ValueError(f"not DTMF keys: {bad}")
    if tone_ms <= 0 or gap_ms < 0 or rate <= 0:
        raise ValueError("rate and tone_ms must be positive and gap_ms not negative")
    amplitude = 10 ** (level_dbfs / 20)
    if 2 * amplitude > 1:
        raise ValueError("level_dbfs above -6 dBFS would clip the tone pair")
    tone_n = rate * tone_ms // 1000
    gap = np.zeros(rate * gap_ms // 1000, dtype=np.int16)
    t = np.arange(tone_n) / rate
    envelope = _envelope(tone_n, rate * _RAMP_MS // 1000) * (amplitude * 32767)
    pieces = []
    for key in keys:
        low_hz, high_hz = DTMF_FREQUENCIES[key]
        pair = np.sin(2 * np.pi * low_hz * t) + np.sin(2 * np.pi * high_hz * t)
        pieces += [np.round(pair * envelope).astype(np.int16), gap]
    return np.concatenate(pieces).astype("<i2").tobytes() if pieces else b""


def _envelope(n: int, ramp: int) -> np.ndarray:
    envelope = np.ones(n)
    ramp = min(ramp, n // 2)
    if ramp:
        edge = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        envelope[:ramp] = edge
        envelope[n - ramp :] = edge[::-1]
    return envelope
