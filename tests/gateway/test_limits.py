"""The per-instance concurrency limit on a real gateway: with the limit at N, call N+1 hears the
busy message (an outbound request gets 429) and the N live calls go on unharmed."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.media_calls import BUSY_MESSAGE
from tests.corpus import select_prompts
from tests.gateway.cli_calls import events_named, finish_cli_call, start_cli_call, wait_for_logs
from tests.gateway.server import TEST_AGENT, Server, free_port, start_server, write_config
from tests.gateway.twilio_client import post_webhook, signed, voice_form

pytestmark = pytest.mark.slow

LIMIT = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    directory: Path = tmp_path_factory.mktemp("limits")
    config = write_config(directory, {"terse": TEST_AGENT}, calls={"max_concurrent": LIMIT})
    env = {
        "CALLGATE_API_KEY": "test-api-key-" + secrets.token_hex(8),
        "CALLGATE_SECRET": secrets.token_hex(16),
        "TWILIO_ACCOUNT_SID": "AC" + secrets.token_hex(16),
        "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
        # Nothing listens there: a call placed by mistake fails instead of leaving the machine.
        "TWILIO_API_BASE": f"http://127.0.0.1:{free_port()}",
    }
    server = start_server(config, env, directory / "server.log")
    yield server
    assert server.stop() == 0


def rejected(server: Server, reason: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "callgate_calls_rejected_total" and sample.labels == {
                "provider": "twilio",
                "reason": reason,
            }:
                return sample.value
    return 0.0


def test_call_over_the_limit_is_refused_and_the_others_go_on(server: Server):
    prompts = select_prompts(3, seed=5)
    calls = [
        start_cli_call(server.url, server.env, [p.wav for p in prompts], "--agent", "terse")
        for _ in range(LIMIT)
    ]
    wait_for_logs(server, lambda lines: len(events_named(lines, "call_started")) == LIMIT)

    over = finish_cli_call(start_cli_call(server.url, server.env, [prompts[0].wav]), exit_code=1)
    no_stream = events_named(over, "no_stream")
    assert no_stream and no_stream[0]["say"] == BUSY_MESSAGE, over
    assert over[-1]["status"] == "ended" and over[-1]["call_id"] is None

    api = {"Authorization": f"Bearer {server.env['CALLGATE_API_KEY']}"}
    body = {"to": "+15005550009", "from": "+15005550001", "provider": "twilio"}
    placed = httpx.post(f"{server.url}/v1/calls", json=body, headers=api, timeout=10)
    assert placed.status_code == 429, placed.text
    assert placed.json()["error"]["code"] == "at_capacity"
    assert rejected(server, "capacity") == 1

    summaries = [finish_cli_call(call)[-1] for call in calls]
    for summary in summaries:
        assert summary["status"] == "completed", summary
        said = [t["text"] for t in summary["transcript"] if t["role"] == "user"]
        assert len(said) == len(prompts) and all(said), summary["transcript"]
        assert summary["hangup_by"] == "caller"

    # The finished calls gave their slots back: the next call is admitted.
    path = "/twilio/voice?agent=terse"
    form = voice_form()
    answer = post_webhook(server, path, form, signed(server, path, form))
    assert "<Stream" in answer.text
    listed = httpx.get(f"{server.url}/v1/calls", headers=api, timeout=10).json()["calls"]
    assert sum(call["status"] == "completed" for call in listed) == LIMIT
