"""The media stream of a simulated call: the phone's half of Media Streams, turn by turn.

Caller frames go out on a 20 ms monotonic clock (silence between turns); agent audio is played
out at line rate by `Playout`, so marks come back when heard and `clear` cuts the answer short.
The turn logic waits for the agent to finish (quiet for `quiet_secs`) before speaking the next
WAV, or talks over the first answer at `barge_in_at`, and measures what a caller would feel.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.simulated_audio import FRAME_SECS, ULAW_SILENCE, CallerAudio
from gateway.simulated_playback import Playout
from gateway.simulated_twilio import Inbound

if TYPE_CHECKING:
    from gateway.simulated_call import CallOptions


class Dialect(Protocol):
    """A provider's wire format, as the phone end speaks it (see `TwilioDialect`)."""

    stream_sid: str

    def connected(self) -> str | None: ...  # None: the provider sends no greeting
    def start(self, parameters: dict[str, str]) -> str: ...
    def media(self, ulaw: bytes | memoryview, chunk: int, timestamp_ms: int) -> str: ...
    def mark(self, name: str) -> str: ...
    def cleared(self, marks: list[str]) -> list[str]: ...  # what answers a clear
    def dtmf(self, digit: str) -> str: ...
    def stop(self) -> str | None: ...  # None: hanging up is closing the socket
    def parse(self, raw: str | bytes) -> Inbound: ...


@dataclass
class _Turn:
    audio: CallerAudio
    onset_at: float | None = None  # media time the first voiced frame was sent
    speech_end: float | None = None  # media time the last voiced frame was sent
    answer_at: float | None = None  # media time the first agent audio after speech_end arrived


