"""Simulated calls through the real `callgate call` CLI, and waiting on a server's log, for the
cluster, limit and drain tests."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.gateway.server import CALLGATE, Server


def start_cli_call(
    gateway_url: str, env: dict[str, str], wavs: list[Path], *extra: str
) -> subprocess.Popen[str]:
    """`callgate call --provider twilio` against `gateway_url`, speaking `wavs` turn by turn."""
    args = [str(CALLGATE), "call", "--gateway", gateway_url, "--provider", "twilio"]
    for wav in wavs:
        args += ["--wav", str(wav)]
    return subprocess.Popen(
        [*args, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def finish_cli_call(
    process: subprocess.Popen[str], timeout: float = 120, exit_code: int = 0
) -> list[dict]:
    """Every JSON event the simulated caller printed; the summary is the last. A call that got
    no call id (refused) exits 1."""
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == exit_code, (err[-2000:], out[-3000:])
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert events and events[-1]["event"] == "summary", out
    return events


def wait_for_logs(
    server: Server, matches: Callable[[list[dict]], bool], timeout: float = 60
) -> list[dict]:
    """The server's log lines once `matches` holds for them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = server.logs()
        if matches(lines):
            return lines
        time.sleep(0.1)
    raise AssertionError(f"log condition not met in {timeout} s: {server.log_path.read_text()}")


def events_named(lines: list[dict], name: str) -> list[dict]:
    return [line for line in lines if line.get("event") == name]
