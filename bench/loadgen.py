"""N concurrent simulated Twilio calls against a running gateway, from one process.

Every call posts the voice webhook, opens the media socket with the token from the TwiML,
and then speaks, paced by one shared 5 ms tick that serves a quarter of the calls each time
(so, as from a real carrier, calls' frames arrive at different phases of the 20 ms frame):
silence until the greeting has played, real speech (pre-encoded Asterisk prompts) with pauses
between turns, and every `barge_in_every`-th turn it talks over the agent's answer. A reader
per call models the handset's playout (`bench.farend`) and records gaps, clears, answers and
failures."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from bench.farend import AnswerTracker, CallStats, FarEnd
from bench.server import standin_answer_secs
from bench.twilio_wire import SILENCE_B64, EncodedTurn, TwilioWire, classify, encode_turn
from gateway.simulated_audio import load_caller_wav
from gateway.simulated_twilio import TwilioDialect

TICK = 0.02
PHASES = 4
"""Calls are spread over this many phases of the 20 ms frame (one phase per 5 ms tick)."""


def frames_in(secs: float) -> int:
    """How many 20 ms frames last `secs` seconds."""
    return round(secs / TICK)


@dataclass(frozen=True)
class LoadOptions:
    gateway: str
    calls: int
    call_secs: float = 30.0
    """Each call hangs up at its first pause after this long."""
    ramp_secs: float = 3.0
    """Calls start evenly spread over this time."""
    agent: str | None = "bench"
    answer_frames: int = field(default_factory=lambda: frames_in(standin_answer_secs()))
    """Frames of every agent answer; by default as long as config/agents/bench.yaml speaks."""
    barge_in_every: int = 3
    barge_onset_secs: float = 0.1
    """The barge-in speech starts this long after the answer's first audio arrives."""
    pause_secs: tuple[float, float] = (0.3, 1.2)
    quiet_secs: float = 0.3
    greeting_timeout: float = 10.0
    answer_timeout: float = 5.0
    seed: int = 0


