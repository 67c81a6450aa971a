"""Agent audio on the Twilio wire: a vendor's mu-law goes out byte for byte (no decode, no
resampling), from the loopback ElevenLabs and Cartesia fakes through the conversation, the
playout and the WebSocket media session; and what that saves per second of agent audio."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import numpy as np
import pytest

from gateway.media_session import WebSocketMediaSession
from gateway.playout import Playout
from pipeline.agent import AgentConfig
from pipeline.codecs import ulaw_to_pcm
from pipeline.conversation import Conversation, Services, State
from pipeline.resample import stream_resampler
from pipeline.tts.cartesia import CartesiaTTS
from pipeline.tts.elevenlabs import ElevenLabsTTS
from providers.twilio.media import TwilioMediaProtocol
from tests.fakes import cartesia_server, elevenlabs_server
from tests.fakes.cartesia_server import CartesiaFake
from tests.fakes.elevenlabs_server import ElevenLabsFake
from tests.providers.twilio.test_media import START

KEY = "test-key-0123456789"
FIRST, SECOND = "Hello, thanks for calling.", "How can I help you today?"


class Wire:
    """The WebSocket as the session sees it: what it sends, in order. Marks are echoed at
    once (`on_mark`), as if the caller had heard everything."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.on_mark = lambda name: None

    async def send_text(self, text: str) -> None:
        message = json.loads(text)
        self.sent.append(message)
        if message["event"] == "mark":
            self.on_mark(message["mark"]["name"])

    def media(self) -> list[bytes]:
        return [base64.b64decode(m["media"]["payload"]) for m in self.sent if m["event"] == "media"]


class Output:
    """What `Call` offers the conversation, minus call control."""

    def __init__(self, playout: Playout) -> None:
        self.play, self.mark, self.clear = playout.play, playout.mark, playout.clear

    async def hang_up(self) -> None: ...


def _session() -> tuple[WebSocketMediaSession, Wire]:
    wire = Wire()
    protocol = TwilioMediaProtocol()
    protocol.receive_text(START)
    return WebSocketMediaSession(wire, protocol), wire  # type: ignore[arg-type]


async def _greet(tts: ElevenLabsTTS | CartesiaTTS) -> Wire:
    """The agent's greeting, two sentences, spoken onto the wire (sent well ahead)."""
    session, wire = _session()
    playout = Playout(session, lead_secs=5.0)
    wire.on_mark = playout.marked
    services = Services(
        stt=None, llm=None, tts=tts, vad=None, denoiser=None, turn_detector=None,
    )  # type: ignore[arg-type]  # fmt: skip
    agent = AgentConfig(greeting=f"{FIRST} {SECOND}")
    conversation = Conversation(agent, services, Output(playout))
    tasks = [asyncio.create_task(playout.run()), asyncio.create_task(conversation.run())]
    try:
        async with asyncio.timeout(5):
            while sum(m["event"] == "mark" for m in wire.sent) < 2:  # one per sentence
                await asyncio.sleep(0.005)
            while conversation.state is not State.LISTENING:
                await asyncio.sleep(0.005)
    finally:
        await _cancel(tasks)
    return wire


