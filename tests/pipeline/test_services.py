"""Agent file -> services: the provider unions, the tools the LLM is offered, the timeouts
that keep dead air under 2 s, and cloud agent files that load without their keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import load_agents
from pipeline.agent import AgentConfig
from pipeline.llm.base import Message
from pipeline.llm.openai import OpenAILLM
from pipeline.services import build_services
from pipeline.stt.deepgram import DeepgramSTT
from pipeline.stt.openai import OpenAISTT
from pipeline.tts.cartesia import CartesiaTTS
from pipeline.tts.elevenlabs import ElevenLabsTTS
from pipeline.tts.espeak import EspeakTTS
from pipeline.tts.openai import OpenAITTS

AGENTS = Path(__file__).resolve().parents[2] / "config" / "agents"
CLOUD_VARIABLES = (
    *("OPENAI_API_KEY", "OPENAI_BASE_URL", "DEEPGRAM_API_KEY", "DEEPGRAM_URL"),
    *("ELEVENLABS_API_KEY", "ELEVENLABS_URL", "CARTESIA_API_KEY", "CARTESIA_URL"),
)


@pytest.fixture
def agents(monkeypatch: pytest.MonkeyPatch) -> dict[str, AgentConfig]:
    for name in CLOUD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return load_agents(AGENTS)


async def test_shipped_cloud_agents_load_without_keys_and_build_their_clients(agents):
    openai = build_services(agents["openai"])
    assert isinstance(openai.stt, OpenAISTT) and isinstance(openai.tts, OpenAITTS)
    assert isinstance(openai.llm, OpenAILLM)
    deepgram = build_services(agents["deepgram-elevenlabs"])
    assert isinstance(deepgram.stt, DeepgramSTT) and isinstance(deepgram.tts, ElevenLabsTTS)
    for services in (openai, deepgram):
        assert isinstance(services.fallback_tts, EspeakTTS)
        assert services.answer_timeout_secs == 1.5
    assert build_services(agents["default"]).answer_timeout_secs is None


async def test_the_llm_is_offered_the_agents_tools_and_its_variables():
    agent = AgentConfig.model_validate(
        {
            "system_prompt": "You help {name}.",
            "llm": {"provider": "openai", "api_key": "k", "base_url": "http://127.0.0.1:9/v1"},
            "tools": ["end_call", "transfer_call"],
            "transfer_targets": ["+15551234567"],
        }
    )
    llm = build_services(agent, {"name": "Ada"}).llm
    body = llm.request_body([Message("system", agent.system_prompt), Message("user", "hi")])
    assert [tool["function"]["name"] for tool in body["tools"]] == ["end_call", "transfer_call"]
    assert body["messages"][0]["content"] == "You help Ada."


async def test_client_timeouts_stay_under_two_seconds_unless_the_file_sets_them():
    tts = {"provider": "cartesia", "voice_id": "v", "api_key": "k"}
    default = build_services(AgentConfig.model_validate({"tts": tts})).tts
    assert isinstance(default, CartesiaTTS) and default._first_audio_timeout == 1.5
    explicit = {**tts, "first_audio_timeout_secs": 4}
    explicit_tts = build_services(AgentConfig.model_validate({"tts": explicit})).tts
    assert explicit_tts._first_audio_timeout == 4
    llm = build_services(AgentConfig.model_validate({"llm": {"provider": "openai"}})).llm
    assert llm._first_token_timeout == 1.5


def test_union_errors_name_the_file_key():
    with pytest.raises(ValueError, match="voice_id"):
        AgentConfig.model_validate({"tts": {"provider": "elevenlabs"}})
    with pytest.raises(ValueError, match="provider"):
        AgentConfig.model_validate({"stt": {"provider": "nope"}})
