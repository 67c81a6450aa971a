import asyncio
import logging
import socket
import time
from collections.abc import Callable

import numpy as np
import pytest
from structlog.testing import capture_logs

from pipeline.cloud_errors import ServiceError
from pipeline.stt.deepgram import DeepgramSTT, DeepgramSTTConfig
from tests.fakes.deepgram_server import DeepgramFake

KEY = "dg-secret-key-0123456789"
FRAME = 160  # 20 ms of 8 kHz mu-law


def speech(secs: float) -> list[bytes]:
    return [bytes([0x10]) * FRAME] * round(secs * 50)


def silence(secs: float) -> list[bytes]:
    return [b"\xff" * FRAME] * round(secs * 50)


def turn_pcm(secs: float) -> bytes:
    """What the conversation passes: the turn's 16 kHz PCM16 (only its length matters)."""
    return bytes(round(secs * 32000))


def feed(stt: DeepgramSTT, frames: list[bytes]) -> None:
    for frame in frames:
        stt.feed_mulaw(frame)


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def client(fake: DeepgramFake, **kwargs) -> DeepgramSTT:
    return DeepgramSTT(KEY, base_url=fake.url, **kwargs)


async def test_turn_transcript_after_finalize() -> None:
    async with DeepgramFake(KEY, words=["Hello", "there."]) as fake:
        stt = client(fake, endpointing_ms=500)
        await stt.connect()
        feed(stt, silence(0.2) + speech(0.4) + silence(0.1))
        assert await stt.transcribe(turn_pcm(0.5)) == "Hello there."
        assert fake.controls == ["Finalize"]
        query = fake.queries[0]
        for name, value in {
            "encoding": "mulaw",
            "sample_rate": "8000",
            "channels": "1",
            "interim_results": "true",
            "endpointing": "500",
            "model": "nova-3",
        }.items():
            assert query[name] == [value]
        assert len(fake.audio) == 0.7 * 8000  # sent as is: mu-law, no conversion
        await stt.aclose()
        assert fake.controls == ["Finalize", "CloseStream"]


async def test_interim_words_show_before_they_are_final() -> None:
    async with DeepgramFake(KEY, words=["Maybe", "tomorrow."]) as fake:
        stt = client(fake)
        feed(stt, speech(0.2))
        await until(lambda: stt.interim_text == "Maybe")
        feed(stt, speech(0.2))
        await until(lambda: stt.interim_text == "Maybe tomorrow.")
        assert await stt.transcribe(turn_pcm(0.4)) == "Maybe tomorrow."
        assert stt.interim_text == ""
        await stt.aclose()


async def test_turns_are_delimited_by_time_and_drafts_lose_nothing() -> None:
    async with DeepgramFake(KEY, words=["One.", "Two", "three", "four."]) as fake:
        stt = client(fake, endpointing_ms=2000)
        feed(stt, speech(0.2) + silence(0.5))
        assert await stt.transcribe(turn_pcm(0.7)) == "One."
        feed(stt, speech(0.4) + silence(0.2))
        draft = await stt.transcribe(turn_pcm(0.6))  # speculative, at the caller's pause
        assert draft == "Two three"
        feed(stt, speech(0.2) + silence(0.2))  # the caller went on: the draft is thrown away
        assert await stt.transcribe(turn_pcm(1.0)) == "Two three four."
        await stt.aclose()


async def test_deepgram_endpointing_is_exposed() -> None:
    seen: list[float] = []
    async with DeepgramFake(KEY, words=["Yes."]) as fake:
        stt = client(fake, endpointing_ms=100, on_endpoint=seen.append)
        assert stt.last_speech_final_at is None
        before = time.monotonic()
        feed(stt, speech(0.2) + silence(0.2))
        await until(lambda: stt.last_speech_final_at is not None)
        assert stt.last_speech_final_at >= before
        assert seen == [stt.last_speech_final_at]
        assert await stt.transcribe(turn_pcm(0.4)) == "Yes."
        await stt.aclose()


async def test_keepalive_holds_an_idle_socket_open() -> None:
    async with DeepgramFake(KEY, words=["Still", "here."], idle_timeout=0.25) as fake:
        stt = client(fake, keepalive_secs=0.05)
        await stt.connect()
        await asyncio.sleep(0.6)  # more than twice the server's idle timeout
        assert fake.controls.count("KeepAlive") >= 5
        feed(stt, speech(0.4))
        assert await stt.transcribe(turn_pcm(0.4)) == "Still here."
        assert fake.connections == 1
        await stt.aclose()


async def test_without_keepalive_the_server_closes_and_one_reconnect_follows() -> None:
    async with DeepgramFake(KEY, words=["Back."], idle_timeout=0.1) as fake:
        stt = client(fake, keepalive_secs=5)
        await stt.connect()
        await until(lambda: fake.connections == 2)
        feed(stt, speech(0.2))
        assert await stt.transcribe(turn_pcm(0.2)) == "Back."
        await stt.aclose()


