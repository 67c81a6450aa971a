"""Pre-warming at the webhook: the call's cloud connections are open before its media starts,
and closed if it never does."""

from __future__ import annotations

import asyncio

from gateway.prewarm import Prewarmer
from pipeline.agent import AgentConfig
from pipeline.openai_endpoint import close_shared_clients
from tests.fakes.openai_server import FakeOpenAI


def _agent(fake: FakeOpenAI) -> AgentConfig:
    endpoint = {"api_key": fake.api_key, "base_url": fake.base_url}
    return AgentConfig.model_validate(
        {"llm": {"provider": "openai", **endpoint}, "tts": {"provider": "openai", **endpoint}}
    )


async def test_webhook_opens_connections_and_the_call_takes_them():
    with FakeOpenAI() as fake:
        prewarmer = Prewarmer()
        prewarmer.start("cg_1", _agent(fake), {}, ttl_secs=60)
        services = await prewarmer.take("cg_1")
        assert services is not None
        assert [r.path for r in fake.requests] == ["/v1/models", "/v1/models"]
        assert await prewarmer.take("cg_1") is None  # taken once
        await close_shared_clients()


async def test_offline_agents_and_unknown_calls_are_not_warmed():
    prewarmer = Prewarmer()
    prewarmer.start("cg_2", AgentConfig(), {}, ttl_secs=60)
    assert await prewarmer.take("cg_2") is None
    assert await prewarmer.take("cg_unknown") is None


async def test_unclaimed_warm_connections_expire():
    with FakeOpenAI() as fake:
        prewarmer = Prewarmer()
        prewarmer.start("cg_3", _agent(fake), {}, ttl_secs=0.05)
        await asyncio.sleep(0.2)
        assert await prewarmer.take("cg_3") is None
        await close_shared_clients()