class MediaSession:
    """The media stream of one call: caller frames out, agent audio played, turns taken."""

    def __init__(
        self,
        dialect: Dialect,
        audio: list[CallerAudio],
        options: CallOptions,
        event: Callable[..., Any],
    ) -> None:
        self.dialect, self.options, self.event = dialect, options, event
        barge = options.barge_in_at is not None
        if barge and len(audio) == 1:
            audio = [audio[0], audio[0]]
        self.turns = [_Turn(a) for a in audio]
        self._barge_turn = 1 if barge else None
        self.playout = Playout()
        self.hangup_by: str | None = None
        self.end_at = 0.0
        self.first_audio_at: float | None = None
        self.barge_clear_ms: float | None = None
        self._ws: ClientConnection | None = None
        self._t0 = 0.0
        self._phase: Literal["greeting", "speaking", "answer"] = "greeting"
        self._turn = -1
        self._frame = 0  # next frame of the current turn's audio
        self._heard_agent = False
        self._agent_active = False
        self._last_rx = 0.0

    def _now(self) -> float:
        return time.monotonic() - self._t0

    async def run(self, ws_url: str, headers: dict[str, str], parameters: dict[str, str]) -> None:
        async with connect(
            ws_url,
            additional_headers=headers,
            compression=None,
            proxy=None,
            ping_interval=None,
            close_timeout=2,
        ) as ws:
            self._ws = ws
            self.event("ws_open", url=ws_url)
            hello = self.dialect.connected()
            if hello is not None:
                await ws.send(hello)
            start = self.dialect.start(parameters)
            self._t0 = time.monotonic()
            await ws.send(start)
            self.event("start_sent", stream_sid=self.dialect.stream_sid)
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._read())
                tasks.create_task(self._pace())

    async def send_dtmf(self, digit: str) -> None:
        """Press a key, as the provider reports it on the media stream."""
        if self._ws is not None:
            await self._ws.send(self.dialect.dtmf(digit))

    # -- gateway -> phone --------------------------------------------------------------------

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                now = self._now()
                try:
                    msg = self.dialect.parse(raw)
                except ValueError as exc:
                    self.event("error", stage="media", message=str(exc))
                    continue
                if msg.kind == "media":
                    await self._on_media(msg.audio, now)
                elif msg.kind == "mark":
                    await self._echo(self.playout.push_mark(msg.name, now))
                elif msg.kind == "clear":
                    await self._on_clear(now)
        except ConnectionClosed:
            pass
        self._finish("agent")

    async def _on_media(self, audio: bytes, now: float) -> None:
        if self.first_audio_at is None:
            self.first_audio_at = now
        self._last_rx = now
        if not self._agent_active:
            self._agent_active = self._heard_agent = True
            self.event("agent_audio_started", media_t=round(now, 3))
        if self._turn >= 0:
            turn = self.turns[self._turn]
            if turn.speech_end is not None and turn.answer_at is None:
                turn.answer_at = now
        await self._echo(self.playout.push_audio(audio, now))

    async def _on_clear(self, now: float) -> None:
        dropped = self.playout.dropped_secs
        marks = self.playout.clear(now)
        self.event("clear_received", dropped_ms=round((self.playout.dropped_secs - dropped) * 1000))
        if self._barge_turn is not None and self.barge_clear_ms is None:
            onset = self.turns[self._barge_turn].onset_at
            if onset is not None and now >= onset:
                self.barge_clear_ms = round((now - onset) * 1000, 1)
        for message in self.dialect.cleared(marks):
            await self._ws.send(message)
        self.event("clear_answered", dropped_marks=marks)

    async def _echo(self, marks: list[str]) -> None:
        assert self._ws is not None
        for name in marks:
            await self._ws.send(self.dialect.mark(name))
            self.event("mark_echoed", name=name)

    # -- phone -> gateway --------------------------------------------------------------------

    async def _pace(self) -> None:
        assert self._ws is not None
        sent = 0
        try:
            while self.hangup_by is None:
                delay = self._t0 + sent * FRAME_SECS - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self.hangup_by is not None:
                    break
                now = self._now()
                await self._echo(self.playout.advance(now))
                if not self._step(now):
                    self._finish("caller")
                    goodbye = self.dialect.stop()
                    if goodbye is not None:
                        await self._ws.send(goodbye)
                    await self._ws.close()
                    break
                frame = self._next_frame(now)
                await self._ws.send(self.dialect.media(frame, sent + 1, sent * 20))
                sent += 1
        except ConnectionClosed:
            self._finish("agent")

    def _step(self, now: float) -> bool:
        """Advance the turn logic at media time `now`; False means: hang up now."""
        opts = self.options
        if opts.hangup_after is not None and now >= opts.hangup_after:
            return False
        quiet = not self.playout.playing and (
            now - max(self._last_rx, self.playout.idle_since) >= opts.quiet_secs
        )
        if self._agent_active and quiet:
            self._agent_active = False
            self.event("agent_audio_stopped", media_t=round(self.playout.idle_since, 3))
        if self._phase == "greeting":
            if self._heard_agent and quiet:
                self._start_turn(0)
            elif now >= opts.greeting_timeout:
                self.event("greeting_timeout", after_secs=opts.greeting_timeout)
                self._start_turn(0)
            return True
        if self._phase != "answer":
            return True
        turn = self.turns[self._turn]
        if turn.answer_at is None:
            assert turn.speech_end is not None
            if now - turn.speech_end < opts.answer_timeout:
                return True
            self.event("no_answer", turn=self._turn, after_secs=opts.answer_timeout)
        elif self._turn + 1 == self._barge_turn:
            assert opts.barge_in_at is not None
            if self._agent_active and now - turn.answer_at >= opts.barge_in_at:
                self._start_turn(self._turn + 1, barge=True)
                return True
            if not quiet:
                return True
            self.event("barge_in_missed", reason="answer ended before barge_in_at")
            self._barge_turn = None
        elif not quiet:
            return True
        if self._turn + 1 < len(self.turns):
            self._start_turn(self._turn + 1)
            return True
        return False

    def _start_turn(self, index: int, barge: bool = False) -> None:
        self._phase, self._turn, self._frame = "speaking", index, 0
        self.event("caller_turn", turn=index, wav=str(self.turns[index].audio.path), barge_in=barge)

    def _next_frame(self, now: float) -> bytes | memoryview:
        if self._phase != "speaking":
            return ULAW_SILENCE
        turn, k = self.turns[self._turn], self._frame
        if k == turn.audio.onset_frame:
            turn.onset_at = now
            self.event("caller_speech_started", turn=self._turn, media_t=round(now, 3))
        if k == turn.audio.last_voiced_frame:
            turn.speech_end = now
            self.event("caller_speech_ended", turn=self._turn, media_t=round(now, 3))
        self._frame += 1
        if self._frame >= turn.audio.frames:
            self._phase = "answer"
        return turn.audio.frame(k)

    def _finish(self, by: str) -> None:
        if self.hangup_by is not None:
            return
        self.hangup_by = by
        self.end_at = self._now()
        self.playout.advance(self.end_at)
        self.event("hangup", by=by, media_t=round(self.end_at, 3))

    def latencies_ms(self) -> list[float]:
        return [
            round((t.answer_at - t.speech_end) * 1000, 1)
            for t in self.turns
            if t.answer_at is not None and t.speech_end is not None
        ]