async def test_reconnects_once_when_the_socket_drops_mid_call() -> None:
    async with DeepgramFake(KEY, words=["Lost", "Found"], drop_after_bytes=1600) as fake:
        stt = client(fake)
        feed(stt, speech(0.2))  # 1600 bytes: the first socket drops here, its audio is lost
        await until(lambda: fake.connections == 2)
        feed(stt, silence(0.1) + speech(0.4))
        assert await stt.transcribe(turn_pcm(0.5)) == "Lost Found"
        await stt.aclose()


async def test_finalize_wait_is_bounded_and_falls_back_to_interim_words() -> None:
    async with DeepgramFake(KEY, words=["Pending"], ignore_finalize=True) as fake:
        stt = client(fake, finalize_timeout_secs=0.1)
        feed(stt, speech(0.2))
        await until(lambda: stt.interim_text == "Pending")
        started = time.monotonic()
        assert await stt.transcribe(turn_pcm(0.2)) == "Pending"
        assert 0.09 < time.monotonic() - started < 0.3
        await stt.aclose()


async def test_no_new_audio_means_no_finalize_wait() -> None:
    async with DeepgramFake(KEY, words=["Once."], ignore_finalize=True) as fake:
        stt = client(fake, finalize_timeout_secs=1.0)
        await stt.connect()
        started = time.monotonic()
        assert await stt.transcribe(turn_pcm(0.2)) == ""
        assert time.monotonic() - started < 0.05
        await stt.aclose()


async def test_turn_end_to_transcript_latency(report_figure) -> None:
    """transcribe() at a pause: Finalize out, flushed result back, text out (loopback)."""
    words = [f"word{i}" for i in range(30)]
    async with DeepgramFake(KEY, words=list(words)) as fake:
        stt = client(fake)
        await stt.connect()
        took: list[float] = []
        for word in words:
            feed(stt, speech(0.2))
            await until(lambda w=word: stt.interim_text == w)
            started = time.perf_counter()
            assert await stt.transcribe(turn_pcm(0.2)) == word
            took.append((time.perf_counter() - started) * 1000)
        await stt.aclose()
    p95 = float(np.percentile(took, 95))
    report_figure("deepgram_transcribe_ms_p95", round(p95, 3))
    assert p95 < 20


async def test_bad_key_is_an_auth_error_and_the_key_is_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with DeepgramFake("the-right-key") as fake:
        stt = client(fake)
        with capture_logs() as logs, pytest.raises(ServiceError) as caught:
            await stt.connect()
        assert caught.value.kind == "auth" and caught.value.status == 401
        with pytest.raises(ServiceError):
            await stt.transcribe(turn_pcm(0.1))
        await stt.aclose()
    assert KEY not in str(caught.value)
    assert KEY not in caplog.text and KEY not in repr(logs)
    assert logs  # something was logged, just not the key


@pytest.mark.parametrize(("status", "kind"), [(429, "rate_limited"), (503, "server")])
async def test_refused_upgrade_maps_to_kind(status: int, kind: str) -> None:
    async with DeepgramFake(KEY, reject_status=status) as fake:
        stt = client(fake)
        with pytest.raises(ServiceError) as caught:
            await stt.connect()
        assert caught.value.kind == kind
        assert fake.connections == 0


async def test_malformed_messages_end_in_stream_broken_after_one_reconnect() -> None:
    async with DeepgramFake(KEY, malformed_after_bytes=160) as fake:
        stt = client(fake)
        feed(stt, speech(0.1))
        await until(lambda: fake.connections == 2)
        feed(stt, speech(0.1))
        with pytest.raises(ServiceError) as caught:
            await stt.transcribe(turn_pcm(0.2))
        assert caught.value.kind == "stream_broken"
        await stt.aclose()


async def test_error_close_codes_map_to_kind() -> None:
    async with DeepgramFake(KEY, close_after_bytes=(160, 1008, "DATA-0000")) as fake:
        stt = client(fake)
        feed(stt, speech(0.1))
        await until(lambda: fake.connections == 2)
        feed(stt, speech(0.1))
        with pytest.raises(ServiceError) as caught:
            await stt.transcribe(turn_pcm(0.2))
        assert caught.value.kind == "server" and "DATA-0000" in caught.value.message
        await stt.aclose()


async def test_unreachable_service_is_a_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stt = DeepgramSTT(KEY, base_url=f"ws://127.0.0.1:{port}")
    with pytest.raises(ServiceError) as caught:
        await stt.connect()
    assert caught.value.kind == "connection"


def test_config_reads_key_and_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPGRAM_API_KEY", KEY)
    monkeypatch.setenv("DEEPGRAM_URL", "ws://127.0.0.1:9")
    config = DeepgramSTTConfig(endpointing_ms=250)
    assert KEY not in repr(config)
    stt = DeepgramSTT.from_config(config)
    assert stt._url.startswith("ws://127.0.0.1:9/v1/listen?")
    assert "endpointing=250" in stt._url and KEY not in stt._url
    assert stt._headers == {"Authorization": f"Token {KEY}"}
