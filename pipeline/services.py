"""Builds a call's services from its agent file; loads the shared models once per process."""

from __future__ import annotations

import asyncio

import structlog

from pipeline.agent import AgentConfig
from pipeline.conversation import Services
from pipeline.inference import inference_executor
from pipeline.llm.scripted import ScriptedLLM
from pipeline.stt.whisper import WhisperSTT
from pipeline.tts.espeak import EspeakTTS
from pipeline.vad import VadStream, shared_model

log = structlog.get_logger()


def build_services(agent: AgentConfig, variables: dict[str, str] | None = None) -> Services:
    """The per-call services of `agent`: small objects over the process's shared models."""
    return Services(
        stt=WhisperSTT(beam_size=agent.stt.beam_size),
        llm=ScriptedLLM(agent.llm, variables),
        tts=EspeakTTS(agent.tts.voice, agent.tts.rate_wpm, agent.tts.pitch),
        vad=VadStream(shared_model()),
    )


async def warm_up(agents: dict[str, AgentConfig]) -> None:
    """Load every model the agents need and run each once, so no caller pays for it."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(inference_executor(), shared_model)
    for agent in agents.values():
        services = build_services(agent)
        await services.stt.warm_up()
        await services.tts.warm_up()
    log.info("models_ready", agents=sorted(agents))
