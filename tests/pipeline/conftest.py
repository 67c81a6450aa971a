"""Shared inputs of the pipeline tests: real speech prompts and real noise recordings."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.models import ModelMissing
from pipeline.vad import SileroModel, shared_model
from tests.corpus import asterisk_prompts, skip_or_fail

NOISE_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "noise"


@pytest.fixture(scope="session")
def vad_model() -> SileroModel:
    """The process's Silero VAD (fails under CI=true when the model was not fetched)."""
    try:
        return shared_model()
    except ModelMissing as exc:
        skip_or_fail(str(exc))


@pytest.fixture(scope="session")
def speech_wav_paths() -> list[Path]:
    """The Asterisk 'Allison' prompts: human speech, 8 kHz 16-bit mono WAV."""
    return [prompt.wav for prompt in asterisk_prompts()]


@pytest.fixture(scope="session")
def noise_wav_paths() -> list[Path]:
    """Real background-noise recordings (16-bit WAV at various rates) from shared/data/noise."""
    paths = sorted(NOISE_DIR.glob("*.wav"))
    if not paths:
        skip_or_fail(f"no noise recordings in {NOISE_DIR}")
    return paths
