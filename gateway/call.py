"""One call's lifetime: a reader, the conversation and the writer, cancelled together."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import structlog

from gateway.metrics import Metrics
from gateway.playout import MediaSink, Playout
from gateway.registry import CallRecord
from pipeline.agent import AgentConfig
from pipeline.conversation import Conversation, Services
from pipeline.frames import AudioFrame
from pipeline.turn_timing import TurnTimings
from providers.events import AudioIn, CallStopped, Dtmf, Event, PlaybackMarked

log = structlog.get_logger()


class MediaSession(MediaSink, Protocol):
    """A provider's media connection as the call sees it."""

    def events(self) -> AsyncIterator[Event]: ...
    def frame(self, audio: AudioIn) -> AudioFrame: ...


class Call:
    def __init__(
        self,
        record: CallRecord,
        agent: AgentConfig,
        services: Services,
        session: MediaSession,
        metrics: Metrics,
        hang_up_provider: Callable[[], Awaitable[None]],
        playout_lead_secs: float = 0.1,
    ):
        self.record = record
        self._agent = agent
        self._session = session
        self._metrics = metrics
        self._hang_up_provider = hang_up_provider
        self.playout = Playout(_CountingSink(session, metrics), playout_lead_secs)
        self.conversation = Conversation(agent, services, self, on_turn=self._on_turn)

    async def run(self) -> None:
        """Serve the call until either side hangs up; every task ends with it."""
        record = self.record
        structlog.contextvars.bind_contextvars(call_id=record.id)
        record.status, record.answered_at = "in-progress", time.time()
        self._metrics.calls_total.labels(provider=record.provider).inc()
        self._metrics.calls_active.inc()
        log.info("call_started", provider=record.provider, agent=record.agent)
        try:
            ended_by = await _first_to_finish(
                caller=self._read(),
                agent=self.conversation.run(),
                writer=self.playout.run(),
                timeout=self._max_duration(),
            )
            record.hangup_by = record.hangup_by or ended_by
        except Exception as exc:
            record.status, record.end_reason = "failed", type(exc).__name__
            log.exception("call_failed")
        finally:
            self._metrics.calls_active.dec()
            record.ended_at = time.time()
            if record.status == "in-progress":
                record.status = "completed"
            record.transcript = self.conversation.transcript
            record.interruptions = self.conversation.interruptions
            log.info(
                "call_ended",
                hangup_by=record.hangup_by,
                duration_secs=round(record.ended_at - (record.answered_at or 0), 2),
                turns=record.turns,
                interruptions=record.interruptions,
                transcript=record.transcript,
            )
            structlog.contextvars.unbind_contextvars("call_id")

    async def _read(self) -> None:
        async for event in self._session.events():
            if isinstance(event, AudioIn):
                await self.conversation.hear(self._session.frame(event))
                self._metrics.frames_in.inc()
            elif isinstance(event, PlaybackMarked):
                self.playout.marked(event.name)
            elif isinstance(event, Dtmf):
                log.info("dtmf_received", digit=event.digit)
            elif isinstance(event, CallStopped):
                self.record.end_reason = event.reason

    async def _max_duration(self) -> None:
        await asyncio.sleep(self._agent.max_call_secs)
        self.record.end_reason = "max_duration"
        await self.hang_up()

    def _on_turn(self, timings: TurnTimings) -> None:
        stages = timings.since_end_of_speech_ms()
        if not stages:
            return
        self.record.turns += 1
        self.record.latency_ms.append(stages)
        for stage, ms in stages.items():
            self._metrics.turn_latency.labels(stage=stage).observe(ms / 1000)
        log.info("turn_answered", **stages)

    # AgentOutput, for the conversation

    def play(self, pcm: bytes) -> asyncio.Future[float]:
        return self.playout.play(pcm)

    def mark(self) -> asyncio.Future[bool]:
        return self.playout.mark()

    def clear(self) -> float:
        return self.playout.clear()

    async def hang_up(self) -> None:
        self.record.hangup_by = self.record.hangup_by or "agent"
        log.info("agent_hangs_up")
        await self._hang_up_provider()


class _CountingSink:
    """Counts agent frames for /metrics on their way to the provider."""

    def __init__(self, sink: MediaSink, metrics: Metrics):
        self._sink = sink
        self._frames_out = metrics.frames_out

    async def send_audio(self, pcm16k: bytes) -> None:
        self._frames_out.inc()
        await self._sink.send_audio(pcm16k)

    async def send_mark(self, name: str) -> None:
        await self._sink.send_mark(name)

    async def send_clear(self) -> None:
        await self._sink.send_clear()


async def _first_to_finish(**parts: Awaitable[None]) -> str:
    """Run the call's parts; when the first ends, cancel the rest. Returns its name.

    An exception in any part ends the call and is raised after the rest are cancelled.
    """
    tasks = {asyncio.ensure_future(part): name for name, part in parts.items()}
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    first = done.pop()
    first.result()
    return tasks[first]
