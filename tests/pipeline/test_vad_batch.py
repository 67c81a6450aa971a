"""Denoise and VAD batched across calls: each call hears exactly what it would hear alone."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from pipeline.denoise import make_denoiser
from pipeline.vad import SileroModel, VadStream, shared_model
from pipeline.vad_batch import Job, VadBatcher, batcher, listen
from tests.corpus import select_prompts

FRAME_BYTES = 640  # 20 ms at 16 kHz


@pytest.fixture(scope="module")
def calls_audio() -> list[bytes]:
    """Four callers' real speech at 16 kHz, of different lengths, 1 s of silence after each."""
    audio = []
    for prompt in select_prompts(4, seed=11, min_secs=1.0, max_secs=4.0):
        pcm, rate = prompt.pcm()
        up = np.repeat(np.frombuffer(pcm, dtype=np.int16), 16_000 // rate)  # crude, but real
        audio.append(up.tobytes() + bytes(32_000))
    return audio


def frames(pcm: bytes, size: int = FRAME_BYTES) -> list[bytes]:
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


def alone(vad_model: SileroModel, pcm: bytes, size: int = FRAME_BYTES) -> tuple[bytes, list[float]]:
    """One call's denoised audio and probabilities, unbatched."""
    denoiser, stream = make_denoiser("speex"), VadStream(vad_model)
    clean, probs = b"", []
    for frame in frames(pcm, size):
        out = denoiser.process(frame)
        clean += out
        probs += stream.push(out)
    return clean, probs


async def test_calls_batched_together_hear_what_they_hear_alone(vad_model, calls_audio):
    async def call(pcm: bytes) -> tuple[bytes, list[float]]:
        denoiser, stream = make_denoiser("speex"), VadStream(vad_model)
        clean, probs = b"", []
        for frame in frames(pcm):
            out, p = await listen(stream, denoiser, frame)
            clean += out
            probs += p
        return clean, probs

    together = await asyncio.gather(*(call(pcm) for pcm in calls_audio))
    for pcm, (clean, probs) in zip(calls_audio, together, strict=True):
        reference_clean, reference_probs = alone(vad_model, pcm)
        assert clean == reference_clean
        assert len(probs) == len(reference_probs) == len(pcm) // 2 // 512
        np.testing.assert_allclose(probs, reference_probs, atol=1e-5)
        assert max(probs) > 0.8  # real speech was heard as speech


class CountingModel:
    """The real model, counting runs and the batch size of each."""

    def __init__(self, vad_model: SileroModel) -> None:
        self._model = vad_model
        self.batches: list[int] = []

    def infer(self, chunks: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.batches.append(len(chunks))
        return self._model.infer(chunks, states)


def test_one_run_scores_every_call_and_a_call_twice_in_a_batch_keeps_its_order(
    vad_model, calls_audio
):
    counting = CountingModel(vad_model)
    runner = VadBatcher(counting)  # process() directly: no thread
    loop = asyncio.new_event_loop()
    # 40 ms frames, so every call completes a chunk at least every other frame. Call 0 has two
    # frames in every batch, as a call whose frames queued up would.
    sent = [frames(pcm, 2 * FRAME_BYTES) for pcm in calls_audio]
    batches = min(len(s) for s in sent) // 2
    per_batch = [2] + [1] * (len(sent) - 1)
    streams = [VadStream(counting) for _ in sent]
    denoisers = [make_denoiser("speex") for _ in sent]
    got: list[list[float]] = [[] for _ in sent]
    try:
        for k in range(batches):
            jobs = [
                (i, _job(streams[i], denoisers[i], frame, loop))
                for i, n in enumerate(per_batch)
                for frame in sent[i][k * n : (k + 1) * n]
            ]
            runner.process([job for _, job in jobs])
            for i, job in jobs:
                assert job.error is None
                got[i] += job.probs
    finally:
        loop.close()
    assert max(counting.batches) == len(sent)  # one run scored a chunk of every call
    for i, n in enumerate(per_batch):
        _, reference = alone(vad_model, b"".join(sent[i][: batches * n]), 2 * FRAME_BYTES)
        np.testing.assert_allclose(got[i], reference, atol=1e-5)


def _job(stream: VadStream, denoiser, pcm: bytes, loop: asyncio.AbstractEventLoop) -> Job:
    return Job(stream, denoiser, pcm, loop.create_future(), loop)


class BrokenDenoiser:
    delay_samples = 0

    def process(self, pcm16k: bytes) -> bytes:
        raise ValueError("odd audio")


async def test_a_failing_call_fails_alone_and_a_gone_call_is_skipped(vad_model):
    good, bad, gone = VadStream(vad_model), VadStream(vad_model), VadStream(vad_model)
    pending = asyncio.ensure_future(listen(gone, make_denoiser("none"), bytes(FRAME_BYTES)))
    pending.cancel()  # the call hung up while its frame was queued
    results = await asyncio.gather(
        listen(good, make_denoiser("none"), bytes(2 * 512)),
        listen(bad, BrokenDenoiser(), bytes(FRAME_BYTES)),
        return_exceptions=True,
    )
    clean, probs = results[0]
    assert clean == bytes(2 * 512) and len(probs) == 1 and probs[0] < 0.1
    assert isinstance(results[1], ValueError)
    assert pending.cancelled()


def test_one_thread_per_model_whatever_the_calls():
    assert batcher(shared_model()) is batcher(shared_model())
    names = [t.name for t in threading.enumerate()]
    assert names.count("vad-SileroModel") <= 1
