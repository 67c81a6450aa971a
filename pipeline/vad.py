"""Voice activity detection with Silero VAD v5 (ONNX) at 16 kHz.

`SileroModel` is loaded once per process and shared; it runs a batch of chunks from many calls
in one session run (`pipeline.vad_batch`). `VadStream` holds one call's model state and cuts
its 20 ms frames into the 512-sample chunks the model eats. `VadSegmenter` turns
probabilities into speech events.

Silero v5 must see the previous 64 samples in front of every 512-sample chunk: without them
it scores real speech at ~0.001, the same as silence (checked on the Allison prompts; with the
context, speech scores ~0.9 and silence ~0.005).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort
import structlog

from pipeline.models import model_path

log = structlog.get_logger()

SAMPLE_RATE = 16_000
CHUNK = 512
CONTEXT = 64
CHUNK_SECONDS = CHUNK / SAMPLE_RATE  # 0.032
STATE_SHAPE = (2, 1, 128)
_SCALE = 1.0 / 32768.0


class VadModel(Protocol):
    def infer(self, chunks: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class SileroModel:
    """The Silero VAD session; thread-safe, so one instance serves every call."""

    def __init__(self, path: Path | None = None) -> None:
        path = path or model_path("silero-vad")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        log.info("vad_model_loaded", path=str(path))

    def infer(self, chunks: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores B chunks of float32 [B, 64+512] (context + chunk, in [-1, 1]) at once.

        `states` is float32 [2, B, 128], one column per stream; returns (probs [B], new states).
        """
        probs, new_states = self._session.run(
            None, {"input": chunks, "state": states, "sr": self._sr}
        )
        return probs[:, 0], new_states


@cache
def shared_model() -> SileroModel:
    """The process-wide model, loaded on first use."""
    return SileroModel()


class VadStream:
    """One call's VAD: model state, the 64-sample context and the partly filled chunk.

    `push` scores the chunks at once; `pipeline.vad_batch.listen` scores them together with
    other calls' chunks (the same probabilities: the model keeps no state outside `state`).
    """

    __slots__ = ("_buf", "_fill", "model", "state")

    def __init__(self, model: VadModel) -> None:
        self.model = model
        self.state = np.zeros(STATE_SHAPE, dtype=np.float32)
        """float32 [2, 1, 128]: the model's recurrent state after the chunks scored so far."""
        self._buf = np.zeros((1, CONTEXT + CHUNK), dtype=np.float32)  # context, then chunk
        self._fill = CONTEXT

    def chunks(self, pcm16k: bytes) -> Iterator[np.ndarray]:
        """Feeds PCM16 LE at 16 kHz; yields each chunk it completes as float32 [1, 64+512].

        A yielded chunk is a view that the next step overwrites: score or copy it first.
        """
        samples = np.frombuffer(pcm16k, dtype=np.int16)
        row = self._buf[0]
        start = 0
        while start < len(samples):
            n = min(CONTEXT + CHUNK - self._fill, len(samples) - start)
            np.multiply(samples[start : start + n], _SCALE, out=row[self._fill : self._fill + n])
            self._fill += n
            start += n
            if self._fill == CONTEXT + CHUNK:
                yield self._buf
                row[:CONTEXT] = row[-CONTEXT:]
                self._fill = CONTEXT

    def push(self, pcm16k: bytes) -> list[float]:
        """Feeds PCM16 LE at 16 kHz; returns a probability for each chunk it completed."""
        probs: list[float] = []
        for chunk in self.chunks(pcm16k):
            p, self.state = self.model.infer(chunk, self.state)
            probs.append(float(p[0]))
        return probs


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Speech confirmed; `at_seconds` is the media time where it began."""

    at_seconds: float


@dataclass(frozen=True, slots=True)
class SpeechPaused:
    """Silence lasted `pause_secs`; `at_seconds` is the media time where the speech ended."""

    at_seconds: float


VadEvent = SpeechStarted | SpeechPaused


class VadSegmenter:
    """Speech/silence tracker with hysteresis, timed in media time (one chunk = 32 ms).

    Speech starts on a chunk >= `threshold` and is confirmed once it has held (no chunk below
    `neg_threshold`) for `min_speech_secs`. During speech, a chunk below `neg_threshold` opens a
    silence run and a chunk >= `threshold` closes it; a run of `pause_secs` ends the speech.
    """

    def __init__(
        self,
        threshold: float = 0.5,
        neg_threshold: float = 0.35,
        min_speech_secs: float = 0.2,
        pause_secs: float = 0.2,
        chunk_secs: float = CHUNK_SECONDS,
    ) -> None:
        if not 0.0 < neg_threshold <= threshold < 1.0:
            raise ValueError("need 0 < neg_threshold <= threshold < 1")
        self._on = threshold
        self._off = neg_threshold
        self._chunk_secs = chunk_secs
        self._min_speech = max(1, math.ceil(min_speech_secs / chunk_secs - 1e-9))
        self._pause = max(1, math.ceil(pause_secs / chunk_secs - 1e-9))
        self._chunks = 0  # chunks seen so far: media time is _chunks * chunk_secs
        self._in_speech = False
        self._run_start: int | None = None  # candidate speech or silence run, in chunks
        self._last_voiced = 0  # chunks seen up to the end of the last chunk >= threshold

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def last_voiced_at(self) -> float:
        """Media time at the end of the last voiced chunk (hysteresis as for speech itself)."""
        return self._last_voiced * self._chunk_secs

    def update(self, probs: Iterable[float]) -> list[VadEvent]:
        """Consumes chunk probabilities in order; returns the events they caused."""
        events: list[VadEvent] = []
        for p in probs:
            i = self._chunks
            self._chunks += 1
            voicing = self._in_speech or self._run_start is not None
            if p >= self._on or (voicing and p >= self._off):
                self._last_voiced = self._chunks
            if not self._in_speech:
                if self._run_start is None:
                    if p >= self._on:
                        self._run_start = i
                elif p < self._off:
                    self._run_start = None
                start = self._run_start
                if start is not None and self._chunks - start >= self._min_speech:
                    events.append(SpeechStarted(start * self._chunk_secs))
                    self._in_speech, self._run_start = True, None
            else:
                if p >= self._on:
                    self._run_start = None
                elif p < self._off and self._run_start is None:
                    self._run_start = i
                start = self._run_start
                if start is not None and self._chunks - start >= self._pause:
                    events.append(SpeechPaused(start * self._chunk_secs))
                    self._in_speech, self._run_start = False, None
        return events
