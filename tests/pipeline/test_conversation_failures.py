"""A service failing mid-call: the caller hears the apology (offline voice), the failure is
counted, and the call goes on or ends as the agent file says. Turns are keypad entries, so no
audio model is involved."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from pipeline.agent import AgentConfig, FailuresConfig
from pipeline.cloud_errors import ServiceError
from pipeline.conversation import Conversation, Services, State
from pipeline.llm.base import LLMEvent, Message, TextDelta
from tests.pipeline.fakes import InstantOutput

APOLOGY = "Sorry, something broke, please say that again."
CHUNK = bytes(640)


class TTS:
    """Speaks every text as two chunks; `break_after` chunks in total, then fails."""

    encoding = "pcm16k"

    def __init__(self, break_after: int | None = None) -> None:
        self.texts: list[str] = []
        self._left = break_after

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.texts.append(text)
        for _ in range(2):
            if self._left is not None:
                if self._left == 0:
                    raise ServiceError("cartesia", "stream_broken", "socket closed midway")
                self._left -= 1
            yield CHUNK


class LLM:
    def __init__(self, fail: ServiceError | None = None, hang: bool = False) -> None:
        self._fail = fail
        self._hang = hang

    async def respond(self, context: list[Message]) -> AsyncIterator[LLMEvent]:
        if self._hang:
            await asyncio.sleep(3600)
        if self._fail is not None:
            raise self._fail
        yield TextDelta("Here is the answer. It has two sentences.")


def _conversation(llm: LLM, tts: TTS, fallback: TTS, on_error: str = "continue", timeout=None):
    agent = AgentConfig(failures=FailuresConfig(apology=APOLOGY, on_error=on_error))
    services = Services(
        stt=None, llm=llm, tts=tts, vad=None, denoiser=None, turn_detector=None,
        fallback_tts=fallback, answer_timeout_secs=timeout,
    )  # fmt: skip
    errors: list[tuple[str, str]] = []
    output = InstantOutput()
    conversation = Conversation(
        agent, services, output, on_error=lambda service, kind: errors.append((service, kind))
    )
    return conversation, output, errors


async def _turn(conversation: Conversation, until: float = 2.0) -> None:
    conversation.press("1")
    conversation.press("#")
    await asyncio.sleep(0)
    async with asyncio.timeout(until):
        while conversation.state is not State.LISTENING:
            await asyncio.sleep(0.01)


async def test_llm_auth_error_is_apologised_for_in_the_offline_voice_and_the_call_goes_on():
    tts, fallback = TTS(), TTS()
    llm = LLM(ServiceError("openai_llm", "auth", "no"))
    conversation, output, errors = _conversation(llm, tts, fallback)
    await _turn(conversation)
    assert errors == [("llm", "auth")]
    assert fallback.texts == [APOLOGY] and tts.texts == []
    assert output.played == 2 * len(CHUNK)
    assert conversation.transcript[-1] == {"role": "assistant", "text": APOLOGY}
    assert not output.hung_up


async def test_tts_breaking_mid_answer_apologises_after_what_was_heard():
    tts, fallback = TTS(break_after=3), TTS()
    conversation, output, errors = _conversation(LLM(), tts, fallback)
    await _turn(conversation)
    assert errors == [("tts", "stream_broken")]
    assert tts.texts == ["Here is the answer.", "It has two sentences."]
    assert fallback.texts == [APOLOGY]
    assert output.played == 5 * len(CHUNK)  # 3 of the answer, 2 of the apology
    said = [t["text"] for t in conversation.transcript if t["role"] == "assistant"]
    assert said == ["Here is the answer.", APOLOGY]


async def test_a_silent_llm_gets_the_apology_within_the_answer_timeout():
    loop = asyncio.get_running_loop()
    conversation, output, errors = _conversation(LLM(hang=True), TTS(), TTS(), timeout=0.2)
    started = loop.time()
    await _turn(conversation)
    assert errors == [("llm", "timeout")]
    assert 0.2 <= loop.time() - started < 0.6
    assert output.played == 2 * len(CHUNK)


@pytest.mark.parametrize("kind", ["rate_limited", "server", "connection"])
async def test_hang_up_policy_ends_the_call_after_the_apology(kind: str):
    llm = LLM(ServiceError("openai_llm", kind, "down"))
    fallback = TTS()
    conversation, output, errors = _conversation(llm, TTS(), fallback, on_error="hang_up")
    running = asyncio.create_task(conversation.run())
    conversation.press("2")
    conversation.press("#")
    async with asyncio.timeout(2):
        await running
    assert output.hung_up and conversation.state is State.ENDED
    assert errors == [("llm", kind)] and fallback.texts == [APOLOGY]
