"""A call's recording: a stereo WAV (caller left, agent right, time-aligned) and a JSON
transcript, written into the agent's recording directory.

Each track streams to an anonymous temporary file while the call runs, so a long call costs no
memory; at the end the two are interleaved, in chunks, into `<call_id>.wav`. The caller track is
continuous from its first frame. The agent track is placed by when the far end plays each frame,
so what was sent ahead or cut by a clear lands where the caller heard it, or nowhere.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import structlog

from pipeline.codecs import ulaw_to_pcm
from pipeline.frames import CANONICAL_RATE, SAMPLE_WIDTH, AudioEncoding, AudioFrame
from pipeline.resample import HalfBandResampler, StreamResampler, stream_resampler

log = structlog.get_logger()

RESYNC_SECS = 1.0
"""A caller stream that falls this far behind the wall clock had a gap (e.g. on hold): the
track is padded with silence up to now instead of closing the gap."""
CHUNK_SAMPLES = 64_000
"""Samples per track interleaved at a time when the WAV is written."""
_CALL_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")


class CallRecorder:
    """Per-frame methods only write into buffered files; the first failure disables the
    recorder (logged once) and never reaches the call."""

    def __init__(
        self,
        directory: str | Path,
        call_id: str,
        rate: int = 8000,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not _CALL_ID.fullmatch(call_id) or call_id.startswith("."):
            raise ValueError(f"call id {call_id!r} is not a safe file name")
        self.directory = Path(directory)
        self.call_id = call_id
        self.rate = rate
        self.directory.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._start = clock()
        # open for the call's lifetime; `finish` closes them (and the OS deletes them)
        self._caller: IO[bytes] = tempfile.TemporaryFile(dir=self.directory)  # noqa: SIM115
        self._agent: IO[bytes] = tempfile.TemporaryFile(dir=self.directory)  # noqa: SIM115
        self._caller_samples = 0
        self._caller_started = False
        self._agent_end = 0
        """Samples in the agent file (where the file position is left)."""
        self._caller_resampler = stream_resampler(CANONICAL_RATE, rate)
        self._agent_resamplers: dict[AudioEncoding, StreamResampler | HalfBandResampler | None] = {
            "pcm16k": stream_resampler(CANONICAL_RATE, rate),
            "ulaw8k": None if rate == 8000 else stream_resampler(8000, rate),
        }
        self._failed = False

    def _at(self, when: float) -> int:
        """The track position (samples) of a monotonic time."""
        return max(0, round((when - self._start) * self.rate))

    def caller(self, frame: AudioFrame) -> None:
        """A caller frame (canonical 16 kHz), as it arrives."""
        if self._failed:
            return
        try:
            now = self._at(self._clock())
            if not self._caller_started or now - self._caller_samples > RESYNC_SECS * self.rate:
                self._caller_started = True
                self._caller.seek(now * SAMPLE_WIDTH)  # the gap reads back as zeros
                self._caller_samples = now
            pcm = self._caller_resampler.process(frame.pcm)
            self._caller.write(pcm)
            self._caller_samples += len(pcm) // SAMPLE_WIDTH
        except Exception as exc:
            self._fail(exc)

    def played(self, frame: bytes, encoding: AudioEncoding, plays_at: float) -> None:
        """An agent frame sent to the far end, which plays it at `plays_at` (monotonic):
        16 kHz PCM, or 8 kHz mu-law (decoded here, so only when recording)."""
        if self._failed:
            return
        try:
            pcm = ulaw_to_pcm(frame) if encoding == "ulaw8k" else frame
            resampler = self._agent_resamplers[encoding]
            if resampler is not None:
                pcm = resampler.process(pcm)
            position = self._at(plays_at)
            if position != self._agent_end:
                self._agent.seek(position * SAMPLE_WIDTH)
            self._agent.write(pcm)
            self._agent_end = position + len(pcm) // SAMPLE_WIDTH
        except Exception as exc:
            self._fail(exc)

    def cleared(self, at: float) -> None:
        """The far end dropped what it had not played by `at`: so does the recording."""
        if self._failed:
            return
        try:
            position = self._at(at)
            if position < self._agent_end:
                self._agent.truncate(position * SAMPLE_WIDTH)
                self._agent.seek(position * SAMPLE_WIDTH)
                self._agent_end = position
        except Exception as exc:
            self._fail(exc)

    def finish(self, transcript: list[dict[str, str]], record: dict[str, Any]) -> Path | None:
        """Write `<call_id>.wav` and `<call_id>.json`, up to now; returns the WAV's path, or
        None if the recording failed. Blocking file I/O: run it in a thread."""
        samples = max(self._at(self._clock()), self._caller_samples)
        try:
            if self._failed:
                return None
            wav_path = self.directory / f"{self.call_id}.wav"
            self._write_wav(wav_path, samples)
            summary = {"call_id": self.call_id, "audio": wav_path.name, "rate": self.rate}
            summary |= {"transcript": transcript, "call": record}
            _write_atomically(
                self.directory / f"{self.call_id}.json", json.dumps(summary, indent=2).encode()
            )
            log.info("call_recorded", path=str(wav_path), secs=round(samples / self.rate, 2))
            return wav_path
        except Exception as exc:
            self._fail(exc)
            return None
        finally:
            self._caller.close()
            self._agent.close()

    def _write_wav(self, path: Path, samples: int) -> None:
        """Interleave the tracks into a stereo WAV of `samples` frames; the agent track's
        audio past the end (sent ahead, never played) is left out."""
        self._caller.flush()
        self._agent.flush()
        self._caller.seek(0)
        self._agent.seek(0)
        partial = path.with_name(f".{path.name}.part")
        with wave.open(str(partial), "wb") as out:
            out.setnchannels(2)
            out.setsampwidth(SAMPLE_WIDTH)
            out.setframerate(self.rate)
            stereo = np.empty(2 * CHUNK_SAMPLES, dtype="<i2")
            for start in range(0, samples, CHUNK_SAMPLES):
                count = min(CHUNK_SAMPLES, samples - start)
                stereo[: 2 * count] = 0
                for channel, track in enumerate((self._caller, self._agent)):
                    data = np.frombuffer(track.read(count * SAMPLE_WIDTH), dtype="<i2")
                    stereo[channel : 2 * len(data) : 2] = data
                out.writeframes(stereo[: 2 * count].tobytes())
        os.replace(partial, path)

    def _fail(self, exc: Exception) -> None:
        if not self._failed:
            self._failed = True
            log.warning("call_recording_failed", error=repr(exc))


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.part")
    partial.write_bytes(data)
    os.replace(partial, path)
