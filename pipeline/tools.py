"""The agent's tools: what the LLM is told it may call, and running what it does call.

Built-ins act on the call through `CallControl`, which the gateway implements; HTTP tools
POST their arguments to the agent file's URL. Whatever goes wrong (bad arguments, a slow or
failing endpoint, a provider refusing a transfer) comes back as a `ToolResult` the LLM can read
and answer the caller about: `run` never raises into the conversation.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import structlog

from pipeline.agent import TRANSFER_TARGET, HttpToolConfig, ToolConfig
from pipeline.json_schema import validate
from pipeline.llm.base import Message, ToolCall

log = structlog.get_logger()

MAX_RESULT_BYTES = 4096


class CallControl(Protocol):
    """What the built-in tools do to the live call; the gateway's `Call` implements it."""

    async def end_call(self) -> None: ...

    async def transfer(self, to: str) -> None:
        """Hand the caller to `to` (E.164 number or sip: URI); the agent's part ends."""

    async def send_dtmf(self, digits: str) -> None:
        """Play `digits` to the far end (in-band tones: see `pipeline.dtmf.dtmf_tones`)."""


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as the LLM sees it."""

    name: str
    description: str
    parameters: dict[str, Any]

    def openai(self) -> dict[str, Any]:
        """The OpenAI function-calling shape (`tools=[...]` of a chat completion request)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


@dataclass(frozen=True, slots=True)
class ToolResult:
    """`content` goes back to the LLM as the tool message. `ends_call`: the agent's part of
    the call is over (hung up or transferred), so the conversation stops."""

    content: str
    ok: bool = True
    ends_call: bool = False

    def message(self, call: ToolCall) -> Message:
        return Message("tool", self.content, tool_call_id=call.id)


BUILTIN_SPECS: dict[str, ToolSpec] = {
    "end_call": ToolSpec(
        "end_call",
        "Hang up the call. Use it once the caller is done and you have said goodbye.",
        {
            "type": "object",
            "properties": {
                "reason": {"type": "string", "description": "Why the call ends, for the log."}
            },
            "additionalProperties": False,
        },
    ),
    "transfer_call": ToolSpec(
        "transfer_call",
        "Transfer the caller to another phone number or SIP address. The caller leaves you.",
        {
            "type": "object",
            "properties": {
                "to": {
                    "type": "string",
                    "description": "E.164 phone number (+14155550123) or SIP URI (sip:a@b.com).",
                    "pattern": f"^(?:{TRANSFER_TARGET.pattern})$",
                }
            },
            "required": ["to"],
            "additionalProperties": False,
        },
    ),
    "send_dtmf": ToolSpec(
        "send_dtmf",
        "Press keys on the phone keypad, e.g. to choose an option in an automated menu.",
        {
            "type": "object",
            "properties": {
                "digits": {
                    "type": "string",
                    "description": "Keys to press in order: 0-9, *, #, A-D.",
                    "pattern": "^[0-9*#A-D]+$",
                    "maxLength": 64,
                }
            },
            "required": ["digits"],
            "additionalProperties": False,
        },
    ),
}


def tool_specs(
    tools: Sequence[ToolConfig], transfer_targets: Sequence[str] = ()
) -> list[ToolSpec]:
    """The specs of an agent's tools, in the agent file's order.

    With `transfer_targets`, `transfer_call` may only dial those (an enum the LLM sees).
    """
    specs = []
    for tool in tools:
        if isinstance(tool, HttpToolConfig):
            specs.append(ToolSpec(tool.name, tool.description, tool.parameters))
        elif tool == "transfer_call" and transfer_targets:
            spec = BUILTIN_SPECS[tool]
            to = {**spec.parameters["properties"]["to"], "enum": list(transfer_targets)}
            parameters = {**spec.parameters, "properties": {"to": to}}
            specs.append(ToolSpec(spec.name, spec.description, parameters))
        else:
            specs.append(BUILTIN_SPECS[tool])
    return specs


