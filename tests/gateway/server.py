"""A real `callgate serve` process on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[2]
CALLGATE = Path(sys.executable).with_name("callgate")

TEST_AGENT = {
    "greeting": "Hello, how can I help?",
    "llm": {
        "provider": "scripted",
        "intents": [
            {
                "name": "goodbye",
                "keywords": ["goodbye"],
                "reply": "Goodbye!",
                "tool": "end_call",
            }
        ],
        "fallback": "Okay.",
    },
}
"""A terse agent, so that many caller turns fit in a short test call."""

LONG_REPLY = (
    "Let me tell you about our opening hours and our services in some detail. "
    "We are open from nine in the morning until six in the evening on weekdays. "
    "On Saturdays we open a little later and close early in the afternoon. "
    "Is there anything else you would like to know?"
)
CHATTY_AGENT = {
    "greeting": "Hi.",
    "llm": {"provider": "scripted", "fallback": LONG_REPLY},
    "interruptions": {"min_speech_secs": 0.3},
}
"""An agent with a long answer to talk over."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen[str]
    log_path: Path
    env: dict[str, str]

    def logs(self) -> list[dict]:
        """The server's JSON log lines so far."""
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                return self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def write_config(directory: Path, agents: dict[str, dict], **settings: object) -> Path:
    """A config directory: callgate.yaml with `settings` and one YAML per agent."""
    agents_dir = directory / "agents"
    agents_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "config" / "agents" / "default.yaml", agents_dir / "default.yaml")
    for name, agent in agents.items():
        (agents_dir / f"{name}.yaml").write_text(yaml.safe_dump(agent))
    config = {"log_format": "json", **settings}
    path = directory / "callgate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_server(config: Path, env: dict[str, str], log_path: Path) -> Server:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    full_env = {**os.environ, "CALLGATE_PUBLIC_URL": url, **env}
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(CALLGATE), "serve", "--config", str(config), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            text=True,
        )
    server = Server(url, process, log_path, full_env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited {process.returncode}: {log_path.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server not ready in 60 s: {log_path.read_text()}")