class SimCall:
    """One call's caller side: a turn-taking state machine stepped by the shared tick."""

    def __init__(self, index: int, options: LoadOptions, turns: Sequence[EncodedTurn]) -> None:
        self.stats = CallStats(index)
        self.options = options
        self.ws: ClientConnection | None = None
        self.done = False
        self._turns = turns
        self._rng = random.Random(options.seed * 100_003 + index)
        self._next_turn = index
        self._far = FarEnd()
        self._answers = AnswerTracker(self.stats, options.answer_frames)
        self._wire: TwilioWire | None = None
        self._outbox: list[str] = []
        self._t0 = 0.0
        self._first_frame_at: float | None = None
        self._frames_sent = 0
        self._state = "greeting"
        self._turn: EncodedTurn | None = None
        self._frame = 0
        self._onset_at: float | None = None
        self._speech_end: float | None = None
        self._answer_at: float | None = None
        self._pause_until = 0.0
        self._barge = False
        self._barge_pending = False
        self._last_audio = 0.0
        self._heard_agent = False

    # -- setup -------------------------------------------------------------------------------

    async def connect(self, http: httpx.AsyncClient) -> None:
        dialect = TwilioDialect(None, "+15005550006", f"+1500555{self.stats.index:04d}")
        request = dialect.webhook(self.options.gateway, self.options.gateway, self.options.agent)
        response = await http.post(request.url, data=request.form, headers=request.headers)
        if response.status_code != 200:
            raise RuntimeError(f"webhook answered HTTP {response.status_code}")
        answer = dialect.parse_answer(response.text)
        if answer.stream_url is None:
            raise RuntimeError(f"no stream in the answer: {answer.verbs} {answer.say!r}")
        url, headers = dialect.stream_target(self.options.gateway, answer.stream_url)
        self.ws = await connect(
            url, additional_headers=headers, compression=None, proxy=None,
            ping_interval=None, close_timeout=2, open_timeout=20,
        )
        self._wire = TwilioWire(dialect)
        await self.ws.send(dialect.connected())
        await self.ws.send(dialect.start(answer.parameters))
        self._t0 = time.monotonic()

    # -- gateway -> phone --------------------------------------------------------------------

    async def read(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                self._on_message(raw, time.monotonic())
        except ConnectionClosed:
            pass
        if not self.done:
            self.fail("closed_by_gateway")

    def _on_message(self, raw: str | bytes, now: float) -> None:
        try:
            kind, value = classify(raw)
        except (ValueError, KeyError, TypeError):
            self.stats.bad_messages += 1
            return
        if kind == "media":
            assert isinstance(value, int)
            dry = self._far.audio(value, now)
            if self._answers.media(value, now, dry and self._answers.open):
                self._answer_started(now)
            self._last_audio = now
        elif kind == "mark":
            self._answers.closed(cleared=False)
            self._outbox.extend(self._mark_echoes(self._far.mark(str(value), now)))
            if self._barge_pending and self._onset_at is not None:
                self.stats.barge_missed += 1  # the answer played out in full
                self._barge_pending = False
        elif kind == "clear":
            self._answers.closed(cleared=True)
            self._outbox.extend(self._mark_echoes(self._far.clear(now)))
            if self._barge_pending and self._onset_at is not None:
                self.stats.clear_ms.append((now - self._onset_at) * 1000)
                self._barge_pending = False
            else:
                self.stats.clears_unexpected += 1

    def _answer_started(self, now: float) -> None:
        if not self._heard_agent:
            self._heard_agent = True
            self.stats.greeting_ms = (now - self._t0) * 1000
        if self._speech_end is not None and self._answer_at is None:
            self._answer_at = now
            self.stats.turns_answered += 1
            self.stats.answer_ms.append((now - self._speech_end) * 1000)

    def _mark_echoes(self, names: list[str]) -> list[str]:
        assert self._wire is not None
        return [self._wire.dialect.mark(name) for name in names]

    # -- phone -> gateway --------------------------------------------------------------------

    def due(self, now: float) -> list[str]:
        """The messages to send at tick time `now`: mark echoes, then the frames due."""
        assert self._wire is not None
        out, self._outbox = self._outbox, []
        out.extend(self._mark_echoes(self._far.reached(now)))
        if self._first_frame_at is None:
            self._first_frame_at = now
        frames_due = min(round((now - self._first_frame_at) / TICK) + 1 - self._frames_sent, 5)
        for _ in range(frames_due):
            out.append(self._wire.media(self._step(now)))
            self._frames_sent += 1
            if self.done:
                out.append(self._wire.dialect.stop())
                break
        return out

    def _quiet(self, now: float) -> bool:
        return (
            not self._answers.open
            and not self._far.playing(now)
            and now - max(self._last_audio, self._far.plays_until) >= self.options.quiet_secs
        )

    def _step(self, now: float) -> str:
        """Advance the turn logic; the payload of the caller's next frame."""
        opts, state = self.options, self._state
        if state == "greeting":
            if self._heard_agent and self._quiet(now):
                self._pause(now)
            elif now - self._t0 > opts.greeting_timeout:
                self.fail("no_greeting")
        elif state == "pause" and now >= self._pause_until:
            if now - self._t0 >= opts.call_secs:
                self.done = True
            else:
                self._speak(now, barge=False)
        elif state == "waiting":
            self._wait(now)
        if self._state == "speaking":
            return self._next_frame(now)
        return SILENCE_B64

    def _wait(self, now: float) -> None:
        opts = self.options
        if self._answer_at is None:
            if now - (self._speech_end or now) > opts.answer_timeout:
                self._pause(now)
            return
        barge_next = (self.stats.turns_spoken + 1) % opts.barge_in_every == 0
        if barge_next and not self._barge:
            assert self._turn is not None
            next_turn = self._turns[self._next_turn % len(self._turns)]
            lead = next_turn.onset_frame * TICK
            if now - self._answer_at >= opts.barge_onset_secs - lead:
                self._speak(now, barge=True)
        elif self._quiet(now):
            self._pause(now)

    def _pause(self, now: float) -> None:
        self._state = "pause"
        self._pause_until = now + self._rng.uniform(*self.options.pause_secs)

    def _speak(self, now: float, barge: bool) -> None:
        self._state, self._frame, self._barge = "speaking", 0, barge
        self._turn = self._turns[self._next_turn % len(self._turns)]
        self._next_turn += 1
        self._onset_at = self._speech_end = self._answer_at = None
        self.stats.turns_spoken += 1
        if barge:
            self.stats.barge_ins += 1
            self._barge_pending = True

    def _next_frame(self, now: float) -> str:
        turn, k = self._turn, self._frame
        assert turn is not None
        if k == turn.onset_frame:
            self._onset_at = now
        if k == turn.last_voiced_frame:
            self._speech_end = now
        self._frame += 1
        if self._frame >= len(turn.payloads):
            self._state = "waiting"
            if self._barge_pending and self._answers.open is False:
                self._barge_pending = False
                self.stats.barge_missed += 1
        return turn.payloads[k]

    def fail(self, reason: str) -> None:
        if not self.done:
            self.stats.failed = reason
            self.done = True


@dataclass
class LoadResult:
    calls: list[CallStats]
    started_at: float
    all_connected_at: float | None
    first_done_at: float | None
    ended_at: float
    tick_late_ms: list[float]


async def run_load(options: LoadOptions, turns: Sequence[EncodedTurn]) -> LoadResult:
    """Run `options.calls` calls to the end; one failing call never stops the others."""
    calls = [SimCall(i, options, turns) for i in range(options.calls)]
    live: list[SimCall] = []
    late: list[float] = []
    closing: list[asyncio.Task[None]] = []
    started = time.monotonic()
    marks = {"connected": None, "first_done": None}
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(timeout=20.0, trust_env=False, limits=limits) as http:

        async def one(call: SimCall, at: float) -> None:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            try:
                await call.connect(http)
            except (OSError, TimeoutError, RuntimeError, ValueError, httpx.HTTPError,
                    WebSocketException) as exc:
                call.fail(f"connect: {type(exc).__name__}: {exc}"[:200])
                return
            live.append(call)
            if len(live) == len(calls):
                marks["connected"] = time.monotonic()
            await call.read()

        async def tick() -> None:
            next_at = time.monotonic()
            for phase in itertools.cycle(range(PHASES)):
                next_at += TICK / PHASES
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = time.monotonic()
                late.append((now - next_at) * 1000)
                for call in [c for c in live if c.stats.index % PHASES == phase]:
                    await _send_due(call, now)
                    if call.done:
                        live.remove(call)
                        marks["first_done"] = marks["first_done"] or now
                        assert call.ws is not None  # closing waits for the gateway: not here
                        closing.append(asyncio.create_task(call.ws.close()))
                if not live and all(c.done for c in calls):
                    await asyncio.gather(*closing)
                    return

        async with asyncio.TaskGroup() as tasks:
            ticker = tasks.create_task(tick())
            spread = options.ramp_secs / max(1, options.calls)
            for i, call in enumerate(calls):
                tasks.create_task(one(call, started + i * spread))
            await ticker
    return LoadResult(
        [c.stats for c in calls], started, marks["connected"], marks["first_done"],
        time.monotonic(), late,
    )


async def _send_due(call: SimCall, now: float) -> None:
    assert call.ws is not None
    try:
        for message in call.due(now):
            await call.ws.send(message)
    except (ConnectionClosed, OSError):
        call.fail("send_failed")


def load_turns(limit: int = 12) -> list[EncodedTurn]:
    """Real speech: sentence-like Asterisk prompts of 1.5-4 s, encoded once for every call."""
    from tests.corpus import select_prompts  # the corpus lives with the tests

    prompts = select_prompts(limit, seed=7, min_secs=1.5, max_secs=4.0)
    return [encode_turn(p.name, load_caller_wav(p.wav)) for p in prompts]
