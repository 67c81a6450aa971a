"""Per-turn latency breakdown, from the end of the caller's speech to the first frame out."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

STAGES = ("turn_decided", "stt_done", "llm_first_token", "tts_first_audio", "first_frame_sent")


@dataclass(slots=True)
class TurnTimings:
    """Monotonic timestamps (seconds); None where the stage did not happen (e.g. the greeting)."""

    end_of_speech: float | None = None
    turn_decided: float | None = None
    stt_done: float | None = None
    llm_first_token: float | None = None
    tts_first_audio: float | None = None
    first_frame_sent: float | None = None
    decided_by: str | None = None
    """What ended the turn: "smart_turn", "silence" or "keypad"."""
    smart_turn_secs: float | None = None
    """From the pause to Smart Turn's answer (its queue on the turn pool included)."""

    def set_first_frame(self, sent: asyncio.Future[float]) -> None:
        if not sent.cancelled() and sent.exception() is None:
            self.first_frame_sent = sent.result()

    def since_end_of_speech_ms(self) -> dict[str, float]:
        """Each stage's time in ms after the end of speech (only stages that happened)."""
        if self.end_of_speech is None:
            return {}
        return {
            stage: round((value - self.end_of_speech) * 1000, 1)
            for stage in STAGES
            if (value := getattr(self, stage)) is not None
        }


def percentiles_by_stage(turns: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """p50 and p95 (nearest rank) of each stage over a call's turns."""
    summary: dict[str, dict[str, float]] = {}
    for stage in STAGES:
        values = sorted(turn[stage] for turn in turns if stage in turn)
        if values:
            summary[stage] = {
                "p50": values[(len(values) - 1) // 2],
                "p95": values[min(len(values) - 1, round(0.95 * (len(values) - 1)))],
            }
    return summary
