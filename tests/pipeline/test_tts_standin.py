"""The benchmarks' stand-in voice: whole 20 ms frames in the encoding asked for."""

from __future__ import annotations

import numpy as np

from pipeline.codecs import ulaw_to_pcm
from pipeline.tts.standin import StandinTTS, StandinTTSConfig


async def frames(config: StandinTTSConfig) -> list[bytes]:
    return [chunk async for chunk in StandinTTS(config).synthesize("Okay.")]


def rms(pcm: bytes) -> float:
    return float(np.sqrt(np.mean(np.frombuffer(pcm, np.int16).astype(np.float64) ** 2)))


async def test_both_encodings_speak_the_same_length_and_loudness():
    pcm = await frames(StandinTTSConfig(secs=0.5))
    ulaw = await frames(StandinTTSConfig(secs=0.5, encoding="ulaw8k"))
    assert StandinTTS(StandinTTSConfig(encoding="ulaw8k")).encoding == "ulaw8k"
    assert [len(f) for f in pcm] == [640] * 25 and [len(f) for f in ulaw] == [160] * 25
    loudness = rms(b"".join(pcm)), rms(ulaw_to_pcm(b"".join(ulaw)))
    assert loudness[0] > 1000 and abs(loudness[0] - loudness[1]) / loudness[0] < 0.05, loudness
