"""One SIP call's media: a UDP port pair (RTP, RTCP on port + 1) around the sans-I/O RTP cores.

A single task ticks every 20 ms on absolute deadlines (start + n * 20 ms, so it never drifts;
when more than 60 ms late it skips the missed ticks rather than bursting). Each tick pulls one
frame from the jitter buffer (an AudioIn for the call), sends one packet of the outgoing stream
(`providers.sip.rtp_output`: agent audio, DTMF, or comfort silence between turns; nothing on
hold), and every 5 s sends an RTCP sender report.

Symmetric RTP: the first valid packet locks the stream to its (SSRC, source address) and our
packets go to that address from then on, whatever the SDP said (NAT). Another source takes
over only once the locked one has been quiet for `SOURCE_SWITCH_SECS`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from dataclasses import asdict, dataclass
from functools import partial

import structlog

from pipeline.frames import AudioFrame
from providers.events import AudioIn, CallStopped, Dtmf, Event, PlaybackMarked
from providers.g711_audio import G711Audio
from providers.sip.jitter import JitterBuffer
from providers.sip.rfc4733 import DtmfReceiver, Rfc4733Error
from providers.sip.rtcp import RtcpError, build_sender_report, parse_rtcp
from providers.sip.rtp import ALAW_TO_ULAW, COMFORT_NOISE, RtpError, RtpPacket
from providers.sip.rtp_output import LAWS, RtpOutput
from providers.sip.sdp import Negotiated

log = structlog.get_logger()

TICK_SECS = 0.02
RESYNC_SECS = 0.06
REPORT_EVERY_TICKS = 250  # RTCP sender report every 5 s
SOURCE_SWITCH_SECS = 0.5
MAX_PENDING_EVENTS = 500
"""Caller audio (10 s) the call may fall behind on before frames are dropped."""
SENDING = frozenset({"sendrecv", "sendonly"})
DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})

Address = tuple[str, int]


class RtpPortPool:
    """Even RTP ports of a range, each with the odd port above it for RTCP.

    Freed ports go to the back, so a port's stale packets have time to die out before reuse.
    """

    def __init__(self, low: int, high: int) -> None:
        first = low + low % 2
        if not 0 < low <= high <= 65535 or first + 1 > high:
            raise ValueError(f"RTP port range {low}-{high} holds no even/odd port pair")
        self._free = deque(range(first, high, 2))

    def __len__(self) -> int:
        return len(self._free)

    def acquire(self) -> int:
        if not self._free:
            raise OSError("no free RTP port in the configured range")
        return self._free.popleft()

    def release(self, port: int) -> None:
        self._free.append(port)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, received: Callable[[bytes, Address], None]) -> None:
        self._received = received
        self.closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self._received(data, addr)

    def error_received(self, exc: OSError) -> None:
        """ICMP errors (the peer's port closed): the inactivity timeout deals with a dead peer."""


@dataclass(slots=True)
class RtpStats:
    packets_in: int = 0
    packets_out: int = 0
    ignored: int = 0
    dtmf_in: int = 0
    dtmf_out: int = 0
    rtcp_in: int = 0
    resyncs: int = 0
    frames_dropped: int = 0


class RtpSession:
    """Implements gateway.call.MediaSession (and so gateway.playout.MediaSink)."""

    def __init__(self, ports: RtpPortPool, local_port: int, timeout_secs: float = 30.0) -> None:
        self.local_port = local_port
        self.timeout_secs = timeout_secs
        self.stats = RtpStats()
        self._ports = ports
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self.jitter = JitterBuffer()
        self._dtmf_in = DtmfReceiver()
        self._inbound = G711Audio("ulaw")  # AudioIn is always mu-law
        self._output: RtpOutput | None = None  # from start() on
        self._direction = "sendrecv"
        self._remote: Address = ("", 0)
        self._rtcp_remote: Address | None = None
        self._source: tuple[int, Address] | None = None
        self._last_received = 0.0
        self._media_secs = 0.0
        self._frames_in = 0
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._closed = False

    @classmethod
    async def open(
        cls, bind_host: str, ports: RtpPortPool, timeout_secs: float = 30.0
    ) -> RtpSession:
        """Binds the first free even port of the pool, and the odd one above it for RTCP."""
        loop = asyncio.get_running_loop()
        for _ in range(len(ports)):
            port = ports.acquire()
            session = cls(ports, port, timeout_secs)
            try:
                session._rtp, _ = await loop.create_datagram_endpoint(
                    partial(_Datagrams, session._on_rtp), local_addr=(bind_host, port)
                )
                session._rtcp, _ = await loop.create_datagram_endpoint(
                    partial(_Datagrams, session._on_rtcp), local_addr=(bind_host, port + 1)
                )
            except OSError:  # taken by another process: try the next pair
                if session._rtp is not None:
                    session._rtp.close()
                ports.release(port)
                continue
            return session
        raise OSError("no bindable RTP port pair in the configured range")

    def start_negotiated(self, media: Negotiated) -> None:
        """`start` with what SDP offer/answer settled."""
        self.start(
            remote=(media.remote_host, media.remote_port),
            codec=media.codec,
            payload_type=media.payload_type,
            dtmf_payload_type=media.dtmf_payload_type,
            direction=media.direction,
        )

    def start(
        self,
        *,
        remote: Address,
        codec: str,
        payload_type: int,
        dtmf_payload_type: int | None,
        direction: str = "sendrecv",
    ) -> None:
        if codec not in LAWS:
            raise ValueError(f"codec {codec!r} is not PCMU or PCMA")
        if self._task is not None:
            raise RuntimeError("RTP session already started")
        self._output = RtpOutput(codec, payload_type, dtmf_payload_type, self._marked)
        self.update(remote=remote, direction=direction)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="rtp")

    def update(self, *, remote: Address, direction: str) -> None:
        """A new offer/answer (re-INVITE): hold is "recvonly" or "inactive"."""
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown media direction {direction!r}")
        if remote != self._remote:
            self._remote, self._source, self._rtcp_remote = remote, None, None
        self._direction = direction
        self._last_received = time.monotonic()

    async def events(self) -> AsyncIterator[Event]:
        while True:
            event = await self._events.get()
            yield event
            if isinstance(event, CallStopped):
                return

    def frame(self, audio: AudioIn) -> AudioFrame:
        """Caller audio as a canonical frame (16 kHz PCM)."""
        frame = AudioFrame(self._inbound.inbound(audio.payload), timestamp=self._media_secs)
        self._media_secs += len(audio.payload) / 8000
        return frame

    async def send_audio(self, audio: bytes, encoding: str = "pcm16k") -> None:
        """Queues agent audio: "pcm16k" (16 kHz PCM) or "ulaw8k" (8 kHz mu-law codes)."""
        self._started().audio(audio, encoding)

    async def send_mark(self, name: str) -> None:
        """Acknowledged with PlaybackMarked once everything queued before it has been sent."""
        self._started().mark(name)

    async def send_clear(self) -> None:
        """Drops queued audio and marks before the next tick (a DTMF event still finishes)."""
        self._started().clear()

    async def send_dtmf(self, digits: str) -> None:
        """Queues RFC 4733 events for `digits`; RuntimeError if telephone-event wasn't agreed."""
        self.stats.dtmf_out += self._started().dtmf(digits)

    def _started(self) -> RtpOutput:
        if self._output is None:
            raise RuntimeError("the RTP session is not started")
        return self._output

    def _marked(self, name: str) -> None:
        self._events.put_nowait(PlaybackMarked(name))

    def stop(self, reason: str) -> None:
        if not self._stopped:
            self._stopped = True
            self._events.put_nowait(CallStopped(reason))

    async def close(self) -> None:
        """Cancels the tick task, closes both sockets, frees the port (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.stop("closed")
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        for transport in (self._rtp, self._rtcp):
            if transport is not None:
                transport.close()
                await transport.get_protocol().closed  # the socket is closed, the port free
        self._ports.release(self.local_port)
        if self._output is not None:
            self.stats.packets_out = self._output.sender.packets_sent
        log.info(
            "rtp_session_closed",
            port=self.local_port,
            **asdict(self.stats),
            **{f"jitter_{k}": v for k, v in asdict(self.jitter.stats).items()},
        )

    # receiving

    def _on_rtp(self, data: bytes, source: Address) -> None:
        output = self._output
        if output is None or self._stopped:
            return
        try:
            packet = RtpPacket.parse(data)
        except RtpError as exc:
            self._ignore(str(exc))
            return
        kind = packet.payload_type
        if kind not in (output.payload_type, output.dtmf_payload_type, COMFORT_NOISE):
            self._ignore(f"payload type {kind}")
            return
        if not self._accept(packet.ssrc, source):
            self._ignore("foreign source")
            return
        self.stats.packets_in += 1
        if kind == output.payload_type and packet.payload:
            payload = (
                packet.payload if output.codec == "PCMU" else packet.payload.translate(ALAW_TO_ULAW)
            )
            self.jitter.push(packet.sequence, packet.timestamp, packet.ssrc, payload)
        elif kind == output.dtmf_payload_type:
            try:
                digit = self._dtmf_in.receive(packet.timestamp, packet.payload)
            except Rfc4733Error as exc:
                self._ignore(str(exc))
                return
            if digit is not None:
                self.stats.dtmf_in += 1
                self._events.put_nowait(Dtmf(digit))

    def _accept(self, ssrc: int, source: Address) -> bool:
        """Is this packet of the locked stream (locking or switching to it if it may)?"""
        now = time.monotonic()
        stream = (ssrc, source)
        if stream != self._source:
            if self._source is not None and now - self._last_received < SOURCE_SWITCH_SECS:
                return False
            if source != self._remote:
                log.info("rtp_remote_learned", signalled=self._remote, actual=source)
            if self._source is None or self._source[0] != ssrc:
                self._dtmf_in = DtmfReceiver()
            self._source, self._remote = stream, source
        self._last_received = now
        return True

    def _on_rtcp(self, data: bytes, source: Address) -> None:
        try:
            parse_rtcp(data)
        except RtcpError as exc:
            self._ignore(f"RTCP: {exc}")
            return
        self.stats.rtcp_in += 1
        if self._source is not None and source[0] == self._source[1][0]:
            self._rtcp_remote = source

    def _ignore(self, why: str) -> None:
        self.stats.ignored += 1
        if self.stats.ignored <= 5:  # a flood of bad packets must not flood the log
            log.warning("rtp_packet_ignored", port=self.local_port, error=why)

    # the clock

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        while not self._stopped:
            late = loop.time() - (start + tick * TICK_SECS)
            if late < 0:
                await asyncio.sleep(-late)
            elif late > RESYNC_SECS:  # the loop stalled: skip the missed ticks, never burst
                tick = int((loop.time() - start) / TICK_SECS)
                self.stats.resyncs += 1
            self._receive_tick()
            self._send_tick(tick)
            if tick % REPORT_EVERY_TICKS == REPORT_EVERY_TICKS - 1:
                self._report(tick)
            if (
                self._direction == "sendrecv"
                and time.monotonic() - self._last_received > self.timeout_secs
            ):
                log.warning("rtp_timeout", port=self.local_port, secs=self.timeout_secs)
                self.stop("rtp_timeout")
            tick += 1

    def _receive_tick(self) -> None:
        frame = self.jitter.pull()
        if frame is None:
            return
        if self._events.qsize() >= MAX_PENDING_EVENTS:
            self.stats.frames_dropped += 1
            return
        self._events.put_nowait(AudioIn(frame, timestamp_ms=self._frames_in * 20))
        self._frames_in += 1

    def _send_tick(self, tick: int) -> None:
        assert self._output is not None
        sending = self._direction in SENDING and self._remote[1] != 0
        packet = self._output.tick(tick, sending)
        if packet is not None and self._rtp is not None:
            self._rtp.sendto(packet, self._remote)

    def _report(self, tick: int) -> None:
        assert self._output is not None
        sender = self._output.sender
        if not sender.packets_sent or self._rtcp is None or not self._remote[1]:
            return
        report = build_sender_report(
            sender.ssrc,
            unix_time=time.time(),
            rtp_timestamp=sender.timestamp_at(tick),
            packet_count=sender.packets_sent,
            octet_count=sender.octets_sent,
            cname=f"callgate@{self.local_port}",
        )
        self._rtcp.sendto(report, self._rtcp_remote or (self._remote[0], self._remote[1] + 1))
