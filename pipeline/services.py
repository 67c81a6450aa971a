"""Builds a call's services from its agent file; loads the shared models once per process.

Cloud clients (OpenAI-compatible, Deepgram, ElevenLabs, Cartesia) hold no process-wide state
worth warming at startup and must not reach the internet when an agent file merely exists:
they are built per call, with keys and URLs read then (`${NAME}` in the agent file or the
vendor's environment variable). A missing key is therefore not a load error: the vendor
refuses the call's first request (HTTP 401), the caller hears the agent's apology and the
error is logged and counted. `warm_connections` opens their connections per call, when the
voice webhook arrives.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import TypeVar

import structlog
from pydantic import BaseModel

from pipeline.agent import AgentConfig, EspeakTTSConfig
from pipeline.conversation import Services
from pipeline.denoise import make_denoiser
from pipeline.inference import inference_executor
from pipeline.llm.base import LanguageModel
from pipeline.llm.openai import OpenAILLM, OpenAILLMConfig
from pipeline.llm.scripted import ScriptedLLM
from pipeline.smart_turn import shared_model as smart_turn_model
from pipeline.stt.base import SpeechToText
from pipeline.stt.deepgram import DeepgramSTT, DeepgramSTTConfig
from pipeline.stt.openai import OpenAISTT, OpenAISTTConfig
from pipeline.stt.standin import StandinSTT, StandinSTTConfig
from pipeline.stt.whisper import WhisperSTT
from pipeline.tools import tool_specs
from pipeline.tts.base import TextToSpeech
from pipeline.tts.cartesia import CartesiaTTS, CartesiaTTSConfig
from pipeline.tts.elevenlabs import ElevenLabsTTS, ElevenLabsTTSConfig
from pipeline.tts.espeak import EspeakTTS
from pipeline.tts.openai import OpenAITTS, OpenAITTSConfig
from pipeline.tts.standin import StandinTTS, StandinTTSConfig
from pipeline.turn_detector import TurnDetector
from pipeline.vad import VadStream, shared_model

log = structlog.get_logger()
Config = TypeVar("Config", bound=BaseModel)

CLOUD_PROVIDERS = frozenset({"openai", "deepgram", "elevenlabs", "cartesia"})
CLOUD_ANSWER_TIMEOUT_SECS = 1.5
"""End of turn to first audio, at most, with a cloud service in the chain (then: apology)."""
CLOUD_TIMEOUT_SECS = 1.5
"""The clients' first-token / first-audio / stall timeouts unless the agent file sets them:
under the 2 s of dead air a caller may hear at most."""
_TIMEOUT_FIELDS = (
    "first_token_timeout_secs",
    "request_timeout_secs",
    "first_audio_timeout_secs",
    "timeout_secs",
)


def _bounded(config: Config) -> Config:
    """`config` with the timeouts it leaves at their defaults set to `CLOUD_TIMEOUT_SECS`."""
    unset = {
        name: CLOUD_TIMEOUT_SECS
        for name in _TIMEOUT_FIELDS
        if name in type(config).model_fields and name not in config.model_fields_set
    }
    return config.model_copy(update=unset) if unset else config


def uses_cloud(agent: AgentConfig) -> bool:
    return any(s.provider in CLOUD_PROVIDERS for s in (agent.stt, agent.llm, agent.tts))


def build_services(agent: AgentConfig, variables: dict[str, str] | None = None) -> Services:
    """The per-call services of `agent`: small objects over the process's shared models."""
    turn = agent.turn
    timeout = agent.failures.answer_timeout_secs
    if timeout is None and uses_cloud(agent):
        timeout = CLOUD_ANSWER_TIMEOUT_SECS
    return Services(
        stt=_stt(agent),
        llm=_llm(agent, variables),
        tts=_tts(agent),
        vad=VadStream(shared_model()),
        denoiser=make_denoiser(agent.denoise.provider, suppress_db=agent.denoise.suppress_db),
        turn_detector=TurnDetector(turn.smart_turn_threshold) if turn.smart_turn else None,
        fallback_tts=_espeak(EspeakTTSConfig()),
        answer_timeout_secs=timeout,
    )


def _stt(agent: AgentConfig) -> SpeechToText:
    config = agent.stt
    if isinstance(config, StandinSTTConfig):
        return StandinSTT(config)
    if isinstance(config, OpenAISTTConfig):
        return OpenAISTT.from_config(_bounded(config))
    if isinstance(config, DeepgramSTTConfig):
        return DeepgramSTT.from_config(config)
    return WhisperSTT(beam_size=config.beam_size)


def _llm(agent: AgentConfig, variables: dict[str, str] | None) -> LanguageModel:
    config = agent.llm
    if isinstance(config, OpenAILLMConfig):
        specs = tool_specs(agent.tools, agent.transfer_targets)
        return OpenAILLM.from_config(_bounded(config), [spec.openai() for spec in specs], variables)
    return ScriptedLLM(config, variables)


def _tts(agent: AgentConfig) -> TextToSpeech:
    config = agent.tts
    if isinstance(config, StandinTTSConfig):
        return StandinTTS(config)
    if isinstance(config, OpenAITTSConfig):
        return OpenAITTS.from_config(_bounded(config))
    if isinstance(config, ElevenLabsTTSConfig):
        return ElevenLabsTTS.from_config(_bounded(config))
    if isinstance(config, CartesiaTTSConfig):
        return CartesiaTTS.from_config(_bounded(config))
    return _espeak(config)


def _espeak(config: EspeakTTSConfig) -> EspeakTTS:
    return EspeakTTS(config.voice, config.rate_wpm, config.pitch)


async def warm_connections(services: Services) -> None:
    """Opens the call's cloud connections now (STT and TTS sockets, the LLM's TLS), so the
    greeting and the first answer pay no handshake. Failures are logged, never raised: the
    call reports them when it uses the service."""
    parts = [
        getattr(service, name)
        for service, name in (
            (services.llm, "warm_up"),
            (services.stt, "connect"),
            (services.tts, "connect"),
        )
        if hasattr(service, name)
    ]
    if isinstance(services.stt, OpenAISTT):
        parts.append(services.stt.warm_up)
    if isinstance(services.tts, OpenAITTS):
        parts.append(services.tts.warm_up)
    results = await asyncio.gather(*(part() for part in parts), return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            log.warning("prewarm_failed", error=str(result))


async def close_services(services: Services) -> None:
    """Closes the call's cloud sockets (Deepgram, Cartesia); the rest hold none."""
    for service in (services.stt, services.tts):
        close = getattr(service, "aclose", None)
        if close is not None:
            with suppress(Exception):
                await close()


async def warm_up(agents: dict[str, AgentConfig]) -> None:
    """Load every model the agents need and run each once, so no caller pays for it. Cloud
    services are skipped: their connections are per call (`warm_connections`)."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(inference_executor(), shared_model)
    if any(agent.turn.smart_turn for agent in agents.values()):
        await loop.run_in_executor(inference_executor(), smart_turn_model)
        await TurnDetector(0.5).audio_says_complete(bytes(32_000))
    await _espeak(EspeakTTSConfig()).warm_up()  # every agent's apology voice
    for agent in agents.values():
        if agent.stt.provider not in CLOUD_PROVIDERS:
            await _stt(agent).warm_up()
        if agent.tts.provider not in CLOUD_PROVIDERS:
            await _tts(agent).warm_up()
    log.info("models_ready", agents=sorted(agents))
