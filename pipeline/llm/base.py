"""Language-model interface: a streamed answer of text deltas and tool calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


@dataclass(slots=True)
class Message:
    role: Literal["system", "user", "assistant", "tool"]
    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


LLMEvent = TextDelta | ToolCall


class LanguageModel(Protocol):
    def respond(self, context: list[Message]) -> AsyncIterator[LLMEvent]: ...
