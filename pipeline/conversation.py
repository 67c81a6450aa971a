"""One call's conversation: LISTENING -> THINKING -> SPEAKING -> LISTENING.

The conversation hears 20 ms caller frames, finds turns with the VAD, answers with
STT -> LLM -> TTS, and speaks through an `AgentOutput` that the call provides. It knows
nothing of providers or HTTP.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from pipeline.agent import AgentConfig
from pipeline.frames import CANONICAL_RATE, SAMPLE_WIDTH, AudioFrame
from pipeline.inference import inference_executor
from pipeline.llm.base import LanguageModel, Message, TextDelta, ToolCall
from pipeline.sentences import SentenceChunker
from pipeline.stt.base import SpeechToText
from pipeline.tts.base import TextToSpeech
from pipeline.turn_timing import TurnTimings
from pipeline.vad import SpeechPaused, SpeechStarted, VadSegmenter, VadStream

log = structlog.get_logger()

BYTES_PER_SEC = CANONICAL_RATE * SAMPLE_WIDTH


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

    def clear(self) -> None:
        """Drop all queued audio at once (barge-in)."""

    async def hang_up(self) -> None: ...


@dataclass(slots=True)
class Services:
    stt: SpeechToText
    llm: LanguageModel
    tts: TextToSpeech
    vad: VadStream


@dataclass(slots=True)
class SpokenSentence:
    text: str
    heard: asyncio.Future[bool]


@dataclass(slots=True)
class Response:
    """One agent answer being spoken, and what of it the caller has heard."""

    sentences: list[SpokenSentence] = field(default_factory=list)

    def heard_text(self) -> str:
        return " ".join(
            s.text for s in self.sentences if s.heard.done() and not s.heard.cancelled()
            and s.heard.result()
        )


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
        self._paused_at: float | None = None
        self._draft: asyncio.Task[str] | None = None
        """Speculative transcript of the turn so far, started at the caller's pause."""
        self._media_secs = 0.0
        self._response_task: asyncio.Task[None] | None = None
        self._response: Response | None = None
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
                self._start_response(self._greet())
            await self._ended.wait()
        finally:
            self._discard_draft()
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
            inference_executor(), self._services.vad.push, frame.pcm
        )
        for event in self._segmenter.update(probabilities):
            if isinstance(event, SpeechStarted):
                self._on_speech_started(event.at_seconds)
            elif isinstance(event, SpeechPaused):
                self._on_speech_paused(event.at_seconds)
        self._check_barge_in()
        self._check_end_of_turn()

    def _on_speech_started(self, at_seconds: float) -> None:
        self._in_turn = True
        self._speech_started_at = at_seconds
        self._discard_draft()
        if self.state is State.THINKING:
            log.info("turn_resumed", reason="caller_continued")
            self._response_task_cancel()
            self.state = State.LISTENING

    def _check_barge_in(self) -> None:
        if (
            self.state is State.SPEAKING
            and self._speech_started_at is not None
            and self.agent.interruptions.enabled
            and self._media_secs - self._speech_started_at
            >= self.agent.interruptions.min_speech_secs
        ):
            self.interruptions += 1
            log.info("barge_in", speech_secs=round(self._media_secs - self._speech_started_at, 3))
            self._output.clear()
            self._response_task_cancel()
            self.state = State.LISTENING

    def _on_speech_paused(self, at_seconds: float) -> None:
        self._speech_started_at = None
        if self.state is State.SPEAKING:
            # Speech too short to interrupt (a cough, "uh-huh"): not a turn.
            self._in_turn = False
            return
        if self.state is State.LISTENING:
            self._paused_at = at_seconds
            self._draft = asyncio.create_task(self._services.stt.transcribe(bytes(self._audio)))

    def _check_end_of_turn(self) -> None:
        if self._paused_at is None or self.state is not State.LISTENING:
            return
        silence_secs = self._media_secs - self._paused_at
        if silence_secs < self.agent.turn.silence_secs or self._draft is None:
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

    def _start_response(self, coroutine) -> None:
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

    async def _greet(self) -> None:
        await self._speak_answer(self._greeting_stream(), TurnTimings(), user_text=None)

    async def _greeting_stream(self):
        yield TextDelta(self.agent.greeting)

    async def _answer(self, draft: asyncio.Task[str], timings: TurnTimings) -> None:
        text = (await draft).strip()
        timings.stt_done = time.monotonic()
        if not _has_words(text):
            log.info("turn_ignored", reason="no_words")
            self._end_turn()
            self.state = State.LISTENING
            return
        log.info("caller_said", text=text)
        context = [*self.context, Message("user", text)]
        await self._speak_answer(self._services.llm.respond(context), timings, user_text=text)

    async def _speak_answer(self, events, timings: TurnTimings, user_text: str | None) -> None:
        response = Response()
        self._response = response
        chunker = SentenceChunker()
        tool_calls: list[ToolCall] = []
        committed = False
        try:
            async for event in events:
                if isinstance(event, ToolCall):
                    tool_calls.append(event)
                    continue
                timings.llm_first_token = timings.llm_first_token or time.monotonic()
                for sentence in chunker.push(event.text):
                    committed = await self._say(sentence, response, timings, user_text, committed)
            rest = chunker.flush()
            if rest:
                committed = await self._say(rest, response, timings, user_text, committed)
            await asyncio.gather(*(s.heard for s in response.sentences))
        finally:
            self._record_assistant(response, committed or user_text is None)
        self._on_turn(timings)
        self.state = State.LISTENING
        for call in tool_calls:
            await self._run_tool(call)

    async def _say(
        self,
        sentence: str,
        response: Response,
        timings: TurnTimings,
        user_text: str | None,
        committed: bool,
    ) -> bool:
        """Speak one sentence; on the first audio of an answer, commit the caller's turn."""
        spoke = False
        async for pcm in self._services.tts.synthesize(sentence):
            spoke = True
            if committed:
                self._output.play(pcm)
                continue
            timings.tts_first_audio = time.monotonic()
            if user_text is not None:
                self.context.append(Message("user", user_text))
            self._end_turn()
            self.state = State.SPEAKING
            committed = True
            self._output.play(pcm).add_done_callback(timings.set_first_frame)
        if spoke:
            response.sentences.append(SpokenSentence(sentence, self._output.mark()))
        return committed

    def _record_assistant(self, response: Response, committed: bool) -> None:
        heard = response.heard_text()
        if committed and heard:
            self.context.append(Message("assistant", heard))

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


def _has_words(text: str) -> bool:
    return any(ch.isalnum() for ch in text)
