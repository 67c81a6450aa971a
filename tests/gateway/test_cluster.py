"""Two real gateway processes sharing one registry in a real redis-server, behind a loopback
load balancer that sends every media socket to instance B and everything else to instance A:
A answers the webhook (or places the call), B serves the media, and either one answers for it."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.corpus import asterisk_prompts, select_prompts
from tests.fakes.phone import Callee
from tests.fakes.twilio_rest import FakeTwilioRest
from tests.gateway.cli_calls import events_named, finish_cli_call, start_cli_call
from tests.gateway.path_router import PathRouter
from tests.gateway.redis_server import redis_server
from tests.gateway.server import TEST_AGENT, Server, start_server, write_config
from tests.gateway.twilio_client import post_webhook, signed, voice_form

pytestmark = pytest.mark.slow

MEDIA_PATH = "/twilio/media"
TOKEN_TTL_SECS = 10  # the shortest the settings allow: how long a ringing call holds its slot


@dataclass
class Cluster:
    a: Server
    b: Server
    router: PathRouter
    env: dict[str, str]  # what a caller through the balancer uses


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, fake_twilio: FakeTwilioRest) -> Iterator[Cluster]:
    directory: Path = tmp_path_factory.mktemp("cluster")
    backends: dict[str, str] = {}

    def choose(path: str) -> str:
        return backends["b" if path.startswith(MEDIA_PATH) else "a"]

    with redis_server(directory) as redis_url, PathRouter(choose) as router:
        config = write_config(
            directory,
            {"terse": TEST_AGENT},
            calls={"max_concurrent_cluster": 1, "token_ttl_secs": TOKEN_TTL_SECS},
        )
        env = {
            "CALLGATE_PUBLIC_URL": router.url,  # both instances answer for the one public URL
            "CALLGATE_REDIS_URL": redis_url,
            "CALLGATE_API_KEY": "test-api-key-" + secrets.token_hex(8),
            "CALLGATE_SECRET": secrets.token_hex(16),
            "TWILIO_ACCOUNT_SID": fake_twilio.account_sid,
            "TWILIO_AUTH_TOKEN": fake_twilio.auth_token,
            "TWILIO_API_BASE": fake_twilio.base_url,
        }
        a = start_server(config, env, directory / "a.log")
        try:
            b = start_server(config, env, directory / "b.log")
        except BaseException:
            a.stop()
            raise
        backends.update(a=a.url, b=b.url)
        try:
            yield Cluster(a, b, router, {**a.env, "CALLGATE_PUBLIC_URL": router.url})
        finally:
            assert b.stop() == 0
            assert a.stop() == 0


def get_call(server: Server, call_id: str) -> dict:
    headers = {"Authorization": f"Bearer {server.env['CALLGATE_API_KEY']}"}
    response = httpx.get(f"{server.url}/v1/calls/{call_id}", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def started_here(server: Server, call_id: str) -> int:
    """How many times this instance started serving the call's media."""
    return sum(e["call_id"] == call_id for e in events_named(server.logs(), "call_started"))


def test_one_instance_answers_the_other_serves_media_both_know_the_call(cluster: Cluster):
    prompts = select_prompts(2, seed=11)
    process = start_cli_call(
        cluster.router.url, cluster.env, [p.wav for p in prompts], "--agent", "terse"
    )
    summary = finish_cli_call(process)[-1]
    call_id = summary["call_id"]
    assert summary["status"] == "completed", summary
    said = [t["text"] for t in summary["transcript"] if t["role"] == "user"]
    assert len(said) == 2 and all(said), summary["transcript"]  # B's transcript, read through A

    routed = {(path.split("?")[0], backend) for path, backend in cluster.router.routed}
    assert ("/twilio/voice", cluster.a.url) in routed
    assert (MEDIA_PATH, cluster.b.url) in routed
    assert (f"/v1/calls/{call_id}", cluster.a.url) in routed

    assert (started_here(cluster.a, call_id), started_here(cluster.b, call_id)) == (0, 1)
    answered_on_a = events_named(cluster.a.logs(), "call_answered")
    assert any(e["call_id"] == call_id for e in answered_on_a)

    on_a, on_b = get_call(cluster.a, call_id), get_call(cluster.b, call_id)
    assert on_a == on_b
    assert on_a["status"] == "completed" and on_a["transcript"] == summary["transcript"]
    assert on_a["from"] == "+15005550001" and on_a["provider_call_id"].startswith("CA")
    headers = {"Authorization": f"Bearer {cluster.a.env['CALLGATE_API_KEY']}"}
    listed = httpx.get(f"{cluster.a.url}/v1/calls", headers=headers, timeout=10).json()
    assert call_id in [call["id"] for call in listed["calls"]]


def test_one_instance_places_the_call_the_other_serves_it(
    cluster: Cluster, fake_twilio: FakeTwilioRest
):
    prompts = {p.name: p for p in asterisk_prompts()}
    to = "+1500555" + str(secrets.randbelow(10**4)).zfill(4)
    callee = fake_twilio.answer_with(to, Callee([prompts["hours"].wav, prompts["vm-goodbye"].wav]))
    headers = {"Authorization": f"Bearer {cluster.a.env['CALLGATE_API_KEY']}"}
    body = {"to": to, "from": "+15005550001", "provider": "twilio", "agent": "terse"}
    placed = httpx.post(f"{cluster.a.url}/v1/calls", json=body, headers=headers, timeout=30)
    assert placed.status_code == 201, placed.text
    call_id = placed.json()["id"]
    assert callee.done.wait(120) and callee.error is None, callee.error

    deadline = time.monotonic() + 10
    while (on_a := get_call(cluster.a, call_id))["status"] != "completed":
        assert time.monotonic() < deadline, on_a
        time.sleep(0.2)
    assert on_a["direction"] == "outbound" and on_a["hangup_by"] == "agent"
    heard = " ".join(t["text"] for t in on_a["transcript"] if t["role"] == "user").lower()
    assert "goodbye" in heard
    assert (started_here(cluster.a, call_id), started_here(cluster.b, call_id)) == (0, 1)
    assert get_call(cluster.b, call_id) == on_a


def webhook(server: Server) -> str:
    path = "/twilio/voice?agent=terse"
    form = voice_form()
    response = post_webhook(server, path, form, signed(server, path, form))
    assert response.status_code == 200
    return response.text


def test_cluster_limit_spans_instances_and_a_ringing_call_frees_its_slot(cluster: Cluster):
    # Each webhook goes straight to one instance, signed over the shared public URL.
    a = Server(cluster.a.url, cluster.a.process, cluster.a.log_path, cluster.env)
    b = Server(cluster.b.url, cluster.b.process, cluster.b.log_path, cluster.env)
    assert "<Stream" in webhook(a)  # admitted; its media never comes
    refused = webhook(b)  # the cluster's one slot is taken, on the other instance
    assert "<Stream" not in refused and "busy" in refused and "<Hangup" in refused
    assert "<Stream" not in webhook(a)
    time.sleep(TOKEN_TTL_SECS + 1)  # the ringing call's slot lapses with its call token
    assert "<Stream" in webhook(b)
