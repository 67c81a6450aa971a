"""A call's frames in flight to the VAD thread together, their results taken in order."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from pipeline.denoise import make_denoiser
from pipeline.frames import AudioFrame
from pipeline.listener import MAX_IN_FLIGHT, Listener
from pipeline.vad import VadStream

FRAME = bytes(640)  # 20 ms at 16 kHz, a chunk (32 ms) completed every other frame or so


class SlowModel:
    """A VAD model whose every run takes `secs` (a loaded VAD thread); it numbers the chunks."""

    def __init__(self, secs: float) -> None:
        self.secs = secs
        self.scored = 0

    def infer(self, chunks: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        time.sleep(self.secs)
        first = self.scored
        self.scored += len(chunks)
        return np.arange(first, self.scored, dtype=np.float32), states


async def test_the_reader_never_waits_for_a_slow_vad_and_results_keep_their_order():
    heard: list[tuple[float, int, list[float]]] = []
    listener = Listener(
        VadStream(SlowModel(0.03)), make_denoiser("none"),
        lambda secs, pcm, probs: heard.append((secs, len(pcm), probs)),
    )
    started = time.monotonic()
    for _ in range(20):  # 0.4 s of audio, which a 30 ms round trip per frame would take 0.6 s
        await listener.hear(AudioFrame(FRAME))
    handed_over = time.monotonic() - started
    while len(heard) < 20 and time.monotonic() - started < 5:
        await asyncio.sleep(0.01)
    listener.close()
    assert handed_over < 0.1, handed_over
    assert [(secs, size) for secs, size, _ in heard] == [(0.02, 640)] * 20
    probabilities = [p for _, _, probs in heard for p in probs]
    assert probabilities == [float(n) for n in range(len(probabilities))]  # in order, none lost
    assert len(probabilities) == 20 * 640 // 1024


async def test_a_peer_faster_than_real_time_is_held_to_the_vads_pace():
    listener = Listener(VadStream(SlowModel(0.05)), make_denoiser("none"), lambda *_: None)
    started = time.monotonic()
    for _ in range(MAX_IN_FLIGHT + 20):
        await listener.hear(AudioFrame(FRAME))
    listener.close()
    assert time.monotonic() - started > 0.2  # the queue filled, and hear() waited for room


class BrokenDenoiser:
    delay_samples = 0

    def process(self, pcm16k: bytes) -> bytes:
        raise ValueError("odd audio")


async def test_a_failed_frame_fails_the_next_hear_and_a_closed_listener_ignores_frames():
    listener = Listener(VadStream(SlowModel(0.0)), BrokenDenoiser(), lambda *_: None)
    await listener.hear(AudioFrame(FRAME))
    with pytest.raises(ValueError, match="odd audio"):
        for _ in range(3 * MAX_IN_FLIGHT):
            await listener.hear(AudioFrame(FRAME))
            await asyncio.sleep(0.005)
    closed = Listener(VadStream(SlowModel(0.0)), make_denoiser("none"), lambda *_: None)
    closed.close()
    for _ in range(2 * MAX_IN_FLIGHT):  # would block on a full queue if it still took frames
        await asyncio.wait_for(closed.hear(AudioFrame(FRAME)), 1)
