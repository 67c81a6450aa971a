import asyncio
import logging
import time
from contextlib import aclosing

import numpy as np
import pytest
from structlog.testing import capture_logs

from pipeline.cloud_errors import ServiceError
from pipeline.tts.elevenlabs import ElevenLabsTTS, ElevenLabsTTSConfig
from tests.fakes.elevenlabs_server import ElevenLabsFake, audio_for

KEY = "xi-secret-key-0123456789"
VOICE = "21m00Tcm4TlvDq8ikWAM"
MODEL = "eleven_flash_v2_5"


def tts(fake: ElevenLabsFake, **kwargs) -> ElevenLabsTTS:
    return ElevenLabsTTS(VOICE, MODEL, KEY, base_url=fake.url, **kwargs)


async def collect(chunks) -> list[bytes]:
    return [chunk async for chunk in chunks]


async def test_vendor_mulaw_arrives_untouched_in_order_and_streamed() -> None:
    text = "Thank you for calling."
    async with ElevenLabsFake(KEY) as fake:
        client = tts(fake)
        assert client.encoding == "ulaw8k"
        chunks = await collect(client.synthesize(text))
        assert len(chunks) > 3  # streamed, not one blob
        assert b"".join(chunks) == audio_for(text)
        session = fake.sessions[0]
        assert session.voice_id == VOICE
        assert session.query == {"model_id": [MODEL], "output_format": ["ulaw_8000"]}
        first, *texts = session.messages
        assert first["text"] == " " and "voice_settings" in first
        assert "xi_api_key" not in first  # the key goes in the header only
        assert texts == [{"text": text + " ", "flush": True}, {"text": ""}]
        assert session.final_sent and not session.client_closed_early


async def test_blank_text_opens_no_socket() -> None:
    async with ElevenLabsFake(KEY) as fake:
        assert await collect(tts(fake).synthesize("  ")) == []
        assert fake.sessions == []


async def test_an_answer_streams_several_sentences_over_one_socket() -> None:
    sentences = ["Sure.", "Your order ships today.", "Anything else?"]
    async with ElevenLabsFake(KEY, chunk_interval=0.002) as fake:
        answer = await tts(fake).open_answer()
        received: list[bytes] = []
        spoken: list[int | None] = []
        first_audio = asyncio.Event()

        async def read() -> None:
            async for chunk, chars in answer.audio():
                received.append(chunk)
                spoken.append(chars)
                first_audio.set()

        reader = asyncio.create_task(read())
        await answer.send(sentences[0], flush=True)
        await first_audio.wait()  # the first sentence plays before the LLM wrote the next
        for sentence in sentences[1:]:
            await answer.send(sentence, flush=True)
        await answer.close()
        await asyncio.wait_for(reader, 2)
        await answer.cancel()
        assert b"".join(received) == b"".join(audio_for(s) for s in sentences)
        assert sum(c or 0 for c in spoken) == sum(len(s.replace(" ", "")) for s in sentences)
        assert len(fake.sessions) == 1


async def test_stopping_the_consumer_closes_the_socket_promptly() -> None:
    async with ElevenLabsFake(KEY, chunk_interval=0.02) as fake:
        started = time.perf_counter()
        async with aclosing(tts(fake).synthesize("A long answer. " * 20)) as audio:
            async for _ in audio:
                break
        stopped = time.perf_counter()
        assert stopped - started < 0.2
        await asyncio.sleep(0.05)
        session = fake.sessions[0]
        assert session.client_closed_early and not session.final_sent
        assert session.chunks_sent <= 3


async def test_cancelling_the_consumer_task_stops_the_stream() -> None:
    async with ElevenLabsFake(KEY, chunk_interval=0.02) as fake:
        got: list[bytes] = []

        async def speak() -> None:
            async for chunk in tts(fake).synthesize("Please hold while I look that up. " * 10):
                got.append(chunk)

        task = asyncio.create_task(speak())
        while not got:
            await asyncio.sleep(0.005)
        task.cancel()
        started = time.perf_counter()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.perf_counter() - started < 0.15
        count = len(got)
        await asyncio.sleep(0.1)
        assert len(got) == count  # nothing after the cancel
        assert fake.sessions[0].client_closed_early


