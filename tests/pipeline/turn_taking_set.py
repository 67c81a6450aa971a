"""The turn-taking test set: real prompts, whole and cut mid-sentence, heard through the phone.

A cut case is a prompt split at a word boundary inside the sentence (from Whisper's word
timestamps) with a 0.5 to 1.0 s pause before the rest. Every case is sent through the phone
path (8 kHz, mu-law, the gateway's own G.711 edge up to 16 kHz) and ends in silence.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import numpy as np

from pipeline.codecs import pcm_to_ulaw
from pipeline.stt.whisper import load_whisper
from providers.g711_audio import G711Audio
from tests.corpus import Prompt, select_prompts

RATE = 16_000
TRAILING_SILENCE_SECS = 2.5


@dataclass(frozen=True)
class Case:
    name: str
    audio: np.ndarray  # int16 at 16 kHz, as the conversation hears it
    end_of_speech: float  # media seconds where the caller stops for good
    pause: tuple[float, float] | None  # the mid-sentence pause (start, end), cut cases only


def phone(pcm8k: np.ndarray) -> np.ndarray:
    edge = G711Audio("ulaw")
    return np.frombuffer(edge.inbound(pcm_to_ulaw(pcm8k.astype("<i2").tobytes())), np.int16)


def _speech_end(pcm: np.ndarray, rate: int) -> float:
    """Seconds to the end of the last 10 ms window within 40 dB of the loudest."""
    win = rate // 100
    n = len(pcm) // win
    rms = np.sqrt((pcm[: n * win].astype(np.float64).reshape(n, win) ** 2).mean(axis=1)) + 1e-9
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > -40)
    return (loud[-1] + 1) * win / rate


def _word_boundaries(prompt: Prompt, pcm8k: np.ndarray) -> list[float]:
    """Seconds between consecutive words, inside the sentence (not after its last word)."""
    audio16 = np.frombuffer(phone(pcm8k).tobytes(), np.int16).astype(np.float32) / 32768
    segments, _ = load_whisper().transcribe(
        audio16, language="en", beam_size=1, word_timestamps=True, vad_filter=False,
        condition_on_previous_text=False,
    )
    words = [w for s in segments for w in s.words]
    return [
        (a.end + b.start) / 2
        for a, b in itertools.pairwise(words)
        if not a.word.strip().endswith((".", "?", "!"))
    ]


def build_cases(n: int, seed: int = 3) -> tuple[list[Case], list[Case]]:
    """(complete, cut): `n` of each, from the same prompts."""
    rng = random.Random(seed)
    complete: list[Case] = []
    cut: list[Case] = []
    silence = np.zeros(int(TRAILING_SILENCE_SECS * 8000), np.int16)
    for prompt in select_prompts(3 * n, seed=seed, min_secs=1.8, max_secs=6.0):
        if len(cut) == n:
            break
        pcm, rate = prompt.pcm()
        pcm8k = np.frombuffer(pcm, np.int16)
        end = _speech_end(pcm8k, rate)
        inside = [b for b in _word_boundaries(prompt, pcm8k) if 0.5 < b < end - 0.4]
        if not inside:
            continue
        boundary = inside[len(inside) // 2]
        gap = rng.uniform(0.5, 1.0)
        split = int(boundary * rate)
        pause = np.zeros(int(gap * rate), np.int16)
        cut_pcm = np.concatenate([pcm8k[:split], pause, pcm8k[split:], silence])
        cut.append(
            Case(f"{prompt.name}/cut", phone(cut_pcm), end + gap, (boundary, boundary + gap))
        )
        whole = np.concatenate([pcm8k, silence])
        complete.append(Case(prompt.name, phone(whole), end, None))
    return complete, cut
