"""A streaming client of any OpenAI-compatible Chat Completions endpoint (OpenAI, Groq, vLLM,
llama.cpp, Ollama ...); its connections come from `pipeline.openai_endpoint`."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from pipeline.cloud_errors import ServiceError, from_httpx
from pipeline.llm.base import LLMEvent, Message, TextDelta, ToolCall
from pipeline.openai_endpoint import OpenAIEndpoint

log = structlog.get_logger()

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


class OpenAILLMConfig(BaseModel):
    """`llm: {provider: openai, ...}` of an agent file. Key and URL default to the
    environment (`OPENAI_API_KEY`, `OPENAI_BASE_URL`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Literal["openai"] = "openai"
    model: str = "gpt-4o-mini"
    base_url: str | None = None
    api_key: SecretStr | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    request_timeout_secs: float = Field(default=10, gt=0, le=120)
    first_token_timeout_secs: float = Field(default=5, gt=0, le=120)
    context_token_budget: int = Field(default=8000, ge=256)


class OpenAILLM:
    """Streams chat completions. Timeouts: `request_timeout_secs` bounds each network phase
    (connect, send, any gap between received bytes); `first_token_timeout_secs` bounds the
    time from sending the request to the first text or tool call."""

    def __init__(
        self,
        model: str = "gpt-4o-mini",
        base_url: str | None = None,
        api_key: str | None = None,
        tools: Sequence[dict[str, Any]] = (),
        temperature: float | None = None,
        max_tokens: int | None = None,
        request_timeout_secs: float = 10,
        first_token_timeout_secs: float = 5,
        context_token_budget: int | None = 8000,
        variables: dict[str, str] | None = None,
    ) -> None:
        self._endpoint = OpenAIEndpoint("openai_llm", base_url, api_key)
        self._model = model
        self._tools = list(tools)
        self._temperature = temperature
        self._max_tokens = max_tokens
        self._timeout = httpx.Timeout(request_timeout_secs)
        self._first_token_timeout = first_token_timeout_secs
        self._budget = context_token_budget
        self._variables = variables or {}

    @classmethod
    def from_config(
        cls,
        config: OpenAILLMConfig,
        tools: Sequence[dict[str, Any]] = (),
        variables: dict[str, str] | None = None,
    ) -> OpenAILLM:
        return cls(
            config.model,
            config.base_url,
            config.api_key.get_secret_value() if config.api_key else None,
            tools,
            config.temperature,
            config.max_tokens,
            config.request_timeout_secs,
            config.first_token_timeout_secs,
            config.context_token_budget,
            variables,
        )

    async def warm_up(self) -> None:
        await self._endpoint.warm_up()

    def request_body(self, context: list[Message]) -> dict[str, Any]:
        """The JSON of the chat completion request for `context`."""
        messages = api_messages(context, self._variables)
        if self._budget is not None:
            messages = trim_to_budget(messages, self._budget)
        body: dict[str, Any] = {"model": self._model, "messages": messages, "stream": True}
        if self._tools:
            body["tools"] = self._tools
        if self._temperature is not None:
            body["temperature"] = self._temperature
        if self._max_tokens is not None:
            body["max_tokens"] = self._max_tokens
        return body

    async def respond(self, context: list[Message]) -> AsyncIterator[LLMEvent]:
        started = time.perf_counter()
        deadline = asyncio.get_running_loop().time() + self._first_token_timeout
        response = await self._open(self.request_body(context), deadline)
        first_token_ms: int | None = None
        calls = _ToolCalls()
        try:
            async for event in self._events(response, deadline, calls):
                if first_token_ms is None:
                    first_token_ms = round((time.perf_counter() - started) * 1000)
                yield event
            for call in calls.finish():
                first_token_ms = first_token_ms or round((time.perf_counter() - started) * 1000)
                yield call
        except ServiceError as exc:
            log.warning("llm_failed", kind=exc.kind, message=exc.message)
            raise
        finally:
            await response.aclose()
        log.info(
            "llm_answered",
            model=self._model,
            first_token_ms=first_token_ms,
            total_ms=round((time.perf_counter() - started) * 1000),
            tool_calls=len(calls),
        )

    async def _open(self, body: dict[str, Any], deadline: float) -> httpx.Response:
        """Sends the request and returns the streaming response once its status is OK.
        Retries once if the connection fails (never on an HTTP error status)."""
        client = self._endpoint.client
        for attempt in (1, 2):
            request = client.build_request(
                "POST",
                "chat/completions",
                json=body,
                headers=self._endpoint.headers,
                timeout=self._timeout,
            )
            try:
                async with asyncio.timeout_at(deadline):
                    response = await client.send(request, stream=True)
            except TimeoutError:
                raise self._failed(ServiceError("openai_llm", "timeout", "no answer")) from None
            except httpx.TimeoutException as exc:
                raise self._failed(from_httpx("openai_llm", exc)) from exc
            except httpx.TransportError as exc:
                if attempt == 1:
                    log.info("llm_retry", reason=type(exc).__name__)
                    continue
                raise self._failed(from_httpx("openai_llm", exc)) from exc
            if response.is_success:
                return response
            try:
                raise self._failed(await self._endpoint.error(response))
            finally:
                await response.aclose()
        raise AssertionError("unreachable")

    def _failed(self, exc: ServiceError) -> ServiceError:
        log.warning("llm_failed", kind=exc.kind, status=exc.status, message=exc.message)
        return exc

    async def _events(
        self, response: httpx.Response, deadline: float | None, calls: _ToolCalls
    ) -> AsyncIterator[TextDelta]:
        """The text deltas of the Server-Sent Events stream; tool-call fragments go to
        `calls`. `deadline` bounds the wait for the first text or tool call."""
        lines = response.aiter_lines()
        data: list[str] = []
        done = finished = False
        while (line := await _next_line(lines, deadline)) is not None:
            if line.startswith("data:"):
                data.append(line[6:] if line.startswith("data: ") else line[5:])
                continue
            if line or not data:
                continue  # comments, other fields, blank lines between events
            payload = "\n".join(data)
            data.clear()
            if payload == "[DONE]":
                done = True
                await _drain(lines)
                break
            try:
                chunk = json.loads(payload)
            except ValueError:
                raise ServiceError("openai_llm", "stream_broken", "chunk is not JSON") from None
            if "error" in chunk:
                error = chunk["error"]
                message = error.get("message", "") if isinstance(error, dict) else str(error)
                raise ServiceError("openai_llm", "server", self._endpoint.redact(message))
            for choice in chunk.get("choices") or ():
                if choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta") or {}
                for fragment in delta.get("tool_calls") or ():
                    calls.add(fragment)
                    deadline = None
                finished = finished or bool(choice.get("finish_reason"))
                if delta.get("content"):
                    deadline = None
                    yield TextDelta(delta["content"])
        if not (done or finished):
            raise ServiceError("openai_llm", "stream_broken", "stream ended mid-answer")


async def _drain(lines: AsyncIterator[str]) -> None:
    """Reads the end of the body (normally already here), so the connection can be reused
    rather than closed; a server that lingers after [DONE] gets its connection closed."""
    try:
        async with asyncio.timeout(0.2):
            async for _ in lines:
                pass
    except (TimeoutError, httpx.HTTPError):
        pass


async def _next_line(lines: AsyncIterator[str], deadline: float | None) -> str | None:
    try:
        if deadline is None:
            return await anext(lines, None)
        async with asyncio.timeout_at(deadline):
            return await anext(lines, None)
    except TimeoutError:
        raise ServiceError("openai_llm", "timeout", "no first token in time") from None
    except httpx.HTTPError as exc:
        raise from_httpx("openai_llm", exc, in_body=True) from exc


def api_messages(context: list[Message], variables: dict[str, str]) -> list[dict[str, Any]]:
    """Our messages in the API's shape; `{name}` placeholders of system messages are filled
    from the call's variables (unknown ones stay as written)."""
    messages: list[dict[str, Any]] = []
    for message in context:
        if message.role == "system":
            text = _PLACEHOLDER.sub(lambda m: variables.get(m[1], m[0]), message.text)
            messages.append({"role": "system", "content": text})
        elif message.role == "tool":
            messages.append(
                {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.text}
            )
        elif message.role == "assistant" and message.tool_calls:
            messages.append(
                {
                    "role": "assistant",
                    "content": message.text or None,
                    "tool_calls": [_api_tool_call(call) for call in message.tool_calls],
                }
            )
        else:
            messages.append({"role": message.role, "content": message.text})
    return messages


def _api_tool_call(call: ToolCall) -> dict[str, Any]:
    arguments = call.arguments
    return {
        "id": call.id,
        "type": "function",
        "function": {
            "name": call.name,
            # invalid JSON from the model comes back as the model wrote it (see _ToolCalls)
            "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
        },
    }


def trim_to_budget(messages: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """The leading system messages and as many of the newest turns as fit in `budget`
    tokens (~4 characters each). An assistant message with tool calls and the tool results
    that follow it are kept or dropped together; the newest turn is always kept."""
    head = 0
    while head < len(messages) and messages[head]["role"] == "system":
        head += 1
    groups: list[list[dict[str, Any]]] = []
    for message in messages[head:]:
        if message["role"] == "tool" and groups:
            groups[-1].append(message)
        else:
            groups.append([message])
    used = sum(_tokens(m) for m in messages[:head])
    kept = 0
    for group in reversed(groups):
        cost = sum(_tokens(m) for m in group)
        if kept and used + cost > budget:
            break
        used += cost
        kept += 1
    if kept == len(groups):
        return messages
    log.info("llm_context_trimmed", dropped_turns=len(groups) - kept, tokens=used)
    return messages[:head] + [m for group in groups[len(groups) - kept :] for m in group]


def _tokens(message: dict[str, Any]) -> int:
    chars = len(message.get("content") or "")
    for call in message.get("tool_calls") or ():
        chars += len(call["function"]["name"]) + len(call["function"]["arguments"])
    return chars // 4 + 4


class _ToolCalls:
    """Assembles streamed tool-call fragments by their `index` (parallel calls may even
    interleave). Arguments that are not a JSON object are handed on as the model's raw text,
    which `pipeline.tools.ToolRunner` answers with an error the model can correct."""

    def __init__(self) -> None:
        self._ids: dict[int, str] = {}
        self._names: dict[int, str] = {}
        self._arguments: dict[int, list[str]] = {}

    def __len__(self) -> int:
        return len(self._arguments)

    def add(self, fragment: dict[str, Any]) -> None:
        index = fragment.get("index")
        if index is None:  # some servers omit it: a new id starts a new call
            new = fragment.get("id") and fragment["id"] not in self._ids.values()
            index = max(self._arguments, default=-1) + (1 if new or not self._arguments else 0)
        parts = self._arguments.setdefault(index, [])
        if fragment.get("id"):
            self._ids[index] = fragment["id"]
        function = fragment.get("function") or {}
        if function.get("name"):
            self._names[index] = self._names.get(index, "") + function["name"]
        if function.get("arguments"):
            parts.append(function["arguments"])

    def finish(self) -> list[ToolCall]:
        calls = []
        for index in sorted(self._arguments):
            raw = "".join(self._arguments[index])
            name = self._names.get(index, "")
            try:
                arguments: Any = json.loads(raw) if raw.strip() else {}
            except ValueError:
                arguments = None
            if not isinstance(arguments, dict):
                log.warning("llm_tool_arguments_invalid", tool=name, chars=len(raw))
                arguments = raw
            call_id = self._ids.get(index) or f"call_{uuid.uuid4().hex[:24]}"
            calls.append(ToolCall(call_id, name, arguments))
        return calls
