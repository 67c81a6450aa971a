"""The loopback cloud vendors of the cloud e2e tests, served from the test process: the
WebSocket fakes (Deepgram, ElevenLabs, Cartesia) on an event loop of their own thread, the
OpenAI fake on its uvicorn thread."""

from __future__ import annotations

import asyncio
import io
import threading
import time
import wave
from contextlib import AsyncExitStack
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tests.fakes.cartesia_server import CartesiaFake
from tests.fakes.deepgram_server import DeepgramFake
from tests.fakes.elevenlabs_server import ElevenLabsFake
from tests.fakes.openai_server import FakeOpenAI


class ScriptedOpenAI(FakeOpenAI):
    """The OpenAI fake, transcribing by length: a turn's text is that of the known prompt
    whose duration is nearest the uploaded audio's (the turn holds some silence around the
    speech, `turn_padding_secs`). Records when each chat request arrived (perf_counter)."""

    def __init__(self) -> None:
        super().__init__()
        self.prompts: list[tuple[float, str]] = []
        self.turn_padding_secs = 0.45
        self.chat_arrived: list[float] = []

    async def _chat(self, request: Request) -> Response:
        self.chat_arrived.append(time.perf_counter())
        return await super()._chat(request)

    async def _transcribe(self, request: Request) -> Response:
        if not self.transcripts and self.prompts:
            form = await request.form()
            upload = form.get("file")
            if upload is not None and not isinstance(upload, str):
                with wave.open(io.BytesIO(await upload.read())) as audio:
                    secs = audio.getnframes() / audio.getframerate() - self.turn_padding_secs
                await upload.seek(0)  # the base class reads it again
                _, text = min(self.prompts, key=lambda prompt: abs(prompt[0] - secs))
                self.transcripts.append(text)
        return await super()._transcribe(request)


class CloudFakes:
    """`with CloudFakes() as fakes:` all four vendors; `env` points a gateway at them."""

    def __init__(self) -> None:
        self.openai = ScriptedOpenAI()
        self.deepgram = DeepgramFake("dg-test-key-0123456789")
        self.elevenlabs = ElevenLabsFake("el-test-key-0123456789")
        self.cartesia = CartesiaFake("sk_car_test-key-0123456789")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stack = AsyncExitStack()

    def __enter__(self) -> CloudFakes:
        self.openai.__enter__()
        self._thread.start()
        self._run(self._enter())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._run(self._stack.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self.openai.__exit__(*exc_info)

    async def _enter(self) -> None:
        for fake in (self.deepgram, self.elevenlabs, self.cartesia):
            await self._stack.enter_async_context(fake)

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    @property
    def env(self) -> dict[str, str]:
        return {
            "OPENAI_API_KEY": self.openai.api_key,
            "OPENAI_BASE_URL": self.openai.base_url,
            "DEEPGRAM_API_KEY": self.deepgram.api_key,
            "DEEPGRAM_URL": self.deepgram.url,
            "ELEVENLABS_API_KEY": self.elevenlabs.api_key,
            "ELEVENLABS_URL": self.elevenlabs.url,
            "CARTESIA_API_KEY": self.cartesia.api_key,
            "CARTESIA_URL": self.cartesia.url,
        }
