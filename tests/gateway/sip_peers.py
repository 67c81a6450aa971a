"""sipp (Debian `sip-tester`) as a real SIP peer for end-to-end tests, running one of the
scenarios in tests/gateway/sipp/, loopback only. (baresip: tests/gateway/baresip_peer.py.)

Each sipp run gets its own work directory holding a copy of the scenario, the pcaps it plays
(`play_pcap_audio` names them relative to it) and the traces it writes (-trace_msg, -trace_err,
-trace_stat), which `SippResult` reads back so a failing test shows the SIP exchange.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tests.corpus import skip_or_fail

SCENARIOS = Path(__file__).with_name("sipp")
SIPP_PCAPS = Path("/usr/share/sip-tester")
LOOPBACK = "127.0.0.1"
MEDIA_STEP = 4
"""sipp's [auto_media_port] is media_port + 4 * (call number - 1); sipp itself binds
media_port and media_port + 2, so the scenarios put each call's media at [auto_media_port+4]."""


def tool(name: str) -> str:
    """The path of a Debian tool the real-peer tests need (skip, or fail under CI=true)."""
    path = shutil.which(name)
    if path is None:
        skip_or_fail(f"{name} not installed; run tests/setup.sh")
    return path


_handed_out: set[int] = set()


def free_udp_block(count: int, step: int = 1, low: int = 20000, high: int = 60000) -> int:
    """A base port such that base + i * step (i < count) are free for UDP and TCP now and
    were not handed out before by this process."""
    for base in range(low + os.getpid() % 97 * 100, high, max(count * step, 10)):
        ports = [base + i * step for i in range(count)]
        if not _handed_out.intersection(ports) and all(_free(port) for port in ports):
            _handed_out.update(range(base, ports[-1] + 1))
            return base
    raise RuntimeError(f"no block of {count} free ports")


def _free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                return False
    return True


def media_ports(media_port: int, calls: int) -> list[int]:
    """Where calls 1..calls of a sipp run with -mp `media_port` put their RTP."""
    return [media_port + MEDIA_STEP * n for n in range(1, calls + 1)]


_CALL_ID = re.compile(r"^Call-ID:\s*(\S+)", re.M | re.I)
_CSEQ = re.compile(r"^CSeq:\s*(\d+ \w+)", re.M | re.I)
_TRACE_ENTRY = re.compile(
    r"^-{10,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\n"
    r"\w+ message (sent|received)[^\n]*\n(.*?)(?=^-{10,} \d{4}|\Z)",
    re.M | re.S,
)


@dataclass(frozen=True)
class Exchange:
    at: float  # time.time() scale (sipp stamps its trace in local time)
    direction: str  # "sent" or "received"
    first_line: str  # e.g. "SIP/2.0 200 OK" or "BYE sip:... SIP/2.0"
    cseq: str  # e.g. "2 INVITE"


@dataclass
class SippResult:
    returncode: int
    stats: dict[str, str]  # the last line of -trace_stat
    messages: str  # -trace_msg: every SIP message sent and received
    errors: str  # -trace_err: unexpected messages
    output: str

    @property
    def successful(self) -> int:
        return int(self.stats.get("SuccessfulCall(C)", 0))

    @property
    def failed(self) -> int:
        return int(self.stats.get("FailedCall(C)", 0))

    def call_ids(self) -> list[str]:
        """The Call-IDs in the trace, in order of first appearance."""
        return list(dict.fromkeys(_CALL_ID.findall(self.messages)))

    def exchanges(self) -> list[Exchange]:
        """Every SIP message of the trace: when, which way, its first line and CSeq."""
        found = []
        for stamp, direction, text in _TRACE_ENTRY.findall(self.messages):
            when = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()
            cseq = _CSEQ.search(text)
            first = text.strip().splitlines()[0] if text.strip() else ""
            found.append(Exchange(when, direction, first, cseq.group(1) if cseq else ""))
        return found

    def explain(self, chars: int = 6000) -> str:
        """For assertion messages: the exit code, the errors and the end of the SIP trace."""
        return (
            f"sipp exit {self.returncode}, successful {self.successful}, failed {self.failed}\n"
            f"--- errors ---\n{self.errors[-2000:]}\n--- output ---\n{self.output[-1500:]}\n"
            f"--- SIP trace (last {chars} chars) ---\n{self.messages[-chars:]}"
        )


@dataclass
class Sipp:
    """One sipp process running `scenario` (a file in tests/gateway/sipp/) from `workdir`."""

    scenario: str
    workdir: Path
    remote: str | None = None  # HOST:PORT to call; None for a UAS scenario
    service: str = "agent"  # the user part of the INVITE's request URI
    local_port: int = 0
    media_port: int = 0
    calls: int = 1
    rate: float = 10.0  # new calls per second
    limit: int | None = None  # at most this many calls at once
    call_secs: float = 6.0  # the length of each `<pause/>` in the scenario (-d)
    timeout_secs: float = 60.0
    username: str | None = None  # answers a 401/407 with these credentials
    password: str | None = None
    extra: list[str] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.local_port:
            self.local_port = free_udp_block(1)
        if not self.media_port:
            self.media_port = free_udp_block(MEDIA_STEP * (self.calls + 1) + 1, low=30000)
        shutil.copy(SCENARIOS / self.scenario, self.workdir / self.scenario)

    @property
    def name(self) -> str:
        return Path(self.scenario).stem

    def file(self, suffix: str) -> Path:
        return self.workdir / f"{self.name}{suffix}"

    def args(self) -> list[str]:
        args = [
            tool("sipp"),
            *([self.remote] if self.remote else []),
            "-sf", self.scenario,
            "-i", LOOPBACK, "-p", str(self.local_port),
            "-mi", LOOPBACK, "-mp", str(self.media_port),
            "-ci", LOOPBACK, "-cp", str(free_udp_block(1)),
            "-s", self.service,
            "-m", str(self.calls),
            "-r", str(self.rate),
            "-l", str(self.limit or self.calls),
            "-d", str(int(self.call_secs * 1000)),
            "-timeout", f"{int(self.timeout_secs)}s", "-timeout_error",
            "-nostdin",
            "-trace_msg", "-message_file", str(self.file("_messages.log")),
            "-trace_err", "-error_file", str(self.file("_errors.log")),
            "-trace_stat", "-stf", str(self.file("_stats.csv")), "-fd", "1",
            "-trace_screen", "-screen_file", str(self.file("_screen.log")),
        ]
        if self.username is not None:
            args += ["-au", self.username, "-ap", self.password or ""]
        return [*args, *self.extra]

    def start(self) -> Sipp:
        self.process = subprocess.Popen(
            self.args(), cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True,
        )
        return self

    def wait(self) -> SippResult:
        assert self.process is not None, "start() first"
        try:
            output, _ = self.process.communicate(timeout=self.timeout_secs + 15)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGUSR1)  # soft exit: finishes its calls
            try:
                output, _ = self.process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                output, _ = self.process.communicate()
        return SippResult(
            self.process.returncode, self._stats(), _read(self.file("_messages.log")),
            _read(self.file("_errors.log")), output,
        )

    def run(self) -> SippResult:
        return self.start().wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def _stats(self) -> dict[str, str]:
        path = self.file("_stats.csv")
        if not path.is_file():
            return {}
        rows = list(csv.reader(path.open(), delimiter=";"))
        return dict(zip(rows[0], rows[-1], strict=False)) if len(rows) > 1 else {}


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""

