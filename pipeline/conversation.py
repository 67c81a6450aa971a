"""One call's conversation: LISTENING -> THINKING -> SPEAKING -> LISTENING.

The conversation hears 20 ms caller frames (denoised, then the VAD), ends turns (Smart Turn at
a pause, weighed with the speculative transcript; a silence timeout regardless), answers with
STT -> LLM -> TTS, runs the LLM's tools, and speaks (`pipeline.speaker`) through an
`AgentOutput` that the call provides. It knows nothing of providers or HTTP.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import structlog

from pipeline.agent import AgentConfig
from pipeline.cloud_errors import ServiceError
from pipeline.denoise import Denoiser
from pipeline.dtmf import DtmfCollector
from pipeline.frames import BYTES_PER_SEC, AudioFrame
from pipeline.interruption import BargeIn, meaningful_words
from pipeline.listener import Listener
from pipeline.llm.base import LanguageModel, LLMEvent, Message, TextDelta, ToolCall
from pipeline.response import Response
from pipeline.speaker import AgentOutput, Speaker
from pipeline.stt.base import SpeechToText
from pipeline.tools import ToolRunner
from pipeline.tts.base import TextToSpeech
from pipeline.turn_detector import TurnDetector, sounds_unfinished
from pipeline.turn_timing import TurnTimings
from pipeline.vad import SpeechPaused, SpeechStarted, VadSegmenter, VadStream

log = structlog.get_logger()

MAX_TOOL_ROUNDS = 3
_PCM_BYTES_PER_SEC = BYTES_PER_SEC["pcm16k"]


class State(enum.Enum):
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    ENDED = "ended"


@dataclass(slots=True)
class Services:
    stt: SpeechToText
    llm: LanguageModel
    tts: TextToSpeech
    vad: VadStream
    denoiser: Denoiser
    turn_detector: TurnDetector | None
    fallback_tts: TextToSpeech | None = None
    """Speaks the apology when a service fails (offline, so it works when `tts` failed)."""
    answer_timeout_secs: float | None = None
    """End of turn to first audio, at most; past it the caller hears the apology."""


@dataclass(slots=True)
class _Pause:
    """The caller paused: what we are finding out about the turn so far."""

    at: float
    draft: asyncio.Task[str]
    verdict: asyncio.Task[tuple[bool, float]] | None
    started: float = 0.0
    """Monotonic time of the pause."""
    unsure: bool = False
    """Smart Turn held the turn, but not by much: the STT's own endpoint may end it."""
    verdict_secs: float | None = None
    """How long Smart Turn took to answer (from the pause, its queue included)."""


