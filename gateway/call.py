"""One call's lifetime: a reader, the conversation and the writer, cancelled together."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, suppress
from typing import Any, Protocol

import structlog

from gateway.http_client import http_client
from gateway.metrics import Metrics
from gateway.playout import MediaSink, Playout
from gateway.recording import CallRecorder
from gateway.registry import CallRecord
from pipeline.agent import AgentConfig
from pipeline.conversation import Conversation, Services
from pipeline.dtmf import dtmf_tones
from pipeline.frames import AudioEncoding, AudioFrame
from pipeline.services import close_services
from pipeline.tools import ToolRunner
from pipeline.turn_timing import TurnTimings, percentiles_by_stage
from providers.events import AudioIn, CallStopped, Dtmf, Event, PlaybackMarked

log = structlog.get_logger()

RECORD_FIELDS = (
    *("status", "answered_at", "ended_at", "hangup_by", "end_reason"),
    *("turns", "interruptions", "latency_ms", "transcript"),
)
"""The record fields a call writes (others, like the provider's status, are written elsewhere)."""
GOODBYE_WAIT_SECS = 15.0
"""The longest a drain goodbye may take to be heard before the call is hung up anyway."""


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
        transfer_provider: Callable[[str], Awaitable[None]] | None = None,
        save_record: Callable[..., Awaitable[None]] | None = None,
    ):
        self.record = record
        self._agent = agent
        self._session = session
        self._metrics = metrics
        self._hang_up_provider = hang_up_provider
        self._transfer_provider = transfer_provider
        self._save_record = save_record
        self._services = services
        self._tts = services.tts
        self._goodbye = asyncio.Event()
        self._goodbye_text = ""
        self._recorder: CallRecorder | None = None
        self.playout = Playout(_CountingSink(session, metrics), playout_lead_secs)
        tools = ToolRunner(agent.tools, self, http_client(), agent.transfer_targets)
        self.conversation = Conversation(
            agent, services, self, tools, on_turn=self._on_turn, on_error=self._on_error
        )

    async def run(self) -> None:
        """Serve the call until either side hangs up; every task ends with it."""
        record = self.record
        structlog.contextvars.bind_contextvars(call_id=record.id)
        record.status, record.answered_at = "in-progress", time.time()
        self._metrics.calls_total.labels(provider=record.provider).inc()
        self._metrics.calls_active.inc()
        log.info("call_started", provider=record.provider, agent=record.agent)
        self._start_recording()
        try:
            await self._save()
            ended_by = await _first_to_finish(
                caller=self._read(),
                agent=self.conversation.run(),
                writer=self.playout.run(),
                timeout=self._max_duration(),
                drain=self._until_goodbye(),
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
                end_reason=record.end_reason,
                duration_secs=round(record.ended_at - (record.answered_at or 0), 2),
                turns=record.turns,
                interruptions=record.interruptions,
                latency_ms=percentiles_by_stage(record.latency_ms),
                transcript=record.transcript,
            )
            await self._save()
            await self._finish_recording()
            await close_services(self._services)  # Deepgram may take a moment to say goodbye
            structlog.contextvars.unbind_contextvars("call_id")

    async def _save(self) -> None:
        """Store the record for `/v1/calls` (a registry that fails must not end the call)."""
        if self._save_record is None:
            return
        try:
            await self._save_record(self.record, *RECORD_FIELDS)
        except Exception as exc:
            log.warning("call_record_not_saved", error=repr(exc))

    def _start_recording(self) -> None:
        config = self._agent.recording
        if not config.enabled:
            return
        try:
            self._recorder = CallRecorder(config.directory, self.record.id)
        except Exception as exc:  # a recording that cannot start must not stop the call
            log.warning("call_recording_failed", error=repr(exc))
            return
        self.playout.listener = self._recorder

    async def _finish_recording(self) -> None:
        if self._recorder is None:
            return
        summary = self.record.to_json()
        transcript = summary.pop("transcript")
        self.playout.listener = None
        await asyncio.to_thread(self._recorder.finish, transcript, summary)

    def say_goodbye(self, text: str) -> None:
        """End the call after speaking `text` (the gateway is draining); the conversation's
        own audio is no longer played from then on."""
        self._goodbye_text = text
        self._goodbye.set()

    async def _until_goodbye(self) -> None:
        await self._goodbye.wait()
        log.info("call_goodbye")
        self.playout.clear()
        async with aclosing(self._tts.synthesize(self._goodbye_text)) as audio:
            async for chunk in audio:
                self.playout.play(chunk, self._tts.encoding)
        with suppress(TimeoutError):
            await asyncio.wait_for(self.playout.mark(), GOODBYE_WAIT_SECS)
        self.record.end_reason = "drain"
        await self.hang_up()

    async def _read(self) -> None:
        # a streaming STT that takes the wire's mu-law (Deepgram) gets it as is, at once;
        # the frame path (denoise, VAD, turn detection) still needs PCM
        feed_mulaw = getattr(self._services.stt, "feed_mulaw", None)
        recorder = self._recorder
        async for event in self._session.events():
            if isinstance(event, AudioIn):
                if feed_mulaw is not None:
                    feed_mulaw(event.payload)
                frame = self._session.frame(event)
                if recorder is not None:
                    recorder.caller(frame)
                await self.conversation.hear(frame)
                self._metrics.frames_in.inc()
            elif isinstance(event, PlaybackMarked):
                self.playout.marked(event.name)
            elif isinstance(event, Dtmf):
                self.conversation.press(event.digit)
            elif isinstance(event, CallStopped):  # a reason of ours (drain, max_duration) stays
                self.record.end_reason = self.record.end_reason or event.reason

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
        log.info(
            "turn_answered",
            decided_by=timings.decided_by,
            **stages,
            smart_turn_ms=timings.smart_turn_secs and round(timings.smart_turn_secs * 1000, 1),
            stt_done_at=timings.stt_done,  # monotonic clock: comparable with vendor timestamps
            first_frame_at=timings.first_frame_sent,
        )

    def _on_error(self, service: str, kind: str) -> None:
        self._metrics.service_errors.labels(service=service, kind=kind).inc()

    # AgentOutput, for the conversation

    def play(self, audio: bytes, encoding: AudioEncoding = "pcm16k") -> asyncio.Future[float]:
        if self._goodbye.is_set():
            return _settled(0.0)
        return self.playout.play(audio, encoding)

    def mark(self) -> asyncio.Future[bool]:
        if self._goodbye.is_set():
            return _settled(False)
        return self.playout.mark()

    def clear(self) -> float:
        return self.playout.clear()

    async def hang_up(self) -> None:
        self.record.hangup_by = self.record.hangup_by or "agent"
        log.info("agent_hangs_up")
        await self._hang_up_provider()

    # CallControl, for the conversation's tools

    async def end_call(self) -> None:
        await self.hang_up()

    async def transfer(self, to: str) -> None:
        if self._transfer_provider is None:
            raise RuntimeError(f"transfer is not available on {self.record.provider} calls")
        self.record.end_reason = "transferred"
        self.record.hangup_by = "transfer"
        await self._transfer_provider(to)

    async def send_dtmf(self, digits: str) -> None:
        """RFC 4733 events when the session sends them (SIP with telephone-event negotiated),
        else in-band tones: media streams have no outbound DTMF message."""
        send_events = getattr(self._session, "send_dtmf", None)
        if send_events is not None:
            try:
                await send_events(digits)
                return
            except RuntimeError:  # the peer did not offer telephone-event
                log.info("dtmf_in_band", reason="no telephone-event")
        dtmf = self._agent.dtmf
        self.play(
            dtmf_tones(digits, tone_ms=dtmf.tone_ms, gap_ms=dtmf.gap_ms, level_dbfs=dtmf.level_dbfs)
        )
        await self.mark()


class _CountingSink:
    """Counts agent frames for /metrics on their way to the provider."""

    def __init__(self, sink: MediaSink, metrics: Metrics):
        self._sink = sink
        self._frames_out = metrics.frames_out

    async def send_audio(self, audio: bytes, encoding: str = "pcm16k") -> None:
        self._frames_out.inc()
        await self._sink.send_audio(audio, encoding)

    async def send_mark(self, name: str) -> None:
        await self._sink.send_mark(name)

    async def send_clear(self) -> None:
        await self._sink.send_clear()


def _settled(value: Any) -> asyncio.Future[Any]:
    """What `play` and `mark` answer once the goodbye has the line."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


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
