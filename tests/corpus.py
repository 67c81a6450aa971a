"""Real speech for tests: the Asterisk core prompts (8 kHz WAV) with their transcripts, and the
word error rate to score a recogniser against them.

`tests/setup.sh` fetches the Debian packages into `corpus_dir()`.
"""

from __future__ import annotations

import gzip
import itertools
import os
import random
import re
import wave
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import NoReturn

import pytest

__all__ = [
    "Prompt",
    "asterisk_prompts",
    "corpus_dir",
    "normalize_words",
    "select_prompts",
    "skip_or_fail",
    "word_error_rate",
]

SETUP_HINT = "run tests/setup.sh"
_SOUNDS = Path("usr/share/asterisk/sounds/en_US_f_Allison")
_TRANSCRIPTS = Path("usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")


@dataclass(frozen=True, slots=True)
class Prompt:
    name: str  # e.g. "vm-goodbye" or "digits/1"
    wav: Path  # 8 kHz, 16-bit, mono
    text: str

    @property
    def duration(self) -> float:
        with wave.open(str(self.wav), "rb") as w:
            return w.getnframes() / w.getframerate()

    def pcm(self) -> tuple[bytes, int]:
        """(PCM16 LE mono, sample rate)."""
        with wave.open(str(self.wav), "rb") as w:
            if w.getnchannels() != 1 or w.getsampwidth() != 2:
                raise ValueError(f"{self.wav}: expected 16-bit mono")
            return w.readframes(w.getnframes()), w.getframerate()


def skip_or_fail(reason: str) -> NoReturn:
    """A test cannot run for want of something outside the code: fail under CI=true, else skip."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true, so this is an error, not a skip)", pytrace=False)
    pytest.skip(reason)


def corpus_dir() -> Path:
    cache_root = os.environ.get("CALLGATE_TEST_CACHE") or Path.home() / ".cache" / "callgate"
    return Path(cache_root) / "corpus" / "asterisk"


@cache
def _load(root: Path) -> tuple[Prompt, ...]:
    prompts = []
    with gzip.open(root / _TRANSCRIPTS, "rt", encoding="utf-8") as lines:
        for line in lines:
            name, sep, text = line.partition(":")
            if not sep or line.startswith(";"):
                continue
            # Descriptions of sounds are bracketed: "beep: [...]", "silence/1: (...)",
            # "letters/at: at [@]"; keep only the spoken words.
            text = re.sub(r"\[[^\]]*\]|\([^)]*\)", " ", text).strip()
            wav = root / _SOUNDS / f"{name.strip()}.wav"
            if text and wav.is_file():
                prompts.append(Prompt(name.strip(), wav, " ".join(text.split())))
    return tuple(prompts)


def asterisk_prompts() -> list[Prompt]:
    """Every spoken prompt that has both a WAV file and a transcript."""
    root = corpus_dir()
    if not (root / _TRANSCRIPTS).is_file() or not (root / _SOUNDS).is_dir():
        skip_or_fail(f"Asterisk speech corpus not found in {root}; {SETUP_HINT}")
    return list(_load(root))


def select_prompts(
    n: int, seed: int = 0, min_secs: float = 1.5, max_secs: float = 6.0
) -> list[Prompt]:
    """`n` sentence-like prompts (3+ words, duration in range), spread over that range of
    durations, and the same ones for the same arguments."""
    candidates = sorted(
        (p.duration, p.name, p)
        for p in asterisk_prompts()
        if len(p.text.split()) >= 3 and min_secs <= p.duration <= max_secs
    )
    if len(candidates) < n:
        raise ValueError(f"only {len(candidates)} prompts between {min_secs} and {max_secs} s")
    rng = random.Random(seed)
    # One pick from each of n equal slices of the duration-sorted list.
    bounds = [len(candidates) * i // n for i in range(n + 1)]
    return [candidates[rng.randrange(lo, hi)][2] for lo, hi in itertools.pairwise(bounds)]


_ONES = (
    *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
    *("eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen"),
    *("eighteen", "nineteen"),
)
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_ORDINALS = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
_SYMBOLS = {"#": " pound ", "*": " star ", "%": " percent ", "&": " and ", "+": " plus "}
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3})")
_TOKEN = re.compile(r"\$?\d+(?:st|nd|rd|th)?|[a-z]+(?:'[a-z]+)*")


def _number_words(n: int) -> list[str]:
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        tens, ones = divmod(n, 10)
        return [_TENS[tens]] + ([_ONES[ones]] if ones else [])
    for size, word in ((1_000_000, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            high, rest = divmod(n, size)
            return [*_number_words(high), word, *(_number_words(rest) if rest else [])]
    raise AssertionError(n)


def _ordinal(words: list[str]) -> list[str]:
    last = words[-1]
    if last in _ORDINALS:
        last = _ORDINALS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return [*words[:-1], last]


def _digits_to_words(token: str) -> list[str]:
    dollars = token.startswith("$")
    digits = token.lstrip("$")
    suffix = digits[-2:] if digits[-2:].isalpha() else ""
    digits = digits.removesuffix(suffix) if suffix else digits
    if (len(digits) > 1 and digits.startswith("0")) or len(digits) > 7:
        words = [_ONES[int(d)] for d in digits]  # read out digit by digit: "0800", "5551234567"
    else:
        words = _number_words(int(digits))
    if suffix:
        words = _ordinal(words)
    return [*words, "dollars"] if dollars else words


def normalize_words(text: str) -> list[str]:
    """Words to compare: lower case, no punctuation, numbers spelled out ("1" -> "one",
    "21st" -> "twenty first", "$5" -> "five dollars"), hyphenated words split."""
    text = _THOUSANDS.sub("", text.lower().replace("’", "'"))
    for symbol, word in _SYMBOLS.items():
        text = text.replace(symbol, word)
    words: list[str] = []
    for token in _TOKEN.findall(text):
        if token[0].isdigit() or token[0] == "$":
            words.extend(_digits_to_words(token))
        else:
            words.append(token)
    return words


def _edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance in words (substitutions, insertions and deletions cost 1)."""
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, 1):
        current = [i]
        for j, hyp_word in enumerate(hyp, 1):
            current.append(
                min(
                    previous[j] + 1,  # ref word deleted
                    current[j - 1] + 1,  # hyp word inserted
                    previous[j - 1] + (ref_word != hyp_word),  # match or substitution
                )
            )
        previous = current
    return previous[-1]


def word_error_rate(refs: list[str], hyps: list[str]) -> float:
    """Corpus WER: total word edits over total reference words, after `normalize_words`."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    errors = words = 0
    for ref, hyp in zip(refs, hyps, strict=True):
        ref_words = normalize_words(ref)
        errors += _edit_distance(ref_words, normalize_words(hyp))
        words += len(ref_words)
    if words == 0:
        raise ValueError("the references have no words")
    return errors / words
