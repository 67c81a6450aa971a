"""The tool layer: specs for the LLM, built-ins through a CallControl fake, HTTP tools against
a loopback server, and the tool schema of the agent file."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import ValidationError
from structlog.testing import capture_logs

from pipeline.agent import AgentConfig, HttpToolConfig
from pipeline.llm.base import ToolCall
from pipeline.tools import BUILTIN_SPECS, ToolRunner, tool_specs

SECRET = "Bearer s3cr3t-token"
DEFAULT_AGENT = Path(__file__).resolve().parents[2] / "config" / "agents" / "default.yaml"


CANNED = {
    "/fail": (500, b"database is down"),
    "/big": (200, "é".encode() * 5000),
    "/empty-404": (404, b""),
}


class _Handler(BaseHTTPRequestHandler):
    seen: list[tuple[str, dict[str, str], Any]]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append((self.path, dict(self.headers), body))
        if self.path == "/slow":
            time.sleep(1.0)
        if self.path == "/drip":  # each byte in time, the whole far too late
            with suppress(ConnectionError):
                self.send_response(200)
                self.send_header("Content-Length", "10")
                self.end_headers()
                for _ in range(10):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
            return
        status, payload = CANNED.get(self.path) or (200, json.dumps(
            {"order": body.get("order_id"), "status": "shipped"}).encode())
        with suppress(ConnectionError):  # /slow: the client has given up
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, list]]:
    seen: list = []
    handler = type("Handler", (_Handler,), {"seen": seen})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.block_on_close = False
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


class FakeControl:
    def __init__(self, fail: Exception | None = None) -> None:
        self.actions: list[tuple[str, ...]] = []
        self._fail = fail

    async def end_call(self) -> None:
        self.actions.append(("end_call",))

    async def transfer(self, to: str) -> None:
        if self._fail:
            raise self._fail
        self.actions.append(("transfer", to))

    async def send_dtmf(self, digits: str) -> None:
        self.actions.append(("send_dtmf", digits))


ORDER_PARAMETERS = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "pattern": "^[0-9]{4,10}$"},
        "notify": {"type": "boolean"},
    },
    "required": ["order_id"],
    "additionalProperties": False,
}


def http_tool(base: str, path: str, timeout_secs: float = 2.0) -> HttpToolConfig:
    return HttpToolConfig(
        name="order_status",
        description="Look up an order.",
        parameters=ORDER_PARAMETERS,
        url=base + path,
        timeout_secs=timeout_secs,
        headers={"Authorization": SECRET},
    )


def call(name: str, arguments: Any) -> ToolCall:
    return ToolCall("call_1", name, arguments)


# Specs for the LLM


def test_specs_follow_the_agent_file_in_openai_shape(server) -> None:
    base, _ = server
    specs = tool_specs(["end_call", http_tool(base, "/orders"), "send_dtmf"])
    assert [s.name for s in specs] == ["end_call", "order_status", "send_dtmf"]
    assert specs[1].openai() == {
        "type": "function",
        "function": {
            "name": "order_status",
            "description": "Look up an order.",
            "parameters": ORDER_PARAMETERS,
        },
    }
    assert BUILTIN_SPECS["transfer_call"].parameters["required"] == ["to"]
    assert BUILTIN_SPECS["send_dtmf"].parameters["required"] == ["digits"]
    assert "required" not in BUILTIN_SPECS["end_call"].parameters


def test_transfer_targets_become_an_enum_the_runner_enforces() -> None:
    [spec] = tool_specs(["transfer_call"], transfer_targets=["+14155550100"])
    assert spec.parameters["properties"]["to"]["enum"] == ["+14155550100"]
    assert "enum" not in BUILTIN_SPECS["transfer_call"].parameters["properties"]["to"]


# Built-ins


async def test_end_call(http) -> None:
    control = FakeControl()
    result = await ToolRunner(["end_call"], control, http).run(call("end_call", {"reason": "bye"}))
    assert (result.ok, result.ends_call) == (True, True)
    assert control.actions == [("end_call",)]
    assert result.message(call("end_call", {})).role == "tool"
    assert result.message(call("end_call", {})).tool_call_id == "call_1"


@pytest.mark.parametrize("to", ["+14155550123", "sip:support@pbx.example.com"])
async def test_transfer_to_a_number_or_sip_uri(http, to: str) -> None:
    control = FakeControl()
    result = await ToolRunner(["transfer_call"], control, http).run(
        call("transfer_call", {"to": to})
    )
    assert (result.ok, result.ends_call) == (True, True)
    assert control.actions == [("transfer", to)]


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        ({}, "to: required"),
        ({"to": "555-0123"}, "to: does not match"),
        ({"to": "+14155550123", "cc": "x"}, "cc: not an allowed property"),
        ({"to": 14155550123}, "to: expected string"),
    ],
)
async def test_transfer_refuses_bad_arguments(http, arguments: dict, complaint: str) -> None:
    control = FakeControl()
    result = await ToolRunner(["transfer_call"], control, http).run(
        call("transfer_call", arguments)
    )
    assert not result.ok and not result.ends_call
    assert result.content.startswith("error: invalid arguments for transfer_call")
    assert complaint in result.content
    assert control.actions == []


async def test_transfer_outside_the_allowed_targets_is_refused(http) -> None:
    control = FakeControl()
    runner = ToolRunner(["transfer_call"], control, http, transfer_targets=["+14155550100"])
    refused = await runner.run(call("transfer_call", {"to": "+19005550199"}))
    assert not refused.ok and "must be one of" in refused.content
    assert (await runner.run(call("transfer_call", {"to": "+14155550100"}))).ok
    assert control.actions == [("transfer", "+14155550100")]


async def test_send_dtmf(http) -> None:
    control = FakeControl()
    runner = ToolRunner(["send_dtmf"], control, http)
    result = await runner.run(call("send_dtmf", {"digits": "1234#"}))
    assert (result.ok, result.ends_call) == (True, False)
    bad = await runner.run(call("send_dtmf", {"digits": "12 34"}))
    assert not bad.ok and "digits: does not match" in bad.content
    assert control.actions == [("send_dtmf", "1234#")]


async def test_a_failing_control_becomes_an_error_result(http) -> None:
    control = FakeControl(fail=RuntimeError("provider refused the transfer"))
    result = await ToolRunner(["transfer_call"], control, http).run(
        call("transfer_call", {"to": "+14155550123"})
    )
    assert (result.ok, result.ends_call) == (False, False)
    assert "provider refused the transfer" in result.content


async def test_unknown_and_unlisted_tools_are_errors(http) -> None:
    control = FakeControl()
    runner = ToolRunner(["end_call"], control, http)
    for name in ("launch_rockets", "transfer_call"):  # a built-in the agent does not list
        result = await runner.run(call(name, {"to": "+14155550123"}))
        assert not result.ok and result.content == f"error: unknown tool {name!r}"
    assert control.actions == []


async def test_arguments_as_raw_json_text(http) -> None:
    control = FakeControl()
    runner = ToolRunner(["send_dtmf"], control, http)
    assert (await runner.run(call("send_dtmf", '{"digits": "9"}'))).ok
    broken = await runner.run(call("send_dtmf", '{"digits": "9"'))
    assert not broken.ok and "not valid JSON" in broken.content
    listed = await runner.run(call("send_dtmf", '["9"]'))
    assert not listed.ok and "JSON object" in listed.content
    assert control.actions == [("send_dtmf", "9")]


# HTTP tools


async def test_http_tool_posts_arguments_and_returns_the_body(server, http) -> None:
    base, seen = server
    runner = ToolRunner([http_tool(base, "/orders")], FakeControl(), http)
    with capture_logs() as logs:
        result = await runner.run(call("order_status", {"order_id": "12345", "notify": True}))
    assert result.ok and not result.ends_call
    assert json.loads(result.content) == {"order": "12345", "status": "shipped"}
    path, headers, body = seen[-1]
    assert (path, body) == ("/orders", {"order_id": "12345", "notify": True})
    assert headers["Authorization"] == SECRET
    assert headers["Content-Type"] == "application/json"
    [entry] = [e for e in logs if e["event"] == "tool_called"]
    assert entry["tool"] == "order_status" and entry["outcome"] == "ok"
    assert entry["status"] == 200 and isinstance(entry["duration_ms"], int)
    assert "s3cr3t" not in repr(logs)


async def test_http_tool_timeout(server, http) -> None:
    base, _ = server
    runner = ToolRunner([http_tool(base, "/slow", timeout_secs=0.2)], FakeControl(), http)
    started = time.monotonic()
    with capture_logs() as logs:
        result = await runner.run(call("order_status", {"order_id": "1234"}))
    assert time.monotonic() - started < 0.8
    assert not result.ok and result.content == "error: order_status timed out after 0.2 s"
    assert [e["outcome"] for e in logs if e["event"] == "tool_called"] == ["timeout"]


async def test_http_tool_timeout_bounds_the_whole_request(server, http) -> None:
    base, _ = server
    runner = ToolRunner([http_tool(base, "/drip", timeout_secs=0.3)], FakeControl(), http)
    started = time.monotonic()
    result = await runner.run(call("order_status", {"order_id": "1234"}))
    assert time.monotonic() - started < 0.7
    assert result.content == "error: order_status timed out after 0.3 s"


async def test_http_tool_server_error(server, http) -> None:
    base, _ = server
    runner = ToolRunner([http_tool(base, "/fail")], FakeControl(), http)
    result = await runner.run(call("order_status", {"order_id": "1234"}))
    assert not result.ok
    assert result.content == "error: order_status answered HTTP 500: database is down"
    empty = await ToolRunner([http_tool(base, "/empty-404")], FakeControl(), http).run(
        call("order_status", {"order_id": "1234"})
    )
    assert empty.content == "error: order_status answered HTTP 404"


async def test_http_tool_connection_refused(http) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runner = ToolRunner([http_tool(f"http://127.0.0.1:{port}", "/x")], FakeControl(), http)
    with capture_logs() as logs:
        result = await runner.run(call("order_status", {"order_id": "1234"}))
    assert not result.ok
    assert result.content == "error: order_status could not be reached (ConnectError)"
    assert [e["outcome"] for e in logs if e["event"] == "tool_called"] == ["unreachable"]


async def test_http_tool_bad_arguments_never_reach_the_server(server, http) -> None:
    base, seen = server
    before = len(seen)
    runner = ToolRunner([http_tool(base, "/orders")], FakeControl(), http)
    for arguments, complaint in [
        ({"order_id": "12"}, "order_id: does not match"),
        ({"order_id": "1234", "notify": "yes"}, "notify: expected boolean"),
        ({"notify": True}, "order_id: required"),
    ]:
        result = await runner.run(call("order_status", arguments))
        assert not result.ok and complaint in result.content
    assert len(seen) == before


async def test_http_tool_body_is_truncated(server, http) -> None:
    base, _ = server
    runner = ToolRunner([http_tool(base, "/big")], FakeControl(), http, max_result_bytes=4096)
    result = await runner.run(call("order_status", {"order_id": "1234"}))
    head, _, tail = result.content.partition(" [truncated")
    assert result.ok and head == "é" * 2048 and tail == " at 4096 bytes]"


# The agent file


def test_default_agent_file_still_loads() -> None:
    agent = AgentConfig.model_validate(yaml.safe_load(DEFAULT_AGENT.read_text()))
    assert agent.tools == ["end_call"] and "end_call" in agent.tools


def test_agent_file_with_every_kind_of_tool() -> None:
    agent = AgentConfig.model_validate(
        {
            "tools": [
                "end_call",
                "transfer_call",
                "send_dtmf",
                {"name": "order_status", "url": "https://crm.example.com/o",
                 "parameters": ORDER_PARAMETERS, "headers": {"Authorization": SECRET}},
            ],
            "transfer_targets": ["+14155550100", "sip:desk@pbx.example.com"],
            "dtmf": {"terminator": None, "inter_digit_timeout_secs": 5},
        }
    )  # fmt: skip
    http = agent.tools[3]
    assert isinstance(http, HttpToolConfig) and http.timeout_secs == 5
    assert agent.dtmf.terminator is None and agent.dtmf.max_digits == 32


def loc_of_error(data: dict) -> list[str]:
    with pytest.raises(ValidationError) as raised:
        AgentConfig.model_validate(data)
    return [".".join(map(str, e["loc"])) for e in raised.value.errors()]


@pytest.mark.parametrize(
    ("tool", "where"),
    [
        ({"name": "t", "url": "ftp://x.example.com"}, "tools.0.http.url"),
        ({"name": "t", "url": "https://"}, "tools.0.http.url"),
        ({"name": "t", "url": "https://x", "parameters": {"type": "string"}},
         "tools.0.http.parameters"),
        ({"name": "t", "url": "https://x", "parameters": {"type": "object", "oneOf": []}},
         "tools.0.http.parameters"),
        ({"name": "t", "url": "https://x", "parameters": {
            "type": "object", "properties": {"a": {"type": "text"}}}},
         "tools.0.http.parameters"),
        ({"name": "t", "url": "https://x", "timeout_secs": 0}, "tools.0.http.timeout_secs"),
        ({"name": "end_call", "url": "https://x"}, "tools.0.http.name"),
        ({"name": "has space", "url": "https://x"}, "tools.0.http.name"),
        ({"name": "t", "url": "https://x", "method": "GET"}, "tools.0.http.method"),
        ("hang_up", "tools.0.builtin"),
    ],
)  # fmt: skip
def test_agent_file_errors_name_the_key(tool: Any, where: str) -> None:
    assert loc_of_error({"tools": [tool]}) == [where]


def test_agent_file_other_errors() -> None:
    assert loc_of_error({"tools": ["end_call", "end_call"]}) == [""]
    assert loc_of_error({"transfer_targets": ["555-0100"]}) == ["transfer_targets"]
    assert loc_of_error({"dtmf": {"terminator": "x"}}) == ["dtmf.terminator"]
    assert loc_of_error({"dtmf": {"level_dbfs": 0}}) == ["dtmf.level_dbfs"]
