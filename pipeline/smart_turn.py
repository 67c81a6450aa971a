"""End-of-turn detection with Smart Turn v3.2 (pipecat-ai/smart-turn-v3, BSD-2) on ONNX.

The model hears the last 8 s of the caller's turn (left-padded with zeros when shorter, so the
speech sits at the end of the window) as Whisper log-mel features, and answers the probability
that the turn is complete. It is meant to run when VAD reports a pause.

Input preparation follows the reference (pipecat's `LocalSmartTurnAnalyzerV3`): PCM scaled to
[-1, 1], cut/padded to 8 s, then normalised to zero mean and unit variance over the whole
window, padding included, before `WhisperFeatureExtractor(chunk_length=8)`. The ONNX graph ends
in a sigmoid, so its `logits` output is already a probability (checked: a single Sigmoid node,
and outputs stay in [0, 1] even for inputs scaled by 1e4).
"""

from __future__ import annotations

import asyncio
from functools import cache
from pathlib import Path

import numpy as np
import onnxruntime as ort
import structlog

from pipeline.inference import turn_executor
from pipeline.mel import N_MELS, SAMPLE_RATE, log_mel
from pipeline.models import model_path

log = structlog.get_logger()

WINDOW_SECONDS = 8
WINDOW_SAMPLES = WINDOW_SECONDS * SAMPLE_RATE  # 128_000
N_FRAMES = WINDOW_SAMPLES // 160  # 800
_SCALE = np.float32(1.0 / 32768.0)
_VAR_EPS = 1e-7  # the reference's, on [-1, 1] audio: keeps an all-zero window finite


def features(pcm16k: bytes | np.ndarray) -> np.ndarray:
    """The model's input [80, 800] for a turn's int16 PCM at 16 kHz (bytes or int16 array).

    Only the last 8 s count; a shorter turn is left-padded with zeros.
    """
    if isinstance(pcm16k, bytes | bytearray | memoryview):
        samples = np.frombuffer(pcm16k, dtype=np.int16)
    else:
        samples = np.asarray(pcm16k)
        if samples.dtype != np.int16 or samples.ndim != 1:
            raise TypeError(f"expected 1-D int16 PCM, got {samples.dtype} {samples.shape}")
    tail = samples[-WINDOW_SAMPLES:]
    padding = WINDOW_SAMPLES - len(tail)
    audio = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
    speech = audio[padding:]
    np.multiply(tail, _SCALE, out=speech)
    mean = audio.mean(dtype=np.float64)
    std = np.sqrt(audio.var(dtype=np.float64) + _VAR_EPS)
    audio -= np.float32(mean)
    audio *= np.float32(1.0 / std)
    return log_mel(audio, constant_lead=padding)


class SmartTurnModel:
    """The Smart Turn session; thread-safe, so one instance serves every call."""

    def __init__(self, path: Path | None = None, threads: int = 1) -> None:
        path = path or model_path("smart-turn")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        log.info("smart_turn_model_loaded", path=str(path), threads=threads)

    def predict(self, batch_features: np.ndarray) -> np.ndarray:
        """Probabilities [B] that each turn is complete, for features float32 [B, 80, 800]."""
        if batch_features.ndim != 3 or batch_features.shape[1:] != (N_MELS, N_FRAMES):
            raise ValueError(f"expected [B, {N_MELS}, {N_FRAMES}], got {batch_features.shape}")
        (probs,) = self._session.run(
            None, {"input_features": batch_features.astype(np.float32, copy=False)}
        )
        return probs[:, 0]


@cache
def shared_model() -> SmartTurnModel:
    """The process-wide model, loaded on first use."""
    return SmartTurnModel()


class SmartTurn:
    """Judges whether a caller's turn is over, off the event loop."""

    def __init__(self, threshold: float = 0.5, model: SmartTurnModel | None = None) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.threshold = threshold
        self._model = model

    def probability(self, pcm16k: bytes | np.ndarray) -> float:
        """Blocking: the probability that the turn in `pcm16k` (16 kHz int16) is complete."""
        model = self._model or shared_model()
        return float(model.predict(features(pcm16k)[None])[0])

    async def is_complete(self, pcm16k: bytes) -> tuple[bool, float]:
        """(complete?, probability) for the turn so far, computed on the turn thread."""
        loop = asyncio.get_running_loop()
        prob = await loop.run_in_executor(turn_executor(), self.probability, pcm16k)
        return prob >= self.threshold, prob
