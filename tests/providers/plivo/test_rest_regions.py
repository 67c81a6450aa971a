"""Plivo's regional API hosts, per instance: the first takes every request, a voice request
answered with a 5xx moves on to the next. Both hosts are loopback fakes."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from providers.plivo.rest import PlivoRest, parse_hosts
from tests.fakes.plivo_rest import FakePlivoRest

ANSWER = "https://gw.example.com/plivo/answer"
HANGUP = "https://gw.example.com/plivo/hangup"


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name != "127.0.0.1":
            raise OSError(f"test refuses to resolve {name}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


@pytest.fixture
def hosts() -> Iterator[tuple[FakePlivoRest, FakePlivoRest]]:
    with FakePlivoRest() as near, FakePlivoRest(near.auth_id, near.auth_token) as far:
        yield near, far


def rest_for(near: FakePlivoRest, far: FakePlivoRest) -> PlivoRest:
    return PlivoRest(near.auth_id, near.auth_token, api_hosts=f"{near.base_url}, {far.base_url}/")


async def test_requests_go_to_the_first_host(hosts: tuple[FakePlivoRest, FakePlivoRest]) -> None:
    near, far = hosts
    call = near.add_call()
    rest = rest_for(near, far)
    await rest.create_call("14155550199", "14155550100", ANSWER, HANGUP)
    await rest.hangup(call.call_uuid)
    assert [r.method for r in near.requests] == ["POST", "DELETE"]
    assert far.requests == []


async def test_a_server_error_moves_a_voice_request_to_the_next_host(
    hosts: tuple[FakePlivoRest, FakePlivoRest],
) -> None:
    near, far = hosts
    near.fail_next(1, status=503)
    request_uuid = await rest_for(near, far).create_call(
        "14155550199", "14155550100", ANSWER, HANGUP
    )
    assert len(near.requests) == 1 and len(far.requests) == 1
    assert [created["request_uuid"] for created in far.created] == [request_uuid]


async def test_the_last_host_takes_the_remaining_retries(
    hosts: tuple[FakePlivoRest, FakePlivoRest],
) -> None:
    near, far = hosts
    near.fail_next(1)
    far.fail_next(1)
    await rest_for(near, far).create_call("14155550199", "14155550100", ANSWER, HANGUP)
    assert len(near.requests) == 1 and len(far.requests) == 2


async def test_api_base_wins_over_api_hosts(hosts: tuple[FakePlivoRest, FakePlivoRest]) -> None:
    near, far = hosts
    rest = PlivoRest(near.auth_id, near.auth_token, api_base=far.base_url, api_hosts=near.base_url)
    await rest.create_call("14155550199", "14155550100", ANSWER, HANGUP)
    assert near.requests == [] and len(far.requests) == 1


def test_hosts_are_parsed_and_checked() -> None:
    assert parse_hosts(None) == ()
    assert parse_hosts(" https://a.example/ ,,https://b.example") == (
        "https://a.example",
        "https://b.example",
    )
    assert parse_hosts(["http://127.0.0.1:9"]) == ("http://127.0.0.1:9",)
    with pytest.raises(ValueError, match="PLIVO_API_HOSTS"):
        parse_hosts("api.plivo.com")
    with pytest.raises(ValueError, match="PLIVO_API_HOSTS"):
        PlivoRest("MAXXXXXXXXXXXXXXXXXX", "t", api_hosts="ftp://127.0.0.1")
