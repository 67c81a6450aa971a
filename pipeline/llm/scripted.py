"""The offline LLM: replies and tool calls chosen by keywords or regex from the agent file."""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator

from pipeline.agent import Intent, ScriptedLLMConfig
from pipeline.llm.base import LLMEvent, Message, TextDelta, ToolCall

WORD = re.compile(r"[a-z0-9']+")


class ScriptedLLM:
    """Answers the latest caller turn with the first intent that matches it, else the fallback."""

    def __init__(self, config: ScriptedLLMConfig, variables: dict[str, str] | None = None):
        self._config = config
        self._variables = variables or {}
        self._patterns = [
            re.compile(intent.regex, re.IGNORECASE) if intent.regex else None
            for intent in config.intents
        ]
        self._keywords = [
            [words for k in intent.keywords if (words := _words(k)).strip()]
            for intent in config.intents
        ]
        self._call_ids = itertools.count(1)

    def match(self, text: str) -> Intent | None:
        heard = _words(text)
        for intent, pattern, keywords in zip(
            self._config.intents, self._patterns, self._keywords, strict=True
        ):
            if pattern is not None and pattern.search(text):
                return intent
            if any(keyword in heard for keyword in keywords):
                return intent
        return None

    async def respond(self, context: list[Message]) -> AsyncIterator[LLMEvent]:
        last_user = next((m.text for m in reversed(context) if m.role == "user"), "")
        intent = self.match(last_user)
        values = {**self._variables, "last_user_text": last_user}
        if context and context[-1].role == "tool":
            # The tool the intent called has answered: say what it returned, call nothing more.
            after = intent.after_tool if intent else None
            if after:
                values["result"] = context[-1].text
                for piece in re.findall(r"\S+\s*", _fill(after, values)):
                    yield TextDelta(piece)
            return
        reply = intent.reply if intent else self._config.fallback
        for piece in re.findall(r"\S+\s*", _fill(reply, values)):
            yield TextDelta(piece)
        if intent and intent.tool:
            arguments = {key: _fill(value, values) for key, value in intent.arguments.items()}
            yield ToolCall(f"call_{next(self._call_ids)}", intent.tool, arguments)



def _fill(text: str, values: dict[str, str]) -> str:
    """Fill `{name}` placeholders (call variables, `last_user_text`); unknown ones stay."""
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), text)


def _words(text: str) -> str:
    """Lower-case words between single spaces, padded, so that `" hang up " in _words(turn)`
    matches whole words only ("change up" does not say "hang up")."""
    return " " + " ".join(WORD.findall(text.lower())) + " "
