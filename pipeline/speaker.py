"""Speaking one answer: the LLM's text to the caller's ear, each sentence closed by a mark.

Two shapes of TTS: a sentence service (`TextToSpeech.synthesize`, started on each sentence as
soon as the LLM completes it) and a streaming vendor (`StreamingTextToSpeech`: the whole answer
on one socket, text in as the LLM writes it, audio out as it comes). Either way the answer's
first audio commits the caller's turn (`on_first_audio`), and `stage` names the service the
answer is waiting on, for the conversation's failure handling and its answer watchdog.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, suppress
from typing import Protocol

from pipeline.answer_feed import AnswerFeed
from pipeline.frames import BYTES_PER_SEC, AudioEncoding
from pipeline.llm.base import LLMEvent, ToolCall
from pipeline.response import Response, SpokenSentence
from pipeline.sentences import SentenceChunker
from pipeline.tts.base import AnswerStream, StreamingTextToSpeech, TextToSpeech
from pipeline.turn_timing import TurnTimings

OnFirstAudio = Callable[[Response, TurnTimings, "str | None"], None]
"""(the answer, its timings, the caller's words it answers or None): called once per answer."""


class AgentOutput(Protocol):
    """What the call offers the conversation: a paced playout queue and call control."""

    def play(self, audio: bytes, encoding: AudioEncoding = "pcm16k") -> asyncio.Future[float]:
        """Queue audio; the future gets the monotonic time its first frame went out."""

    def mark(self) -> asyncio.Future[bool]:
        """Queue a mark; True once all before it was heard, False if cleared first."""

    def clear(self) -> float:
        """Drop all queued audio at once (barge-in); returns the seconds never heard."""

    async def hang_up(self) -> None: ...


class Speaker:
    """One call's voice: speaks one answer at a time through the call's output."""

    def __init__(self, output: AgentOutput, on_first_audio: OnFirstAudio) -> None:
        self.stage = "llm"
        self.response: Response | None = None
        """The answer being spoken; the conversation sets it to None when it is cut off, and
        audio that a streaming vendor still sends for it is then dropped."""
        self._output = output
        self._on_first_audio = on_first_audio

    async def speak(
        self,
        events: AsyncIterator[LLMEvent],
        response: Response,
        timings: TurnTimings,
        user_text: str | None,
        tts: TextToSpeech,
    ) -> list[ToolCall]:
        """Speaks the LLM's answer as `response`; returns the tools the LLM called."""
        self.response = response
        self.stage = "llm"
        async with aclosing(events):
            if isinstance(tts, StreamingTextToSpeech):
                return await self._speak_streamed(tts, events, response, timings, user_text)
            return await self._speak_sentences(tts, events, response, timings, user_text)

    async def _speak_sentences(
        self,
        tts: TextToSpeech,
        events: AsyncIterator[LLMEvent],
        response: Response,
        timings: TurnTimings,
        user_text: str | None,
    ) -> list[ToolCall]:
        """Each sentence spoken on its own as soon as the LLM completes it."""
        chunker = SentenceChunker()
        tool_calls: list[ToolCall] = []
        async for event in events:
            if isinstance(event, ToolCall):
                tool_calls.append(event)
                continue
            timings.llm_first_token = timings.llm_first_token or time.monotonic()
            for sentence in chunker.push(event.text):
                await self._say(sentence, response, timings, user_text, tts)
        rest = chunker.flush()
        if rest:
            await self._say(rest, response, timings, user_text, tts)
        return tool_calls

    async def _speak_streamed(
        self,
        tts: StreamingTextToSpeech,
        events: AsyncIterator[LLMEvent],
        response: Response,
        timings: TurnTimings,
        user_text: str | None,
    ) -> list[ToolCall]:
        """The whole answer on one vendor stream: text in as the LLM writes it, audio out as
        it comes, from a reader task that ends with this one."""
        self.stage = "tts"
        answer = await tts.open_answer()
        feed = AnswerFeed(answer, response)
        reader = asyncio.create_task(
            self._play_answer(answer, feed, tts.encoding, response, timings, user_text)
        )
        tool_calls: list[ToolCall] = []
        try:
            self.stage = "llm"
            async for event in events:
                if reader.done():
                    reader.result()  # the vendor failed: stop reading the LLM
                if isinstance(event, ToolCall):
                    tool_calls.append(event)
                    continue
                timings.llm_first_token = timings.llm_first_token or time.monotonic()
                await feed.push(event.text)
            self.stage = "tts"
            await feed.finish()
            await reader
        finally:
            reader.cancel()
            with suppress(asyncio.CancelledError):
                await reader
            await answer.cancel()
        self.stage = "llm"
        return tool_calls

    async def _play_answer(
        self,
        answer: AnswerStream,
        feed: AnswerFeed,
        encoding: AudioEncoding,
        response: Response,
        timings: TurnTimings,
        user_text: str | None,
    ) -> None:
        """Plays the answer's audio, each sentence closed by its mark. Audio that arrives
        after the answer was interrupted is dropped."""
        spoken_chars = 0
        index = 0
        async with aclosing(answer.audio()) as audio:
            async for chunk, chars in audio:
                if self.response is not response:
                    return
                at = max(index, feed.sentence_at(spoken_chars))
                if at > index:
                    self._mark(response.sentences[index:at])
                    index = at
                self._play(chunk, encoding, response, timings, user_text)
                response.sentences[index].audio_secs += len(chunk) / BYTES_PER_SEC[encoding]
                spoken_chars += chars or 0
        if self.response is response:
            self._mark(response.sentences[index:])

    def _mark(self, sentences: list[SpokenSentence]) -> None:
        """One mark closes `sentences` (those past whose text the vendor's audio went)."""
        if sentences:
            heard = self._output.mark()
            for sentence in sentences:
                sentence.heard = heard

    async def _say(
        self,
        text: str,
        response: Response,
        timings: TurnTimings,
        user_text: str | None,
        tts: TextToSpeech,
    ) -> None:
        """Speak one sentence."""
        sentence = None
        self.stage = "tts"
        async with aclosing(tts.synthesize(text)) as audio:
            async for chunk in audio:
                if sentence is None:
                    sentence = response.start(text)
                self._play(chunk, tts.encoding, response, timings, user_text)
                sentence.audio_secs += len(chunk) / BYTES_PER_SEC[tts.encoding]
        if sentence is not None:
            sentence.heard = self._output.mark()
        self.stage = "llm"

    def _play(
        self,
        chunk: bytes,
        encoding: AudioEncoding,
        response: Response,
        timings: TurnTimings,
        user_text: str | None,
    ) -> None:
        """Queue a chunk of the answer; its first audio commits the caller's turn."""
        if response.committed:
            self._output.play(chunk, encoding)
            return
        response.committed = True
        timings.tts_first_audio = time.monotonic()
        self._on_first_audio(response, timings, user_text)
        self._output.play(chunk, encoding).add_done_callback(timings.set_first_frame)
