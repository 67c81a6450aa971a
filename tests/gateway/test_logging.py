"""structlog set-up, in a child process: its global config (loggers cached on first use) must
not leak into the other tests."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

# A module with its logger made at import, before logging is configured, as ours are.
OTHER_MODULE = """
import structlog

log = structlog.get_logger()


async def work(step):
    log.info("in_task", step=step)
    log.debug("too_detailed", step=step)
"""

SCRIPT = """
import asyncio
import structlog
import other_module
from gateway.logging import configure_logging

configure_logging("json")


async def call(call_id):
    # As Call.run does: bind in the call's task, then start the parts as new tasks.
    structlog.contextvars.bind_contextvars(call_id=call_id)
    await asyncio.sleep(0)
    await asyncio.gather(*(asyncio.create_task(other_module.work(n)) for n in range(2)))
    structlog.contextvars.unbind_contextvars("call_id")


async def main():
    await asyncio.gather(call("cg_one"), call("cg_two"))
    other_module.log.warning("outside_calls", secret_free=True)


asyncio.run(main())
"""


@pytest.fixture(scope="module")
def json_lines(tmp_path_factory) -> list[dict]:
    directory: Path = tmp_path_factory.mktemp("logging")
    (directory / "other_module.py").write_text(textwrap.dedent(OTHER_MODULE))
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=30, cwd=directory
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    return [json.loads(line) for line in result.stderr.splitlines()]


def test_every_line_is_json_with_event_level_timestamp(json_lines: list[dict]):
    assert len(json_lines) == 5  # 2 calls x 2 tasks at info, debug filtered, 1 warning
    for line in json_lines:
        assert {"event", "level", "timestamp"} <= line.keys()
        stamp = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
        assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0
    assert {line["level"] for line in json_lines} == {"info", "warning"}
    assert all(line["event"] != "too_detailed" for line in json_lines)


def test_call_id_reaches_tasks_created_after_binding(json_lines: list[dict]):
    in_tasks = sorted((line["call_id"], line["step"]) for line in json_lines[:-1])
    assert in_tasks == [("cg_one", 0), ("cg_one", 1), ("cg_two", 0), ("cg_two", 1)]
    assert all(line["event"] == "in_task" for line in json_lines[:-1])
    last = json_lines[-1]
    assert last["event"] == "outside_calls" and "call_id" not in last