@pytest.mark.parametrize("mode", ["close", "http"])
async def test_bad_key_is_an_auth_error_and_never_logged(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with ElevenLabsFake("the-right-key", auth_failure=mode) as fake:
        with capture_logs() as logs, pytest.raises(ServiceError) as caught:
            await collect(tts(fake).synthesize("Hello."))
    assert caught.value.kind == "auth"
    assert KEY not in str(caught.value) and KEY not in caplog.text and KEY not in repr(logs)


async def test_slow_first_audio_is_a_timeout() -> None:
    async with ElevenLabsFake(KEY, first_audio_delay=0.4) as fake:
        started = time.perf_counter()
        with pytest.raises(ServiceError) as caught:
            await collect(tts(fake, first_audio_timeout_secs=0.1).synthesize("Hello."))
        assert caught.value.kind == "timeout"
        assert time.perf_counter() - started < 0.4


async def test_socket_dropped_mid_stream_is_stream_broken() -> None:
    async with ElevenLabsFake(KEY, drop_after_chunks=2) as fake:
        got: list[bytes] = []
        with pytest.raises(ServiceError) as caught:
            async for chunk in tts(fake).synthesize("Hello there, how are you?"):
                got.append(chunk)
        assert caught.value.kind == "stream_broken"
        assert len(got) == 2


async def test_malformed_message_is_stream_broken() -> None:
    async with ElevenLabsFake(KEY, malformed_after_chunks=1) as fake:
        with pytest.raises(ServiceError) as caught:
            await collect(tts(fake).synthesize("Hello there, how are you?"))
        assert caught.value.kind == "stream_broken"


async def test_vendor_input_timeout_message_is_a_timeout_error() -> None:
    async with ElevenLabsFake(KEY, input_timeout=0.05) as fake:
        answer = await tts(fake).open_answer()
        with pytest.raises(ServiceError) as caught:
            await collect(answer.audio())
        assert caught.value.kind == "timeout"
        assert "input_timeout_exceeded" in caught.value.message
        await answer.cancel()


async def test_gateway_added_latency_to_first_chunk(report_figure) -> None:
    """Fake's first audio send -> first chunk out of the client (mu-law, as the vendor sent)."""
    added: list[float] = []
    async with ElevenLabsFake(KEY) as fake:
        client = tts(fake)
        for _ in range(20):
            async with aclosing(client.synthesize("Hi.")) as audio:
                async for _ in audio:
                    at = time.perf_counter()
                    break
            sent = fake.sessions[-1].first_audio_sent_at
            added.append((at - sent) * 1000)
    p95 = float(np.percentile(added, 95))
    report_figure("elevenlabs_first_chunk_added_ms_p95", round(p95, 3))
    assert p95 < 5


def test_config_keeps_the_key_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELEVENLABS_API_KEY", KEY)
    monkeypatch.setenv("ELEVENLABS_URL", "ws://127.0.0.1:9")
    config = ElevenLabsTTSConfig(voice_id=VOICE)
    client = ElevenLabsTTS.from_config(config)
    assert KEY not in repr(config) and KEY not in client._url
    assert client._url == (
        f"ws://127.0.0.1:9/v1/text-to-speech/{VOICE}/stream-input"
        f"?model_id={MODEL}&output_format=ulaw_8000"
    )
    assert client._headers == {"xi-api-key": KEY}


async def test_the_socket_opened_ahead_serves_the_next_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with ElevenLabsFake(KEY) as fake:
        client = tts(fake)
        await client.connect()  # pre-warm, when the webhook arrives
        await client.connect()  # a fresh one waits already: no second socket
        assert len(fake.sessions) == 1
        assert b"".join(await collect(client.synthesize("Hello."))) == audio_for("Hello.")
        assert len(fake.sessions) == 1  # the greeting paid no handshake
        await client.connect()
        monkeypatch.setattr("pipeline.tts.elevenlabs.WARM_SOCKET_MAX_AGE_SECS", 0.0)
        assert b"".join(await collect(client.synthesize("Hi."))) == audio_for("Hi.")
        assert len(fake.sessions) == 3  # a stale socket is not trusted: a new one spoke
        assert fake.sessions[2].final_sent
        await client.aclose()
