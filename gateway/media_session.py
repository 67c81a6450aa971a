"""The WebSocket edge shared by Twilio and Plivo: bytes in and out of a sans-I/O core.

The core turns text frames into events and events into text frames; this class only moves
them, converts G.711 at 8 kHz to and from canonical PCM (agent audio that is mu-law already
goes out as it is), and decides what a protocol error costs: a non-fatal one drops that
message, a fatal one ends this call (and only this call).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect

from pipeline.frames import AudioFrame
from providers.events import AudioIn, CallStopped, Event, ProtocolError
from providers.g711_audio import G711Audio

log = structlog.get_logger()


class MediaProtocol(Protocol):
    def receive_text(self, message: str) -> list[Event]: ...
    def send_audio(self, mulaw: bytes) -> str: ...
    def send_mark(self, name: str) -> str: ...
    def send_clear(self) -> str: ...


class CallEnded(Exception):
    """The stream broke in a way that ends this call."""


class WebSocketMediaSession:
    def __init__(self, websocket: WebSocket, protocol: MediaProtocol):
        self.websocket = websocket
        self.protocol = protocol
        self.audio = G711Audio("ulaw")
        self.ignored_messages = 0
        self._media_secs = 0.0
        self._resampling = False
        """PCM went out since the last mark or clear: the resampler may hold its tail."""

    async def next_events(self) -> list[Event]:
        """The events of the next inbound text frame ([] if it was ignored)."""
        try:
            message = await self.websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            return [CallStopped("disconnected")]
        if message["type"] == "websocket.disconnect":
            return [CallStopped("disconnected")]
        text = message.get("text")
        if text is None:  # a binary frame: neither provider sends one
            return self._ignore("binary frame")
        try:
            return self.protocol.receive_text(text)
        except ProtocolError as exc:
            if exc.fatal:
                raise CallEnded(str(exc)) from exc
            return self._ignore(str(exc))

    def _ignore(self, error: str) -> list[Event]:
        self.ignored_messages += 1
        if self.ignored_messages <= 5:  # a flood of bad messages must not flood the log
            log.warning("media_message_ignored", error=error)
        return []

    async def events(self) -> AsyncIterator[Event]:
        """Inbound events until the stream stops; a fatal protocol error stops it too."""
        while True:
            try:
                events = await self.next_events()
            except CallEnded as exc:
                log.warning("media_stream_broken", error=str(exc))
                yield CallStopped(f"protocol_error: {exc}")
                return
            for event in events:
                yield event
                if isinstance(event, CallStopped):
                    return

    def frame(self, audio: AudioIn) -> AudioFrame:
        """Caller audio as a canonical frame (16 kHz PCM)."""
        pcm = self.audio.inbound(audio.payload)
        frame = AudioFrame(pcm, timestamp=self._media_secs)
        self._media_secs += frame.duration
        return frame

    async def send_audio(self, audio: bytes, encoding: str = "pcm16k") -> None:
        """Agent audio: "pcm16k" is encoded for the wire, "ulaw8k" is sent as it is."""
        if encoding == "ulaw8k":
            await self._send_tail()  # PCM queued before this mu-law plays first
            payload = audio
        elif encoding == "pcm16k":
            payload = self.audio.outbound(audio)
            self._resampling = True
        else:
            raise ValueError(f"unknown audio encoding {encoding!r}")
        if payload:
            await self.websocket.send_text(self.protocol.send_audio(payload))

    async def send_mark(self, name: str) -> None:
        """The mark follows all audio before it, including the resampler's held-back tail."""
        await self._send_tail()
        await self.websocket.send_text(self.protocol.send_mark(name))

    async def send_clear(self) -> None:
        self.audio.flush_outbound()  # drop the cleared audio the resampler still holds
        self._resampling = False
        await self.websocket.send_text(self.protocol.send_clear())

    async def _send_tail(self) -> None:
        if not self._resampling:
            return
        self._resampling = False
        tail = self.audio.flush_outbound()
        if tail:
            await self.websocket.send_text(self.protocol.send_audio(tail))
