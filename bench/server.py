"""A `callgate serve` process for the benchmarks: one agent as the default, JSON logs to a file."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
AGENTS = REPO / "config" / "agents"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class BenchServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def logs(self) -> list[dict]:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                return self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def standin_answer_secs(agent: str = "bench") -> float:
    """How long the agent file's stand-in TTS speaks each sentence."""
    spec = yaml.safe_load((AGENTS / f"{agent}.yaml").read_text())
    return float(spec["tts"]["secs"])


def start_server(
    workdir: Path, agent: str, max_concurrent: int = 1000, answer_secs: float | None = None
) -> BenchServer:
    """Serve `config/agents/<agent>.yaml` as both `default` and `<agent>` on a free port;
    `answer_secs` sets how long the stand-in TTS speaks each sentence."""
    agents = workdir / "agents"
    agents.mkdir(parents=True, exist_ok=True)
    spec = yaml.safe_load((AGENTS / f"{agent}.yaml").read_text())
    if answer_secs is not None:
        spec["tts"]["secs"] = answer_secs
    for name in {"default", agent}:
        (agents / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    config = workdir / "callgate.yaml"
    settings = {"log_format": "json", "calls": {"max_concurrent": max_concurrent}}
    config.write_text(yaml.safe_dump(settings))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = workdir / "server.log"
    env = {**os.environ, "CALLGATE_PUBLIC_URL": url}
    for name in ("TWILIO_AUTH_TOKEN", "CALLGATE_API_KEY", "CALLGATE_CONFIG"):
        env.pop(name, None)
    callgate = Path(sys.executable).with_name("callgate")
    command = [str(callgate), "serve", "--config", str(config), "--host", "127.0.0.1"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*command, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env
        )
    server = BenchServer(url, process, log_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited {process.returncode}: {log_path.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1, trust_env=False).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server not ready in 120 s: {log_path.read_text()[-2000:]}")
