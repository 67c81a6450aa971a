"""Per-call noise suppression in front of VAD and STT (the agent's `denoise:` section).

Measured through the phone path (bench/denoise_eval.py): `speex` (SpeexDSP preprocessor,
~18 us per 20 ms frame) lowers Whisper's WER in noise (20 prompts, 10 dB SNR: 19.7% -> 15.8%)
and starts no more false speech on real noise. `rnnoise` (RNNoise v0.2, ~0.9 ms per frame, at
48 kHz) helps WER about as much but *adds* VAD false starts on real noise (1.9/min at -26 dBFS
where none and speex have 0): prefer speex. Each call gets its own denoiser; never share one.
"""

from __future__ import annotations

from typing import Literal

from pipeline.denoise.base import HOP, HOP_BYTES, Denoiser, PassThrough
from pipeline.denoise.speex import SpeexDenoiser

__all__ = ["HOP", "HOP_BYTES", "DenoiseKind", "Denoiser", "PassThrough", "make_denoiser"]

DenoiseKind = Literal["none", "speex", "rnnoise"]


def make_denoiser(kind: DenoiseKind, *, suppress_db: int = 30) -> Denoiser:
    """A fresh denoiser for one call. `suppress_db` (speex only): the most that noise is
    attenuated. Raises `RNNoiseUnavailable` when rnnoise is asked for but not installed."""
    if kind == "none":
        return PassThrough()
    if kind == "speex":
        return SpeexDenoiser(suppress_db=suppress_db)
    if kind == "rnnoise":
        from pipeline.denoise.rnnoise import RNNoiseDenoiser  # optional: pyrnnoise

        return RNNoiseDenoiser()
    raise ValueError(f"unknown denoiser {kind!r}")