class ToolRunner:
    """Runs the LLM's tool calls for one call."""

    def __init__(
        self,
        tools: Sequence[ToolConfig],
        control: CallControl,
        http: httpx.AsyncClient,
        transfer_targets: Sequence[str] = (),
        max_result_bytes: int = MAX_RESULT_BYTES,
    ) -> None:
        self.specs = tool_specs(tools, transfer_targets)
        self._schemas = {spec.name: spec.parameters for spec in self.specs}
        self._http_tools = {t.name: t for t in tools if isinstance(t, HttpToolConfig)}
        self._control = control
        self._http = http
        self._max_result_bytes = max_result_bytes

    async def run(self, call: ToolCall) -> ToolResult:
        started = time.monotonic()
        result, outcome, status = await self._run(call)
        log.info(
            "tool_called",
            tool=call.name,
            duration_ms=round((time.monotonic() - started) * 1000),
            outcome=outcome,
            **({"status": status} if status is not None else {}),
        )
        return result

    async def _run(self, call: ToolCall) -> tuple[ToolResult, str, int | None]:
        """The result, an outcome word for the log, and the HTTP status if there was one."""
        schema = self._schemas.get(call.name)
        if schema is None:
            return _error(f"unknown tool {call.name!r}"), "unknown_tool", None
        try:
            arguments = _arguments(call.arguments)
            validate(arguments, schema)
        except ValueError as exc:  # SchemaViolation included
            return _error(f"invalid arguments for {call.name}: {exc}"), "invalid_arguments", None
        tool = self._http_tools.get(call.name)
        if tool is not None:
            return await self._post(tool, arguments)
        try:
            return await self._builtin(call.name, arguments), "ok", None
        except Exception as exc:
            log.warning("tool_failed", tool=call.name, error=type(exc).__name__)
            return _error(f"{call.name} failed: {exc}"), "failed", None

    async def _builtin(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        if name == "end_call":
            await self._control.end_call()
            return ToolResult("call ended", ends_call=True)
        if name == "transfer_call":
            await self._control.transfer(arguments["to"])
            return ToolResult(f"transferred to {arguments['to']}", ends_call=True)
        digits = arguments["digits"]
        await self._control.send_dtmf(digits)
        return ToolResult(f"sent {digits}")

    async def _post(
        self, tool: HttpToolConfig, arguments: dict[str, Any]
    ) -> tuple[ToolResult, str, int | None]:
        """POST within `timeout_secs` in all (httpx's timeout bounds each phase, not the whole)
        and read at most `max_result_bytes` of the answer."""
        try:
            async with asyncio.timeout(tool.timeout_secs):
                async with self._http.stream(
                    "POST", tool.url, json=arguments, headers=tool.headers,
                    timeout=tool.timeout_secs,
                ) as response:
                    body = await self._read_capped(response)
        except (TimeoutError, httpx.TimeoutException):
            return _error(f"{tool.name} timed out after {tool.timeout_secs:g} s"), "timeout", None
        except httpx.HTTPError as exc:
            reason = type(exc).__name__
            return _error(f"{tool.name} could not be reached ({reason})"), "unreachable", None
        status = response.status_code
        if response.is_success:
            return ToolResult(body), "ok", status
        message = f"{tool.name} answered HTTP {status}" + (f": {body}" if body else "")
        return _error(message), "http_error", status

    async def _read_capped(self, response: httpx.Response) -> str:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > self._max_result_bytes:
                head = body[: self._max_result_bytes].decode("utf-8", errors="ignore")
                return f"{head} [truncated at {self._max_result_bytes} bytes]"
        return body.decode("utf-8", errors="replace")


def _arguments(arguments: Any) -> dict[str, Any]:
    """Arguments as a dict: LLM clients may hand over the model's raw JSON text."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc.msg})") from exc
    if not isinstance(arguments, dict):
        raise ValueError("arguments must be a JSON object")
    return arguments


def _error(message: str) -> ToolResult:
    return ToolResult(f"error: {message}", ok=False)
