"""Caller audio for the simulated phone: WAV in, 8 kHz mu-law frames out, speech bounds.

A phone line carries 8 kHz G.711, so every caller WAV is brought to 8 kHz mono 16-bit and
mu-law encoded once, up front. Latency is measured from where speech ends, not where the file
ends (prompts carry trailing silence), so each file's voiced span is found from its energy.
"""

from __future__ import annotations

import audioop
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

LINE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms at 8 kHz: one Twilio media message
FRAME_SECS = FRAME_SAMPLES / LINE_RATE
ULAW_SILENCE = b"\xff" * FRAME_SAMPLES
SPEECH_REL_DB = -40.0


@dataclass(frozen=True, slots=True)
class CallerAudio:
    """One caller turn as whole 20 ms mu-law frames, with the frames where speech begins/ends."""

    path: Path
    ulaw: bytes
    onset_frame: int
    last_voiced_frame: int

    @property
    def frames(self) -> int:
        return len(self.ulaw) // FRAME_SAMPLES

    def frame(self, index: int) -> memoryview:
        start = index * FRAME_SAMPLES
        return memoryview(self.ulaw)[start : start + FRAME_SAMPLES]


def read_wav_8k(path: Path) -> np.ndarray:
    """Any PCM WAV as 8 kHz mono int16 samples."""
    with wave.open(str(path), "rb") as wav:
        channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
        data = wav.readframes(wav.getnframes())
    if width == 1:  # 8-bit WAV is unsigned
        data = audioop.bias(data, 1, -128)
    if width != 2:
        data = audioop.lin2lin(data, width, 2)
    samples = np.frombuffer(data, dtype=np.int16).reshape(-1, channels).astype(np.float32)
    mono = samples.mean(axis=1)
    if rate != LINE_RATE:
        mono = soxr.resample(mono, rate, LINE_RATE)
    return np.clip(np.rint(mono), -32768, 32767).astype(np.int16)


def speech_bounds(pcm: np.ndarray, rel_db: float = SPEECH_REL_DB) -> tuple[int, int] | None:
    """First and last 20 ms frame whose RMS is within `rel_db` of the file's peak sample.

    None for a file with no voiced frame (all digital silence).
    """
    frames = len(pcm) // FRAME_SAMPLES
    if frames == 0:
        return None
    blocks = pcm[: frames * FRAME_SAMPLES].astype(np.float64).reshape(frames, FRAME_SAMPLES)
    peak = float(np.abs(blocks).max())
    if peak == 0.0:
        return None
    rms = np.sqrt((blocks**2).mean(axis=1))
    voiced = np.flatnonzero(rms > peak * 10 ** (rel_db / 20))
    return int(voiced[0]), int(voiced[-1])


def load_caller_wav(path: Path) -> CallerAudio:
    pcm = read_wav_8k(path)
    if len(pcm) == 0:
        raise ValueError(f"{path}: no audio")
    pad = -len(pcm) % FRAME_SAMPLES
    if pad:
        pcm = np.concatenate([pcm, np.zeros(pad, dtype=np.int16)])
    bounds = speech_bounds(pcm)
    frames = len(pcm) // FRAME_SAMPLES
    onset, last = bounds if bounds else (0, frames - 1)
    return CallerAudio(path, audioop.lin2ulaw(pcm.tobytes(), 2), onset, last)


def write_wav_8k(path: Path, pcm: bytes | bytearray) -> None:
    """16-bit mono 8 kHz WAV."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(LINE_RATE)
        wav.writeframes(bytes(pcm))
