"""OpenAISTT against the loopback fake of the OpenAI API."""

from __future__ import annotations

import struct

import pytest

from pipeline.cloud_errors import ServiceError
from pipeline.openai_endpoint import close_shared_clients
from pipeline.stt.openai import OpenAISTT, OpenAISTTConfig, wav_header
from tests.fakes.openai_server import ConnectionDropper, FakeOpenAI, error_reply

PCM = struct.pack("<320h", *range(-160, 160))  # 20 ms at 16 kHz


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(autouse=True)
async def fresh(fake):
    fake.transcripts.clear()
    fake.requests.clear()
    yield
    await close_shared_clients()


def test_wav_header_is_a_16k_mono_16bit_riff():
    header = wav_header(640)
    assert len(header) == 44
    assert struct.unpack("<4sI4s4sIHHIIHH4sI", header) == (
        b"RIFF", 676, b"WAVE", b"fmt ", 16, 1, 1, 16000, 32000, 2, 16, b"data", 640
    )


async def test_posts_a_wav_as_multipart_and_returns_the_text(fake):
    fake.transcripts.append(" What time do you open? ")
    stt = OpenAISTT("whisper-large-v3", fake.base_url, fake.api_key, language="de")
    assert await stt.transcribe(PCM) == "What time do you open?"
    sent = fake.requests[-1]
    assert sent.path == "/v1/audio/transcriptions"
    assert sent.headers["authorization"] == f"Bearer {fake.api_key}"
    assert sent.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert sent.form == {"model": "whisper-large-v3", "language": "de", "response_format": "json"}
    assert sent.file == ("audio.wav", "audio/wav", wav_header(len(PCM)) + PCM)


async def test_odd_byte_count_is_cut_to_whole_samples(fake):
    fake.transcripts.append("ok")
    stt = OpenAISTT(base_url=fake.base_url, api_key=fake.api_key)
    assert await stt.transcribe(PCM + b"\x01") == "ok"  # the fake rejects a bad WAV with 400
    assert fake.requests[-1].file[2][44:] == PCM


async def test_no_audio_sends_nothing(fake):
    assert await OpenAISTT(base_url=fake.base_url, api_key=fake.api_key).transcribe(b"") == ""
    assert fake.requests == []


ERRORS = [(401, "auth"), (429, "rate_limited"), (500, "server")]


@pytest.mark.parametrize(("status", "kind"), ERRORS)
async def test_http_errors(fake, status, kind):
    fake.transcripts.append(error_reply(status, f"failure {status}", "server_error", None))
    with pytest.raises(ServiceError) as caught:
        await OpenAISTT(base_url=fake.base_url, api_key=fake.api_key).transcribe(PCM)
    assert (caught.value.kind, caught.value.status) == (kind, status)
    assert f"failure {status}" in caught.value.message


async def test_wrong_key(fake):
    with pytest.raises(ServiceError) as caught:
        await OpenAISTT(base_url=fake.base_url, api_key="sk-wrong-key-abcdef").transcribe(PCM)
    assert caught.value.kind == "auth" and "sk-wrong-key-abcdef" not in str(caught.value)


async def test_unreachable_is_a_connection_error(fake):
    dropper = ConnectionDropper(fake.port, drops=5)
    try:
        stt = OpenAISTT(base_url=f"http://127.0.0.1:{dropper.port}/v1", api_key=fake.api_key)
        with pytest.raises(ServiceError) as caught:
            await stt.transcribe(PCM)
        assert caught.value.kind == "connection"
    finally:
        dropper.close()


def test_config():
    config = OpenAISTTConfig(model="whisper-1", api_key="sk-abc", language=None)
    assert "sk-abc" not in repr(config)
    assert isinstance(OpenAISTT.from_config(config), OpenAISTT)
