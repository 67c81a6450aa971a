"""One call's conversation: LISTENING -> THINKING -> SPEAKING -> LISTENING.

The conversation hears 20 ms caller frames, finds turns (VAD pause, then the turn detector's
verdict or the silence timeout), answers with STT -> LLM -> TTS, and speaks through an
`AgentOutput` that the call provides. It knows nothing of providers or HTTP.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import aclosing, suppress
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from pipeline.agent import AgentConfig
from pipeline.frames import AudioFrame
from pipeline.inference import vad_executor
from pipeline.interruption import BargeIn, meaningful_words
from pipeline.llm.base import LanguageModel, LLMEvent, Message, TextDelta, ToolCall
from pipeline.response import BYTES_PER_SEC, Response
from pipeline.sentences import SentenceChunker
from pipeline.stt.base import SpeechToText
from pipeline.tts.base import TextToSpeech
from pipeline.turn_timing import TurnTimings
from pipeline.vad import SpeechPaused, SpeechStarted, VadSegmenter, VadStream

log = structlog.get_logger()


class State(enum.Enum):
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    ENDED = "ended"


class AgentOutput(Protocol):
    """What the call offers the conversation: a paced playout queue and call control."""

    def play(self, pcm: bytes) -> asyncio.Future[float]:
        """Queue 16 kHz PCM; the future gets the monotonic time its first frame went out."""

    def mark(self) -> asyncio.Future[bool]:
        """Queue a mark; True once all before it was heard, False if cleared first."""

    def clear(self) -> float:
        """Drop all queued audio at once (barge-in); returns the seconds never heard."""

    async def hang_up(self) -> None: ...


@dataclass(slots=True)
class Services:
    stt: SpeechToText
    llm: LanguageModel
    tts: TextToSpeech
    vad: VadStream


class Conversation:
    def __init__(
        self,
        agent: AgentConfig,
        services: Services,
        output: AgentOutput,
        on_turn: Callable[[TurnTimings], None] = lambda timings: None,
    ):
        self.agent = agent
        self.state = State.LISTENING
        self.context: list[Message] = []
        if agent.system_prompt:
            self.context.append(Message("system", agent.system_prompt))
        self.interruptions = 0
        self._services = services
        self._output = output
        self._on_turn = on_turn
        turn = agent.turn
        self._segmenter = VadSegmenter(
            threshold=turn.vad_threshold,
            neg_threshold=max(0.05, turn.vad_threshold - 0.15),
            min_speech_secs=turn.min_speech_secs,
            pause_secs=turn.pause_secs,
        )
        self._preroll_bytes = int((turn.preroll_secs + turn.min_speech_secs + 0.1) * BYTES_PER_SEC)
        self._max_turn_bytes = int(turn.max_turn_secs * BYTES_PER_SEC)
        self._audio = bytearray()
        self._in_turn = False
        self._speech_started_at: float | None = None
        self._media_secs = 0.0
        self._paused_at: float | None = None
        self._draft: asyncio.Task[str] | None = None
        """Speculative transcript of the turn so far, started at the caller's pause."""
        self._barge_in = BargeIn(agent.interruptions, services.stt)
        self._response_task: asyncio.Task[None] | None = None
        self._response: Response | None = None
        self._resumable: str | None = None
        """What an interrupted answer had left to say, until the interruption proves real."""
        self._recovery: asyncio.Task[None] | None = None
        self._ended = asyncio.Event()

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
            self._discard_draft()
            self._barge_in.reset()
            if self._recovery is not None:
                self._recovery.cancel()
            await self._cancel_response()

    async def hear(self, frame: AudioFrame) -> None:
        """One caller frame (16 kHz PCM). Runs the VAD off the event loop."""
        if self.state is State.ENDED:
            return
        self._media_secs += frame.duration
        self._audio += frame.pcm
        if not self._in_turn and len(self._audio) > self._preroll_bytes:
            del self._audio[: len(self._audio) - self._preroll_bytes]
        elif len(self._audio) > self._max_turn_bytes:
            del self._audio[: len(self._audio) - self._max_turn_bytes]
        loop = asyncio.get_running_loop()
        probabilities = await loop.run_in_executor(
            vad_executor(), self._services.vad.push, frame.pcm
        )
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

    def _on_speech_started(self, at_seconds: float) -> None:
        self._in_turn = True
        self._speech_started_at = at_seconds
        self._discard_draft()
        if self.state is State.THINKING:
            log.info("turn_resumed", reason="caller_continued")
            self._response_task_cancel()
            self.state = State.LISTENING

    def _interrupt(self, speech_secs: float) -> None:
        """Barge-in: silence the agent at once and keep only what the caller heard."""
        self.interruptions += 1
        dropped = self._output.clear()
        response = self._response
        if response is not None:
            heard = response.heard_text(dropped)
            self._resumable = response.unheard_text(heard) or None
            self._record_assistant(heard)
            self._response = None
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
        heard = await self._services.stt.transcribe(self._turn_audio()) if self._in_turn else ""
        if self._resumable and self.state is State.LISTENING and not meaningful_words(heard):
            self._discard_draft()
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
        if self.state is State.LISTENING:
            self._paused_at = at_seconds
            self._draft = asyncio.create_task(self._services.stt.transcribe(bytes(self._audio)))

    def _check_end_of_turn(self) -> None:
        if self._paused_at is None or self.state is not State.LISTENING or self._draft is None:
            return
        silence_secs = self._media_secs - self._paused_at
        if silence_secs < self.agent.turn.silence_secs:
            return
        now = time.monotonic()
        timings = TurnTimings(end_of_speech=now - silence_secs, turn_decided=now)
        draft, self._draft, self._paused_at = self._draft, None, None
        self.state = State.THINKING
        self._start_response(self._answer(draft, timings))

    def _discard_draft(self) -> None:
        self._paused_at = None
        if self._draft is not None:
            self._draft.cancel()
            self._draft = None

    def _start_response(self, coroutine: Coroutine[Any, Any, None]) -> None:
        self._response_task = asyncio.create_task(coroutine)

    def _response_task_cancel(self) -> None:
        if self._response_task and not self._response_task.done():
            self._response_task.cancel()

    async def _cancel_response(self) -> None:
        task, self._response_task = self._response_task, None
        if task and not task.done():
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    async def _answer(self, draft: asyncio.Task[str], timings: TurnTimings) -> None:
        text = (await draft).strip()
        timings.stt_done = time.monotonic()
        if not any(ch.isalnum() for ch in text):
            self._end_turn()
            self.state = State.LISTENING
            if self._resumable:
                self._resume()
            else:
                log.info("turn_ignored", reason="no_words")
            return
        self._resumable = None
        log.info("caller_said", text=text)
        context = [*self.context, Message("user", text)]
        await self._speak(self._services.llm.respond(context), timings, user_text=text)

    async def _say_text(self, text: str) -> None:
        """Speak fixed text (the greeting, a resumed answer): no LLM, no latency record."""
        await self._speak(_as_llm_stream(text), TurnTimings(), user_text=None)

    async def _speak(
        self, events: AsyncIterator[LLMEvent], timings: TurnTimings, user_text: str | None
    ) -> None:
        response = Response()
        self._response = response
        chunker = SentenceChunker()
        tool_calls: list[ToolCall] = []
        async with aclosing(events):
            async for event in events:
                if isinstance(event, ToolCall):
                    tool_calls.append(event)
                    continue
                timings.llm_first_token = timings.llm_first_token or time.monotonic()
                for sentence in chunker.push(event.text):
                    await self._say(sentence, response, timings, user_text)
        rest = chunker.flush()
        if rest:
            await self._say(rest, response, timings, user_text)
        await asyncio.gather(*(s.heard for s in response.sentences if s.heard))
        self._response = None
        self._record_assistant(response.heard_text())
        self._on_turn(timings)
        self.state = State.LISTENING
        for call in tool_calls:
            await self._run_tool(call)

    async def _say(
        self, text: str, response: Response, timings: TurnTimings, user_text: str | None
    ) -> None:
        """Speak one sentence; the first audio of an answer commits the caller's turn."""
        sentence = None
        async with aclosing(self._services.tts.synthesize(text)) as audio:
            async for pcm in audio:
                if sentence is None:
                    sentence = response.start(text)
                if self.state is not State.SPEAKING:
                    timings.tts_first_audio = time.monotonic()
                    if user_text is not None:
                        self.context.append(Message("user", user_text))
                    self._end_turn()
                    self.state = State.SPEAKING
                    self._output.play(pcm).add_done_callback(timings.set_first_frame)
                else:
                    self._output.play(pcm)
                sentence.audio_secs += len(pcm) / BYTES_PER_SEC
        if sentence is not None:
            sentence.heard = self._output.mark()

    def _record_assistant(self, heard: str) -> None:
        if heard:
            self.context.append(Message("assistant", heard))

    def _turn_audio(self) -> bytes:
        return bytes(self._audio)

    def _end_turn(self) -> None:
        self._in_turn = False
        self._audio.clear()

    async def _run_tool(self, call: ToolCall) -> None:
        log.info("tool_called", tool=call.name)
        if call.name == "end_call" and "end_call" in self.agent.tools:
            self.state = State.ENDED
            await self._output.hang_up()
            self._ended.set()
        else:
            log.warning("tool_unknown", tool=call.name)


async def _as_llm_stream(text: str) -> AsyncIterator[LLMEvent]:
    yield TextDelta(text)
