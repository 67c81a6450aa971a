"""baresip (Debian) as a real SIP peer for end-to-end tests: headless, commanded and watched
through its ctrl_tcp module, loopback only."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.gateway.sip_peers import LOOPBACK, free_udp_block, tool

BARESIP_CONFIG = """\
poll_method epoll
sip_listen {host}:{sip_port}
call_local_timeout 30
call_max_calls 1
audio_source aufile,{wav}
audio_player aubridge,{sink}
audio_alert aubridge,{sink}
rtp_ports {rtp_low}-{rtp_high}
jitter_buffer_delay 2-10
module_path {modules}
module g711.so
module aufile.so
module aubridge.so
module sndfile.so
module ctrl_tcp.so
module_tmp account.so
module_app menu.so
snd_path {recordings}
ctrl_tcp_listen {host}:{ctrl_port}
"""
"""Headless: the source plays a WAV (aufile), the player is a bridge nobody reads, and the
sndfile filter records what is decoded (`*-dec.wav`) and what is sent (`*-enc.wav`)."""


class Baresip:
    """A baresip user agent in `workdir`, saying `wav` (8 kHz 16-bit mono) once a call is up,
    commanded and watched through ctrl_tcp (netstring-framed JSON)."""

    def __init__(self, workdir: Path, wav: Path, modules: Path = Path("/usr/lib/baresip/modules")):
        self.workdir = workdir
        self.recordings = workdir / "recordings"
        self.recordings.mkdir(parents=True, exist_ok=True)
        sip_port = free_udp_block(2)  # baresip takes sip_port + 1 for TLS
        self.ctrl_port = free_udp_block(1)
        rtp_low = free_udp_block(20, low=40000)
        (workdir / "config").write_text(BARESIP_CONFIG.format(
            host=LOOPBACK, sip_port=sip_port, wav=wav, sink="nowhere", rtp_low=rtp_low,
            rtp_high=rtp_low + 19, modules=modules, recordings=self.recordings,
            ctrl_port=self.ctrl_port,
        ))
        (workdir / "accounts").write_text(f"<sip:caller@{LOOPBACK}>;regint=0;audio_codecs=PCMU\n")
        (workdir / "contacts").write_text("")
        self.log_path = workdir / "baresip.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._ctrl: socket.socket | None = None
        self._buffer = b""
        self.events: list[dict] = []  # every message so far
        self._unclaimed: list[dict] = []

    def __enter__(self) -> Baresip:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [tool("baresip"), "-f", str(self.workdir)], stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while self._ctrl is None:
            try:
                self._ctrl = socket.create_connection((LOOPBACK, self.ctrl_port), timeout=1)
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"baresip did not start: {self.log()}") from None
                time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._ctrl is not None:
            self._ctrl.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def command(self, command: str, params: str = "") -> dict:
        """Runs one command (e.g. "dial", "hangup") and returns its response."""
        assert self._ctrl is not None
        token = str(len(self.events) + time.monotonic_ns())
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._ctrl.sendall(b"%d:%s," % (len(body), body))
        return self._next(lambda m: m.get("response") and m.get("token") == token, 10)

    def wait_event(self, kind: str, timeout: float) -> dict:
        """The next event of type `kind` (e.g. "CALL_ESTABLISHED", "CALL_CLOSED")."""
        return self._next(lambda m: m.get("event") and m.get("type") == kind, timeout)

    def dec_recording(self) -> Path:
        """What baresip heard in the call: the decoded audio (8 kHz WAV)."""
        found = sorted(self.recordings.glob("*-dec.wav"))
        if not found:
            raise FileNotFoundError(f"no recording in {self.recordings}: {self.log()}")
        return found[-1]

    def _next(self, wanted: Callable[[dict], object], timeout: float) -> dict:
        assert self._ctrl is not None
        for message in self._unclaimed:
            if wanted(message):
                self._unclaimed.remove(message)
                return message
        deadline = time.monotonic() + timeout
        while True:
            message = self._take()
            if message is not None:
                self.events.append(message)
                if wanted(message):
                    return message
                self._unclaimed.append(message)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"baresip: nothing wanted in {timeout} s; seen {self.events}")
            self._ctrl.settimeout(remaining)
            try:
                chunk = self._ctrl.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise ConnectionError(f"baresip closed ctrl_tcp: {self.log()}")
            self._buffer += chunk

    def _take(self) -> dict | None:
        """One netstring ("<length>:<json>,") off the buffer, if a whole one is there."""
        length, colon, rest = self._buffer.partition(b":")
        if not colon or len(rest) < int(length) + 1:
            return None
        size = int(length)
        self._buffer = rest[size + 1 :]
        return json.loads(rest[:size])
