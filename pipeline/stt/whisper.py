"""Offline speech-to-text: Whisper (tiny.en) through faster-whisper / CTranslate2 on the CPU.

One model per process, shared by every call. CTranslate2 runs `num_workers` decodes in parallel,
each on `cpu_threads` threads; on a small box many calls are served best by one thread per
decode and as many decodes as cores, so a long turn on one call does not hold up the others.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import Executor
from pathlib import Path

import numpy as np
import structlog
from faster_whisper import WhisperModel

from pipeline.frames import CANONICAL_RATE, SAMPLE_WIDTH
from pipeline.inference import inference_executor
from pipeline.models import model_path

__all__ = ["MODEL_NAME", "WhisperSTT", "load_whisper", "whisper_threads"]

log = structlog.get_logger()

MODEL_NAME = "whisper-tiny.en"

_lock = threading.Lock()
_models: dict[Path, WhisperModel] = {}


def whisper_threads(cores: int | None = None) -> tuple[int, int]:
    """(cpu_threads per decode, decodes in parallel) for a machine with `cores` cores."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = max(1, cores or 1)
    cpu_threads = 1 if cores <= 4 else 2
    return cpu_threads, max(1, cores // cpu_threads)


def load_whisper(model_dir: Path | None = None) -> WhisperModel:
    """The process's shared model for `model_dir` (default: the fetched whisper-tiny.en),
    loaded on first use. Raises `pipeline.models.ModelMissing` when it is not on disk."""
    path = model_dir if model_dir is not None else model_path(MODEL_NAME)
    with _lock:
        model = _models.get(path)
        if model is None:
            cpu_threads, workers = whisper_threads()
            started = time.perf_counter()
            model = WhisperModel(
                str(path),
                device="cpu",
                compute_type="int8",
                cpu_threads=cpu_threads,
                num_workers=workers,
            )
            _models[path] = model
            log.info(
                "whisper_loaded",
                path=str(path),
                cpu_threads=cpu_threads,
                workers=workers,
                load_ms=round((time.perf_counter() - started) * 1000),
            )
        return model


class WhisperSTT:
    """SpeechToText with faster-whisper; decoding runs in `executor` (default: the shared
    `inference_executor()`), never on the event loop.

    `beam_size=1` (greedy) is the latency choice; 5 is Whisper's reference setting.
    Sampling-temperature fallback is off: on a phone line it mostly re-decodes noise several
    times over, multiplying the worst-case latency.
    """

    def __init__(
        self,
        beam_size: int = 1,
        model_dir: Path | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.beam_size = beam_size
        self._model_dir = model_dir
        self._executor = executor
        self._model: WhisperModel | None = None

    async def warm_up(self) -> None:
        """Load the model (and run one tiny decode) so the first caller turn is not slow."""
        await self._run(bytes(CANONICAL_RATE // 2 * SAMPLE_WIDTH))

    async def transcribe(self, pcm: bytes) -> str:
        if len(pcm) < SAMPLE_WIDTH:
            return ""
        return await self._run(pcm)

    async def _run(self, pcm: bytes) -> str:
        executor = self._executor or inference_executor()
        return await asyncio.get_running_loop().run_in_executor(executor, self._decode, pcm)

    def _decode(self, pcm: bytes) -> str:
        model = self._model
        if model is None:
            model = self._model = load_whisper(self._model_dir)
        usable = len(pcm) - len(pcm) % SAMPLE_WIDTH
        audio = np.frombuffer(pcm, dtype="<i2", count=usable // SAMPLE_WIDTH)
        audio = audio.astype(np.float32) / 32768.0
        segments, _info = model.transcribe(
            audio,
            language="en",
            beam_size=self.beam_size,
            temperature=0.0,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        return " ".join(segment.text.strip() for segment in segments).strip()
