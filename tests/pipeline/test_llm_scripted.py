"""The offline scripted LLM: intent matching, filled replies, and tool calls after the text."""

from __future__ import annotations

import pytest

from pipeline.agent import Intent, ScriptedLLMConfig
from pipeline.llm.base import Message, TextDelta, ToolCall
from pipeline.llm.scripted import ScriptedLLM

INTENTS = [
    Intent(
        name="goodbye", keywords=["bye", "hang up", "that's all"], reply="Goodbye!", tool="end_call"
    ),
    Intent(name="hours", keywords=["hours", "open"], reply="Nine to six."),
    Intent(name="thanks", regex=r"\b(thank you|thanks)\b", reply="You're welcome."),
    Intent(name="email", keywords=["e-mail"], reply="Write to us."),
    Intent(name="noise", keywords=["?", "  "], reply="never"),
]  # fmt: skip


def llm(intents: list[Intent] = INTENTS, **variables: str) -> ScriptedLLM:
    config = ScriptedLLMConfig(intents=intents, fallback="I heard you say: {last_user_text}.")
    return ScriptedLLM(config, variables)


def matched(text: str, model: ScriptedLLM | None = None) -> str | None:
    intent = (model or llm()).match(text)
    return intent.name if intent else None


async def answer(model: ScriptedLLM, *turns: str) -> list[TextDelta | ToolCall]:
    context = [Message("system", "be brief")]
    for turn in turns:
        context += [Message("user", turn), Message("assistant", "ok")]
    context.pop()
    return [event async for event in model.respond(context)]


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("What are your hours?", "hours"),
        ("ARE YOU OPEN today", "hours"),
        ("is it opening soon", None),  # "open" is a word, not a prefix
        ("bye", "goodbye"),
        ("maybe", None),
        ("Byebye", None),
        ("It's in the open.", "hours"),
    ],
)
def test_keywords_match_whole_words(text: str, intent: str | None):
    assert matched(text) == intent


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("Please hang up now.", "goodbye"),
        ("Hang   up!", "goodbye"),
        ("OK, that's all", "goodbye"),
        ("I think that's allowed.", None),
        ("the picture is hanging upside down", None),
        ("can you hang upside down", None),
        ("send an e-mail", "email"),
        ("my e mail is broken", "email"),
        ("email", None),
    ],
)
def test_phrases_match_whole_words_in_order(text: str, intent: str | None):
    assert matched(text) == intent


@pytest.mark.parametrize(
    ("text", "intent"),
    [("Thanks!", "thanks"), ("THANK YOU so much", "thanks"), ("Happy thanksgiving", None)],
)
def test_regex_matches_case_insensitively(text: str, intent: str | None):
    assert matched(text) == intent


def test_first_matching_intent_wins():
    assert matched("thanks, bye") == "goodbye"
    reordered = llm([INTENTS[2], INTENTS[0]])
    assert matched("thanks, bye", reordered) == "thanks"


def test_punctuation_keywords_never_match():
    assert matched("") is None
    assert matched("?") is None


async def test_fallback_repeats_the_last_caller_turn():
    events = await answer(llm(), "what are your hours", "blue {bananas} and {name}")
    assert all(isinstance(e, TextDelta) for e in events)
    assert "".join(e.text for e in events) == "I heard you say: blue {bananas} and {name}."
    assert len(events) > 1, "the reply is streamed word by word"


async def test_fallback_without_any_caller_turn():
    events = [e async for e in llm().respond([Message("system", "hi")])]
    assert "".join(e.text for e in events) == "I heard you say: ."


async def test_call_variables_fill_reply_and_arguments():
    transfer = Intent(
        name="transfer",
        keywords=["transfer"],
        reply="Hello {name}, transferring you to {team}. {unknown} stays.",
        tool="transfer_call",
        arguments={"to": "{desk}", "note": "{last_user_text}"},
    )
    model = llm([transfer], name="Ada", team="sales", desk="+15550001")
    events = await answer(model, "transfer me")
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "Hello Ada, transferring you to sales. {unknown} stays."
    arguments = {"to": "+15550001", "note": "transfer me"}
    assert events[-1] == ToolCall("call_1", "transfer_call", arguments)


async def test_tool_call_comes_after_the_reply_text():
    model = llm()
    events = await answer(model, "ok bye")
    *text, call = events
    assert "".join(e.text for e in text) == "Goodbye!"
    assert all(isinstance(e, TextDelta) for e in text)
    assert call == ToolCall("call_1", "end_call", {})
    again = await answer(model, "hang up")
    assert again[-1].id == "call_2"


async def test_no_tool_call_for_a_reply_without_tool():
    events = await answer(llm(), "when are you open")
    assert [type(e) for e in events] == [TextDelta, TextDelta, TextDelta]
    assert "".join(e.text for e in events) == "Nine to six."
