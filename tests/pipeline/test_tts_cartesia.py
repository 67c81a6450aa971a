import asyncio
import logging
import time
from contextlib import aclosing

import numpy as np
import pytest
from structlog.testing import capture_logs

from pipeline.cloud_errors import ServiceError
from pipeline.tts.cartesia import DEFAULT_VERSION, CartesiaTTS, CartesiaTTSConfig
from tests.fakes.cartesia_server import CartesiaFake, audio_for

KEY = "sk_car_secret-key-0123456789"
VOICE = "a0e99841-438c-4a64-b679-ae501e7d6091"
MODEL = "sonic-2"


def tts(fake: CartesiaFake, **kwargs) -> CartesiaTTS:
    return CartesiaTTS(VOICE, MODEL, KEY, base_url=fake.url, **kwargs)


async def collect(chunks) -> list[bytes]:
    return [chunk async for chunk in chunks]


async def test_native_audio_in_order_with_the_documented_request() -> None:
    text = "Thank you for calling."
    async with CartesiaFake(KEY) as fake:
        client = tts(fake)
        chunks = await collect(client.synthesize(text))
        await client.aclose()
    assert len(chunks) > 3 and b"".join(chunks) == audio_for(text + " ")
    assert fake.headers[0]["X-API-Key"] == KEY
    assert fake.headers[0]["Cartesia-Version"] == DEFAULT_VERSION
    (request,) = fake.messages
    assert request == {
        "model_id": MODEL,
        "voice": {"mode": "id", "id": VOICE},
        "output_format": {"container": "raw", "encoding": "pcm_mulaw", "sample_rate": 8000},
        "language": "en",
        "context_id": request["context_id"],
        "transcript": text + " ",
        "continue": False,
    }


async def test_synthesize_yields_the_vendor_mulaw_and_reuses_the_socket() -> None:
    async with CartesiaFake(KEY) as fake:
        client = tts(fake)
        assert client.encoding == "ulaw8k"
        await client.connect()  # pre-warm
        first = b"".join(await collect(client.synthesize("Hello.")))
        second = b"".join(await collect(client.synthesize("Goodbye.")))
        await client.aclose()
    assert first == audio_for("Hello. ") and second == audio_for("Goodbye. ")
    assert fake.connections == 1
    assert len({m["context_id"] for m in fake.messages}) == 2


async def test_an_answer_continues_one_context_sentence_by_sentence() -> None:
    sentences = ["Sure.", "Your order ships today.", "Anything else?"]
    async with CartesiaFake(KEY, chunk_interval=0.002) as fake:
        client = tts(fake)
        answer = await client.open_context()
        received: list[bytes] = []
        first_audio = asyncio.Event()

        async def read() -> None:
            async for chunk in answer.audio():
                received.append(chunk)
                first_audio.set()

        reader = asyncio.create_task(read())
        await answer.send(sentences[0])
        await first_audio.wait()
        for sentence in sentences[1:]:
            await answer.send(sentence)
        await answer.close()
        await asyncio.wait_for(reader, 2)
        await client.aclose()
    assert b"".join(received) == b"".join(audio_for(s + " ") for s in sentences)
    assert [m["continue"] for m in fake.messages] == [True, True, True, False]
    assert fake.messages[-1]["transcript"] == ""
    assert len({m["context_id"] for m in fake.messages}) == 1


async def test_barge_in_cancels_the_context_and_the_next_answer_is_clean() -> None:
    async with CartesiaFake(KEY, chunk_interval=0.01) as fake:
        client = tts(fake)
        started = time.perf_counter()
        async with aclosing(client.synthesize("A long answer. " * 20)) as audio:
            async for _ in audio:
                break
        assert time.perf_counter() - started < 0.2
        cancelled = fake.messages[0]["context_id"]
        await asyncio.sleep(0.03)
        assert fake.messages[-1] == {"context_id": cancelled, "cancel": True}
        assert fake.contexts[cancelled].cancelled and not fake.contexts[cancelled].done
        assert b"".join(await collect(client.synthesize("Yes?"))) == audio_for("Yes? ")
        await client.aclose()
    assert fake.connections == 1


async def test_leftovers_of_a_cancelled_context_are_skipped() -> None:
    async with CartesiaFake(KEY) as fake:
        client = tts(fake)
        answer = await client.open_context()
        await answer.send("This answer is interrupted before it is read.", last=True)
        await asyncio.sleep(0.05)  # its chunks are waiting, unread, on the socket
        await answer.cancel()
        assert b"".join(await collect(client.synthesize("Next."))) == audio_for("Next. ")
        await client.aclose()