class Conversation:
    def __init__(
        self,
        agent: AgentConfig,
        services: Services,
        output: AgentOutput,
        tools: ToolRunner | None = None,
        on_turn: Callable[[TurnTimings], None] = lambda timings: None,
        on_error: Callable[[str, str], None] = lambda service, kind: None,
    ):
        self.agent = agent
        self.state = State.LISTENING
        self.context: list[Message] = []
        if agent.system_prompt:
            self.context.append(Message("system", agent.system_prompt))
        self.interruptions = 0
        self._services = services
        self._output = output
        self._tools = tools
        self._on_turn = on_turn
        self._on_error = on_error
        self._watchdog: asyncio.TimerHandle | None = None
        turn = agent.turn
        self._segmenter = VadSegmenter(
            threshold=turn.vad_threshold,
            neg_threshold=max(0.05, turn.vad_threshold - 0.15),
            min_speech_secs=turn.min_speech_secs,
            pause_secs=turn.pause_secs,
        )
        preroll_secs = turn.preroll_secs + turn.min_speech_secs + 0.1
        self._preroll_bytes = int(preroll_secs * _PCM_BYTES_PER_SEC)
        self._max_turn_bytes = int(turn.max_turn_secs * _PCM_BYTES_PER_SEC)
        self._audio = bytearray()
        self._in_turn = False
        self._speech_started_at: float | None = None
        self._media_secs = 0.0
        self._pause: _Pause | None = None
        self._barge_in = BargeIn(agent.interruptions, services.stt)
        self._keys = DtmfCollector(
            agent.dtmf.inter_digit_timeout_secs, agent.dtmf.terminator, agent.dtmf.max_digits
        )
        self._response_task: asyncio.Task[None] | None = None
        self._speaker = Speaker(output, self._on_first_audio)
        self._resumable: str | None = None
        """What an interrupted answer had left to say, until the interruption proves real."""
        self._recovery: asyncio.Task[None] | None = None
        self._ended = asyncio.Event()
        self._listener = Listener(services.vad, services.denoiser, self._heard)

    @property
    def transcript(self) -> list[dict[str, str]]:
        return [
            {"role": m.role, "text": m.text}
            for m in self.context
            if m.role in ("user", "assistant") and m.text
        ]

    async def run(self) -> None:
        """Greet, then answer turns until the agent hangs up or the call is cancelled."""
        try:
            if self.agent.greeting:
                self._start_response(self._say_text(self.agent.greeting))
            await self._ended.wait()
        finally:
            self._listener.close()
            self._discard_pause()
            self._barge_in.reset()
            if self._recovery is not None:
                self._recovery.cancel()
            await self._cancel_response()
            if self._speaker.response is not None:  # hung up mid-answer: keep what was heard
                self._record_assistant(self._speaker.response.heard_text())

    async def hear(self, frame: AudioFrame) -> None:
        """One caller frame (16 kHz PCM): denoise and VAD run off the event loop, and
        `_heard` takes their results in order (see `pipeline.listener`)."""
        if self.state is not State.ENDED:
            await self._listener.hear(frame)

    def _heard(self, secs: float, pcm: bytes, probabilities: list[float]) -> None:
        if self.state is State.ENDED:
            return
        self._media_secs += secs
        self._audio += pcm
        if not self._in_turn and len(self._audio) > self._preroll_bytes:
            del self._audio[: len(self._audio) - self._preroll_bytes]
        elif len(self._audio) > self._max_turn_bytes:
            del self._audio[: len(self._audio) - self._max_turn_bytes]
        for event in self._segmenter.update(probabilities):
            if isinstance(event, SpeechStarted):
                self._on_speech_started(event.at_seconds)
            elif isinstance(event, SpeechPaused):
                self._on_speech_paused(event.at_seconds)
        if self.state is State.SPEAKING and self._speech_started_at is not None:
            speech_secs = self._segmenter.last_voiced_at - self._speech_started_at
            if self._barge_in.should_interrupt(speech_secs, self._turn_audio):
                self._interrupt(speech_secs)
        self._check_end_of_turn()
        if (entry := self._keys.poll(self._media_secs)) is not None:
            self._on_keypad(entry)

    def press(self, digit: str) -> None:
        """A DTMF key from the caller; a finished entry is a caller turn of its own."""
        if (entry := self._keys.push(digit, self._media_secs)) is not None:
            self._on_keypad(entry)

    def _on_keypad(self, digits: str) -> None:
        log.info("keypad_entry", digits=len(digits))
        if self.state is State.SPEAKING:
            self._interrupt(0.0)
        self._discard_pause()
        self._response_task_cancel()
        self._end_turn()
        self.state = State.THINKING
        timings = TurnTimings(decided_by="keypad")
        self._start_response(self._respond_to(f"(keypad) {digits}", timings))
        self._arm_watchdog()

    def _on_speech_started(self, at_seconds: float) -> None:
        self._in_turn = True
        self._speech_started_at = at_seconds
        self._discard_pause()
        if self.state is State.THINKING:
            log.info("turn_resumed", reason="caller_continued")
            self._response_task_cancel()
            self.state = State.LISTENING

    def _interrupt(self, speech_secs: float) -> None:
        """Barge-in: silence the agent at once and keep only what the caller heard."""
        self.interruptions += 1
        dropped = self._output.clear()
        response = self._speaker.response
        if response is not None:
            heard = response.heard_text(dropped)
            self._resumable = response.unheard_text(heard) or None
            self._record_assistant(heard)
            self._speaker.response = None
        log.info("barge_in", speech_secs=round(speech_secs, 3), dropped_secs=round(dropped, 2))
        self._response_task_cancel()
        self._barge_in.reset()
        self.state = State.LISTENING
        if self._recovery is not None:
            self._recovery.cancel()
        if self._resumable:
            self._recovery = asyncio.create_task(self._resume_if_no_words())

    async def _resume_if_no_words(self) -> None:
        """A false interruption (a cough, a door, "uh-huh") must not cost the caller the answer.

        If what the caller said since the interruption holds no words (backchannels aside)
        by `false_interruption_secs`, the agent goes on where it was cut.
        """
        await asyncio.sleep(self.agent.interruptions.false_interruption_secs)
        if not self._resumable or self.state is not State.LISTENING:
            return
        try:
            heard = await self._services.stt.transcribe(self._turn_audio()) if self._in_turn else ""
        except Exception as exc:  # unknown words: the interruption counts as real
            kind = exc.kind if isinstance(exc, ServiceError) else "error"
            log.warning("service_failed", service="stt", kind=kind, error=str(exc)[:300])
            self._on_error("stt", kind)
            return
        if self._resumable and self.state is State.LISTENING and not meaningful_words(heard):
            self._discard_pause()
            self._end_turn()
            self._resume()

    def _resume(self) -> None:
        log.info("interruption_false", action="resume")
        resumed, self._resumable = self._resumable, None
        if resumed:
            self._start_response(self._say_text(resumed))

    def _on_speech_paused(self, at_seconds: float) -> None:
        self._speech_started_at = None
        self._barge_in.reset()
        if self.state is State.SPEAKING:
            # Speech too short or too few words to interrupt (a cough, "uh-huh"): not a turn.
            self._in_turn = False
            return
        if self.state is not State.LISTENING:
            return
        audio = bytes(self._audio)
        detector = self._services.turn_detector
        draft = asyncio.create_task(self._services.stt.transcribe(audio))
        draft.add_done_callback(_quiet)  # a failed draft matters only if its turn ends
        verdict = asyncio.create_task(detector.audio_says_complete(audio)) if detector else None
        self._pause = _Pause(at_seconds, draft, verdict, time.monotonic())
        if verdict is not None:
            verdict.add_done_callback(self._on_verdict)

    def _on_verdict(self, verdict: asyncio.Task[tuple[bool, float]]) -> None:
        """Acts on Smart Turn's answer at once, not at the next caller frame."""
        pause = self._pause
        if pause is not None and pause.verdict is verdict:
            pause.verdict_secs = time.monotonic() - pause.started
            self._check_end_of_turn()

    def _check_end_of_turn(self) -> None:
        pause = self._pause
        if pause is None or self.state is not State.LISTENING:
            return
        silence_secs = self._media_secs - pause.at
        verdict = pause.verdict
        if verdict is not None and verdict.done() and not verdict.cancelled():
            complete, probability = verdict.result()
            if not complete:
                pause.verdict = None  # held: the silence timeout (or the STT endpoint) ends it
                pause.unsure = probability >= self.agent.turn.smart_turn_threshold / 2
                log.info("turn_held", by="smart_turn", probability=round(probability, 3))
            else:
                self._end_of_turn(pause, silence_secs, "smart_turn")
                return
        if pause.unsure and self._stt_endpoint_since(pause.started):
            self._end_of_turn(pause, silence_secs, "stt_endpoint")
        elif silence_secs >= self.agent.turn.silence_secs:
            self._end_of_turn(pause, silence_secs, "silence")

    def _stt_endpoint_since(self, started: float) -> bool:
        """A streaming STT (Deepgram) saw the caller's utterance end after `started`."""
        endpoint = getattr(self._services.stt, "last_speech_final_at", None)
        return endpoint is not None and endpoint >= started

    def _end_of_turn(self, pause: _Pause, silence_secs: float, decided_by: str) -> None:
        now = time.monotonic()
        timings = TurnTimings(now - silence_secs, turn_decided=now, decided_by=decided_by)
        timings.smart_turn_secs = pause.verdict_secs
        if pause.verdict is not None:  # decided without it: a queued question is never asked
            pause.verdict.cancel()
        self._pause = None
        self.state = State.THINKING
        self._start_response(self._answer(pause, timings))
        self._arm_watchdog()

    def _arm_watchdog(self) -> None:
        """Never dead air: no first audio within `answer_timeout_secs` means the apology."""
        timeout = self._services.answer_timeout_secs
        if timeout is None:
            return
        self._disarm_watchdog()
        task = self._response_task
        self._watchdog = asyncio.get_running_loop().call_later(
            timeout, self._answer_late, task
        )

    def _disarm_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _answer_late(self, task: asyncio.Task[None] | None) -> None:
        self._watchdog = None
        if self.state is State.THINKING and task is self._response_task and task is not None:
            task.cancel()
            self._failed(ServiceError(self._speaker.stage, "timeout", "no answer in time"))

    def _discard_pause(self) -> None:
        pause, self._pause = self._pause, None
        if pause is not None:
            pause.draft.cancel()
            if pause.verdict is not None:
                pause.verdict.cancel()

    def _start_response(self, coroutine: Coroutine[Any, Any, None]) -> None:
        self._response_task = asyncio.create_task(self._guarded(coroutine))

    async def _guarded(self, coroutine: Coroutine[Any, Any, None]) -> None:
        try:
            await coroutine
        except Exception as exc:  # a failed service must not leave the caller in silence
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        """A service failed mid-answer: log and count it, apologise, go on or hang up."""
        self._disarm_watchdog()
        service = self._speaker.stage
        kind = exc.kind if isinstance(exc, ServiceError) else "error"
        log.warning(
            "service_failed",
            service=service,
            vendor=getattr(exc, "service", None),
            kind=kind,
            status=getattr(exc, "status", None),
            error=str(exc)[:300],
        )
        self._on_error(service, kind)
        response, self._speaker.response = self._speaker.response, None
        if response is not None:
            self._record_assistant(response.heard_text())
        if response is None or not response.committed:
            self._end_turn()  # the failed turn's audio must not prefix the next one
        self.state = State.THINKING
        self._response_task = asyncio.create_task(self._apologise())

    async def _apologise(self) -> None:
        failures = self.agent.failures
        tts = self._services.fallback_tts or self._services.tts
        try:
            await self._speak(_as_llm_stream(failures.apology), TurnTimings(), None, tts=tts)
        except Exception as exc:
            log.error("apology_failed", error=str(exc)[:300])
        if failures.on_error == "hang_up":
            self.state = State.ENDED
            await self._output.hang_up()
            self._ended.set()
        else:
            self.state = State.LISTENING

    def _response_task_cancel(self) -> None:
        if self._response_task and not self._response_task.done():
            self._response_task.cancel()

    async def _cancel_response(self) -> None:
        task, self._response_task = self._response_task, None
        if task and not task.done():
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    async def _answer(self, pause: _Pause, timings: TurnTimings) -> None:
        self._speaker.stage = "stt"
        text = (await pause.draft).strip()
        timings.stt_done = time.monotonic()
        if timings.decided_by == "smart_turn" and sounds_unfinished(text):
            # The audio said "done", the words say "and then...": keep listening.
            log.info("turn_held", by="words", text=text)
            pause.verdict = None
            self._pause = pause
            self.state = State.LISTENING
            return
        if not any(ch.isalnum() for ch in text):
            self._end_turn()
            self.state = State.LISTENING
            if self._resumable:
                self._resume()
            else:
                log.info("turn_ignored", reason="no_words")
            return
        await self._respond_to(text, timings)

    async def _respond_to(self, text: str, timings: TurnTimings) -> None:
        self._resumable = None
        log.info("caller_said", text=text)
        context = [*self.context, Message("user", text)]
        await self._speak(self._services.llm.respond(context), timings, user_text=text)

    async def _say_text(self, text: str) -> None:
        """Speak fixed text (the greeting, a resumed answer): no LLM, no latency record."""
        await self._speak(_as_llm_stream(text), TurnTimings(), user_text=None)

    async def _speak(
        self,
        events: AsyncIterator[LLMEvent],
        timings: TurnTimings,
        user_text: str | None,
        tool_round: int = 0,
        tts: TextToSpeech | None = None,
    ) -> None:
        response = Response()
        tts = tts or self._services.tts
        tool_calls = await self._speaker.speak(events, response, timings, user_text, tts)
        if user_text is not None and not response.committed:
            self.context.append(Message("user", user_text))  # answered with tools, no words
            self._end_turn()
        await asyncio.gather(*(s.heard for s in response.sentences if s.heard))
        self._speaker.response = None
        self._record_assistant(response.heard_text(), tool_calls)
        self._on_turn(timings)
        self.state = State.LISTENING
        if tool_calls:
            await self._run_tools(tool_calls, tool_round)

    async def _run_tools(self, calls: list[ToolCall], tool_round: int) -> None:
        self._disarm_watchdog()  # a tool (an HTTP call, a transfer) may take its time
        if self._tools is None:
            log.warning("tools_unavailable", tools=[call.name for call in calls])
            return
        for call in calls:
            result = await self._tools.run(call)
            self.context.append(result.message(call))
            if result.ends_call:
                self.state = State.ENDED
                self._ended.set()
                return
        if tool_round + 1 < MAX_TOOL_ROUNDS:
            self.state = State.THINKING
            events = self._services.llm.respond(self.context)
            await self._speak(events, TurnTimings(), None, tool_round + 1)

    def _on_first_audio(
        self, response: Response, timings: TurnTimings, user_text: str | None
    ) -> None:
        """The answer is heard from now on: the caller's words join the context for good."""
        self._disarm_watchdog()
        if user_text is not None:
            self.context.append(Message("user", user_text))
            self._end_turn()
        self.state = State.SPEAKING

    def _record_assistant(self, heard: str, tool_calls: list[ToolCall] | None = None) -> None:
        if heard or tool_calls:
            self.context.append(Message("assistant", heard, tool_calls=tool_calls or []))

    def _turn_audio(self) -> bytes:
        return bytes(self._audio)

    def _end_turn(self) -> None:
        self._in_turn = False
        self._audio.clear()


async def _as_llm_stream(text: str) -> AsyncIterator[LLMEvent]:
    yield TextDelta(text)


def _quiet(task: asyncio.Task[Any]) -> None:
    """Marks a speculative task's failure as seen; whoever awaits it still gets it."""
    if not task.cancelled():
        task.exception()
