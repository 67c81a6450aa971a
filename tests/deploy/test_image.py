"""The edge image, built from the Dockerfile on a debootstrap base and run from its own
filesystem as its own user: ready in time, answers a simulated Twilio call with the offline
agent, and drains on SIGTERM. See image_tools for how, without a container engine."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from gateway.settings import ServerSettings, SipSettings
from tests.corpus import asterisk_prompts
from tests.deploy.image_tools import (
    ImageConfig,
    Podman,
    chroot_command,
    debootstrap,
    require_tools,
)
from tests.gateway.server import CALLGATE, REPO, free_port

# All timed (not only the tests that report figures), so that one pass runs the whole module
# and the image is built once.
pytestmark = [pytest.mark.slow, pytest.mark.timed]

COLD_START_TARGET_SECS = 3.0
GREETING_TARGET_MS = 500.0
COMPILERS = ("usr/bin/gcc", "usr/bin/cc", "usr/bin/g++", "usr/bin/make")


@dataclass
class Image:
    rootfs: Path
    config: ImageConfig
    timings: dict[str, float]
    started: float


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    url: str
    port: int
    env: dict[str, str]
    log: Path
    cold_start_secs: float

    def logs(self) -> list[dict]:
        lines = self.log.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    require_tools()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="callgate-image-", dir="/var/tmp"))
    podman = Podman(work)
    timings: dict[str, float] = {}
    try:
        mark = time.monotonic()
        debootstrap(work / "base")
        podman.import_rootfs(work / "base", "callgate-base")
        timings["base_secs"] = time.monotonic() - mark
        mark = time.monotonic()
        podman.build(REPO, "callgate-test", "localhost/callgate-base")
        timings["build_secs"] = time.monotonic() - mark
        config = podman.config("callgate-test")
        mark = time.monotonic()
        podman.export("callgate-test", work / "rootfs")
        timings["export_secs"] = time.monotonic() - mark
        podman.remove_all()  # the exported filesystem is all the tests need from here on
        shutil.rmtree(work / "base")
        yield Image(work / "rootfs", config, timings, started)
    finally:
        try:
            podman.remove_all()
        finally:
            shutil.rmtree(work, ignore_errors=True)
        assert not work.exists(), f"{work} could not be removed"


@pytest.fixture(scope="module")
def server(image: Image) -> Iterator[Running]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **image.config.env,
        "CALLGATE_SECRET": secrets.token_hex(16),
        "CALLGATE_PUBLIC_URL": url,
        "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
    }
    command = [*image.config.entrypoint, "--host", "127.0.0.1", "--port", str(port)]
    log = image.rootfs.parent / "server.log"
    with log.open("wb") as out:
        started = time.monotonic()
        process = subprocess.Popen(
            chroot_command(image.rootfs, image.config, command),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        cold_start = _wait_ready(process, url, log) - started
        yield Running(process, url, port, env, log, cold_start)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> float:
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=1) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"server exited {process.returncode}:\n{log.read_text()[-4000:]}")
            try:
                if http.get(f"{url}/readyz").status_code == 200:
                    return time.monotonic()
            except httpx.TransportError:
                pass
            time.sleep(0.02)
    pytest.fail(f"not ready in 60 s:\n{log.read_text()[-4000:]}")


def test_image_is_non_root_small_and_exposes_its_ports(image: Image, report_figure) -> None:
    config = image.config
    uid, _, gid = config.user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit(), config.user
    rtp = SipSettings().rtp_ports
    assert config.exposed == {f"{ServerSettings().port}/tcp", "5060/udp", f"{rtp}/udp"}
    assert config.entrypoint == ["callgate", "serve"]
    assert config.healthcheck[0] == "CMD" and "/healthz" in config.healthcheck[-1]
    for path in COMPILERS:
        assert not (image.rootfs / path).exists(), f"{path} in the final image"
    assert not (image.rootfs / "opt/callgate/bin/pip").exists()
    assert not list((image.rootfs / "root").glob(".cache/pip"))
    for model in ("silero_vad.onnx", "smart-turn-v3.2-cpu.onnx", "whisper-tiny.en/model.bin"):
        assert (image.rootfs / "opt/models" / model).stat().st_mode & 0o004, model
    report_figure("image_size_mb", round(config.size_bytes / 1e6))
    for name, secs in image.timings.items():
        report_figure(f"image_{name}", round(secs, 1))


def test_ready_within_three_seconds_as_the_image_user(
    image: Image, server: Running, report_figure
) -> None:
    report_figure("image_cold_start_to_ready_secs", round(server.cold_start_secs, 2))
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
    assert uid == image.config.user.partition(":")[0]
    workdir = Path(f"/proc/{server.process.pid}/cwd").resolve()
    assert workdir == image.rootfs / image.config.workdir.lstrip("/")
    assert workdir.stat().st_uid == int(uid)  # relative recording directories land here
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
    assert server.cold_start_secs <= COLD_START_TARGET_SECS


def test_healthcheck_command_runs_in_the_image(image: Image, server: Running) -> None:
    """The HEALTHCHECK's own command (port adjusted), with the image's Python, as its user."""
    command = [part.replace(":8080/", f":{server.port}/") for part in image.config.healthcheck[1:]]
    checked = subprocess.run(
        chroot_command(image.rootfs, image.config, command),
        env=server.env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr[-2000:]


def test_simulated_twilio_call_is_answered_from_the_image(
    image: Image, server: Running, tmp_path: Path, report_figure
) -> None:
    hours = next(p for p in asterisk_prompts() if p.name == "hours")
    agent = yaml.safe_load((image.rootfs / "etc/callgate/agents/default.yaml").read_text())
    hours_reply = next(i["reply"] for i in agent["llm"]["intents"] if i["name"] == "hours")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CALLGATE_", "TWILIO_"))},
        "CALLGATE_PUBLIC_URL": server.url,
        "TWILIO_AUTH_TOKEN": server.env["TWILIO_AUTH_TOKEN"],
    }
    args = [str(CALLGATE), "call", "--gateway", server.url, "--provider", "twilio"]
    call = subprocess.run(
        [*args, "--wav", str(hours.wav), "--out", str(tmp_path / "agent.wav")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert call.returncode == 0, (call.stderr[-2000:], call.stdout[-3000:])
    summary = json.loads(call.stdout.splitlines()[-1])
    assert summary["event"] == "summary"
    said = [(turn["role"], turn["text"]) for turn in summary["transcript"]]
    assert said[0] == ("assistant", agent["greeting"]), said
    assert ("assistant", hours_reply) in said[2:], said
    greeting_ms = summary["latency_ms"]["first_greeting_audio"]
    report_figure("image_first_greeting_audio_ms", greeting_ms)
    report_figure(
        "image_end_of_speech_to_first_audio_ms",
        summary["latency_ms"]["end_of_speech_to_first_audio"],
    )
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line[:6] == "VmRSS:")
    report_figure("image_server_rss_mb_after_call", round(rss_kb / 1024))
    assert greeting_ms is not None and greeting_ms <= GREETING_TARGET_MS


def test_sigterm_reaches_the_server_and_it_drains(
    image: Image, server: Running, report_figure
) -> None:
    server.process.terminate()
    assert server.process.wait(timeout=30) == 0, server.log.read_text()[-4000:]
    events = [line.get("event") for line in server.logs()]
    assert "drain_started" in events and "drain_done" in events, events[-20:]
    report_figure("image_test_wall_secs", round(time.monotonic() - image.started, 1))