async def test_cancelling_the_consumer_task_stops_the_stream() -> None:
    async with CartesiaFake(KEY, chunk_interval=0.02) as fake:
        client = tts(fake)
        got: list[bytes] = []

        async def speak() -> None:
            async for chunk in client.synthesize("Please hold while I look that up. " * 10):
                got.append(chunk)

        task = asyncio.create_task(speak())
        while not got:
            await asyncio.sleep(0.005)
        task.cancel()
        started = time.perf_counter()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.perf_counter() - started < 0.1
        count = len(got)
        await asyncio.sleep(0.06)
        assert len(got) == count
        assert fake.messages[-1].get("cancel") is True
        await client.aclose()


async def test_bad_key_is_an_auth_error_and_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with CartesiaFake("the-right-key") as fake:
        with capture_logs() as logs, pytest.raises(ServiceError) as caught:
            await collect(tts(fake).synthesize("Hello."))
    assert caught.value.kind == "auth" and caught.value.status == 401
    assert KEY not in str(caught.value) and KEY not in caplog.text and KEY not in repr(logs)


async def test_vendor_error_message_maps_to_kind() -> None:
    async with CartesiaFake(KEY) as fake:
        client = CartesiaTTS(VOICE, "no-such-model", KEY, base_url=fake.url)
        with pytest.raises(ServiceError) as caught:
            await collect(client.synthesize("Hello."))
        assert caught.value.kind == "server" and caught.value.status == 400
        assert "Invalid model" in caught.value.message
        await client.aclose()


async def test_slow_first_audio_is_a_timeout() -> None:
    async with CartesiaFake(KEY, first_audio_delay=1.0) as fake:
        client = tts(fake, first_audio_timeout_secs=0.1)
        started = time.perf_counter()
        with pytest.raises(ServiceError) as caught:
            await collect(client.synthesize("Hello."))
        assert caught.value.kind == "timeout"
        assert time.perf_counter() - started < 0.4
        await client.aclose()


async def test_socket_dropped_mid_stream_is_stream_broken_and_the_next_answer_reconnects() -> None:
    async with CartesiaFake(KEY, drop_after_chunks=2) as fake:
        client = tts(fake)
        got: list[bytes] = []
        with pytest.raises(ServiceError) as caught:
            async for chunk in client.synthesize("Hello there, how are you?"):
                got.append(chunk)
        assert caught.value.kind == "stream_broken" and len(got) == 2
        assert b"".join(await collect(client.synthesize("Hi."))) == audio_for("Hi. ")
        assert fake.connections == 2
        await client.aclose()


async def test_malformed_message_is_stream_broken() -> None:
    async with CartesiaFake(KEY, malformed_after_chunks=1) as fake:
        client = tts(fake)
        with pytest.raises(ServiceError) as caught:
            await collect(client.synthesize("Hello there, how are you?"))
        assert caught.value.kind == "stream_broken"
        await client.aclose()


async def test_gateway_added_latency_to_first_chunk(report_figure) -> None:
    """Fake's first chunk send -> first chunk out of the client (mu-law, as the vendor sent)."""
    added: list[float] = []
    async with CartesiaFake(KEY) as fake:
        client = tts(fake)
        await client.connect()
        for _ in range(20):
            async with aclosing(client.synthesize("Hi.")) as audio:
                async for _ in audio:
                    at = time.perf_counter()
                    break
            request = [m for m in fake.messages if "transcript" in m][-1]
            sent = fake.first_audio_sent_at[request["context_id"]]
            added.append((at - sent) * 1000)
        await client.aclose()
    p95 = float(np.percentile(added, 95))
    report_figure("cartesia_first_chunk_added_ms_p95", round(p95, 3))
    assert p95 < 5


def test_config_keeps_the_key_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARTESIA_API_KEY", KEY)
    monkeypatch.setenv("CARTESIA_URL", "ws://127.0.0.1:9")
    config = CartesiaTTSConfig(voice_id=VOICE)
    client = CartesiaTTS.from_config(config)
    assert KEY not in repr(config) and KEY not in client._url
    assert client._url == "ws://127.0.0.1:9/tts/websocket"
    assert client._headers == {"X-API-Key": KEY, "Cartesia-Version": DEFAULT_VERSION}
