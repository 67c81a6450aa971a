"""Turn-taking on real speech through the phone path: the real conversation, the real models.

The conversation hears each case at real time (several at once, like concurrent calls) and a
recording output notes when the agent starts to speak.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import numpy as np
import pytest

from pipeline.agent import AgentConfig
from pipeline.conversation import Conversation
from pipeline.frames import AudioFrame
from pipeline.services import build_services, warm_up
from pipeline.turn_timing import TurnTimings
from tests.pipeline.turn_taking_set import RATE, Case, build_cases

pytestmark = pytest.mark.slow

FRAME = RATE // 50
CONCURRENT = 4
AGENT = AgentConfig.model_validate(
    {"llm": {"provider": "scripted", "fallback": "Okay."}, "tools": []}
)


class RecordingOutput:
    """Notes the media time of the agent's first audio; the far end plays instantly."""

    def __init__(self, clock):
        self.first_audio: float | None = None
        self._clock = clock

    def play(self, pcm: bytes, encoding: str = "pcm16k") -> asyncio.Future[float]:
        if self.first_audio is None:
            self.first_audio = self._clock()
        sent = asyncio.get_running_loop().create_future()
        sent.set_result(time.monotonic())
        return sent

    def mark(self) -> asyncio.Future[bool]:
        heard = asyncio.get_running_loop().create_future()
        heard.set_result(True)
        return heard

    def clear(self) -> float:
        return 0.0

    async def hang_up(self) -> None:
        pass


GRACE_SECS = 4.0
"""After the case's audio, silence goes on until the agent answers (a loaded machine is slow)."""


async def _run_case(case: Case) -> tuple[float | None, float | None, str | None]:
    """(media time the agent first spoke, seconds from end of speech to the turn decision,
    what decided it)."""
    started = time.monotonic()
    output = RecordingOutput(lambda: time.monotonic() - started)
    decided: list[TurnTimings] = []
    conversation = Conversation(AGENT, build_services(AGENT), output, on_turn=decided.append)
    runner = asyncio.create_task(conversation.run())
    silence = bytes(2 * FRAME)
    frames = len(case.audio) // FRAME
    for index in range(frames + int(GRACE_SECS * RATE / FRAME)):
        if index >= frames and output.first_audio is not None:
            break
        chunk = case.audio[index * FRAME : (index + 1) * FRAME]
        pcm = chunk.tobytes() if index < frames else silence
        await conversation.hear(AudioFrame(pcm))
        delay = started + (index + 1) * FRAME / RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    if not decided or decided[0].turn_decided is None:
        return output.first_audio, None, None
    decision = decided[0].turn_decided - started - case.end_of_speech
    return output.first_audio, decision, decided[0].decided_by


async def _run_all(cases: list[Case]) -> list[tuple[float | None, float | None]]:
    limit = asyncio.Semaphore(CONCURRENT)

    async def one(case: Case):
        async with limit:
            return await _run_case(case)

    return await asyncio.gather(*(one(case) for case in cases))


def test_turn_taking_on_real_speech(report_figure):
    complete, cut = build_cases(16)

    async def run():
        await warm_up({"agent": AGENT})
        return await _run_all(complete + cut)

    results = asyncio.run(run())
    on_complete, on_cut = results[: len(complete)], results[len(complete) :]

    held = [
        first is None or first >= case.pause[1]
        for case, (first, _, _) in zip(cut, on_cut, strict=True)
    ]
    answered = [first is not None for first, _, _ in on_complete]
    decisions_ms = [1000 * d for _, d, _ in on_complete if d is not None]
    decided_by = [str(by) for _, _, by in on_complete]
    matrix = {
        "complete: answered": sum(answered),
        "complete: not answered": len(answered) - sum(answered),
        "cut: silent in the pause": sum(held),
        "cut: spoke in the pause": len(held) - sum(held),
    }
    hold_rate = sum(held) / len(held)
    median_ms = statistics.median(decisions_ms)
    report_figure("turn_taking_cases", {"complete": len(complete), "cut": len(cut)})
    matrix = {key: int(value) for key, value in matrix.items()}
    report_figure("turn_taking_confusion", matrix)
    report_figure("turn_taking_cut_held_rate", round(hold_rate, 3))
    report_figure("turn_taking_decision_ms_median", round(median_ms, 1))
    report_figure("turn_taking_decision_ms_p90", round(float(np.percentile(decisions_ms, 90)), 1))
    report_figure(
        "turn_taking_complete_decided_by",
        {by: decided_by.count(by) for by in sorted(set(decided_by))},
    )
    assert all(answered), matrix
    assert hold_rate >= 0.85, matrix
    # The speed target (median <= 350 ms) is a reported figure, not a timed assertion: this
    # guard only catches a regression, without failing on a busy machine's scheduling.
    assert median_ms <= 500, decisions_ms