async def _cancel(tasks: list[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _padded(audio: bytes) -> bytes:
    """`audio` as the wire carries it: whole 160-byte frames, the last filled with silence."""
    return audio + b"\xff" * (-len(audio) % 160)


async def test_elevenlabs_audio_reaches_the_wire_byte_for_byte() -> None:
    async with ElevenLabsFake(KEY) as fake:
        wire = await _greet(ElevenLabsTTS("voice", "eleven_flash_v2_5", KEY, base_url=fake.url))
        assert len(fake.sessions) == 1  # the whole answer on one socket
        texts = [m for m in fake.sessions[0].messages[1:] if m.get("flush")]
        assert texts[0]["text"].strip() == FIRST  # flushed at the sentence end
    frames = wire.media()
    assert {len(frame) for frame in frames} == {160}
    expected = b"".join(
        _padded(elevenlabs_server.audio_for(sentence)) for sentence in (FIRST, SECOND)
    )
    assert b"".join(frames) == expected
    # each sentence is closed by its own mark, right after its audio
    events = [m["event"] for m in wire.sent]
    first_frames = len(_padded(elevenlabs_server.audio_for(FIRST))) // 160
    assert events == ["media"] * first_frames + ["mark"] + ["media"] * (
        len(frames) - first_frames
    ) + ["mark"]


async def test_cartesia_audio_reaches_the_wire_byte_for_byte() -> None:
    async with CartesiaFake(KEY) as fake:
        tts = CartesiaTTS("voice", "sonic-2", KEY, base_url=fake.url)
        try:
            wire = await _greet(tts)
        finally:
            await tts.aclose()
    frames = wire.media()
    assert {len(frame) for frame in frames} == {160}
    expected = b"".join(
        _padded(cartesia_server.audio_for(f"{sentence} ")) for sentence in (FIRST, SECOND)
    )
    assert b"".join(frames) == expected


@pytest.mark.parametrize("encoding", ["pcm16k", "ulaw8k"])
async def test_cpu_per_second_of_agent_audio(encoding: str, report_figure) -> None:
    """Gateway CPU from the vendor's mu-law chunks to the wire's JSON, per second of audio:
    decoded, resampled up and back and encoded again (pcm16k, the path before pass-through),
    or framed and sent as it is (ulaw8k)."""
    session, wire = _session()
    vendor = np.random.default_rng(1).integers(0, 256, 400 * 20 * 60, dtype=np.uint8).tobytes()
    chunks = [vendor[i : i + 400] for i in range(0, len(vendor), 400)]  # 60 s, 50 ms chunks
    upsampler = stream_resampler(8000, 16000)
    started = time.process_time()
    for chunk in chunks:
        if encoding == "pcm16k":
            pcm = upsampler.process(ulaw_to_pcm(chunk))
            for start in range(0, len(pcm) - 639, 640):
                await session.send_audio(pcm[start : start + 640], "pcm16k")
        else:
            for start in range(0, len(chunk), 160):
                await session.send_audio(chunk[start : start + 160], "ulaw8k")
        wire.sent.clear()
    cpu_ms = (time.process_time() - started) * 1000 / 60
    report_figure(f"agent_audio_cpu_ms_per_sec_{encoding}", round(cpu_ms, 3))
    assert cpu_ms < 20


async def test_barge_in_closes_the_answer_socket_and_no_late_audio_follows_the_clear() -> None:
    async with ElevenLabsFake(KEY, chunk_interval=0.02) as fake:
        session, wire = _session()
        playout = Playout(session, lead_secs=0.1)
        wire.on_mark = playout.marked
        tts = ElevenLabsTTS("voice", "eleven_flash_v2_5", KEY, base_url=fake.url)
        services = Services(
            stt=None, llm=None, tts=tts, vad=None, denoiser=None, turn_detector=None,
        )  # type: ignore[arg-type]  # fmt: skip
        agent = AgentConfig(greeting="This is a long greeting that goes on. " * 8)
        conversation = Conversation(agent, services, Output(playout))
        tasks = [asyncio.create_task(playout.run()), asyncio.create_task(conversation.run())]
        try:
            async with asyncio.timeout(5):
                while len(wire.media()) < 15:  # 0.3 s of the answer sent
                    await asyncio.sleep(0.005)
            conversation._interrupt(0.5)  # what caller speech over the agent does
            cleared_at = len(wire.sent)
            await asyncio.sleep(0.3)
        finally:
            await _cancel(tasks)
        session_seen = fake.sessions[0]
        assert session_seen.client_closed_early and not session_seen.final_sent
        assert session_seen.chunks_sent < 12  # the vendor stopped soon after
    after = [m["event"] for m in wire.sent[cleared_at:]]
    assert "clear" in after and "media" not in after[after.index("clear") :]
    heard = conversation.context[-1].text  # only what was heard stays in the context
    assert heard and agent.greeting.startswith(heard) and len(heard) < len(agent.greeting) / 4
