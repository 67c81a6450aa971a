import base64
import socket
from collections.abc import Iterator

import plivo.resources.lookup
import plivo.rest.base_client
import plivo.rest.client
import plivo.rest.phlo_client
import pytest

from providers.plivo.rest import PlivoApiError, PlivoRest, rebase_url
from tests.fakes.plivo_rest import FakePlivoRest

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture(autouse=True)
def resolved_hosts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every name resolution in these tests; any host but loopback is refused outright."""
    seen: list[str] = []
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else str(host)
        seen.append(name)
        if name not in LOOPBACK:
            raise OSError(f"test tried to reach {name}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    return seen


@pytest.fixture
def fake() -> Iterator[FakePlivoRest]:
    with FakePlivoRest() as server:
        yield server


@pytest.fixture
def rest(fake: FakePlivoRest) -> PlivoRest:
    return PlivoRest(fake.auth_id, fake.auth_token, api_base=fake.base_url, timeout=2)


def _sdk_hosts() -> set[str]:
    """Every absolute https URL constant the SDK's request paths may build on."""
    modules = (
        plivo.rest.client,
        plivo.rest.base_client,
        plivo.rest.phlo_client,
        plivo.resources.lookup,
    )
    return {
        value
        for module in modules
        for value in vars(module).values()
        if isinstance(value, str) and value.startswith("https://")
    }


def test_every_sdk_host_is_rebased_onto_the_override() -> None:
    hosts = _sdk_hosts()
    assert "https://api.plivo.com" in hosts and len(hosts) >= 3
    for host in hosts:
        url = f"{host}/v1/Account/MAXXXXXXXXXXXXXXXXXX/Call/?limit=1"
        rebased = rebase_url(url, "http://127.0.0.1:9/prefix/")
        assert rebased.startswith("http://127.0.0.1:9/prefix/"), rebased
        assert rebased.endswith("/Account/MAXXXXXXXXXXXXXXXXXX/Call/?limit=1")


def test_api_base_must_be_http() -> None:
    with pytest.raises(ValueError, match="PLIVO_API_BASE"):
        PlivoRest("MAXXXXXXXXXXXXXXXXXX", "t", api_base="api.plivo.com")


def _basic(fake: FakePlivoRest) -> str:
    return "Basic " + base64.b64encode(f"{fake.auth_id}:{fake.auth_token}".encode()).decode()


async def test_create_call(fake: FakePlivoRest, rest: PlivoRest) -> None:
    request_uuid = await rest.create_call(
        "14155550199",
        "14155550100",
        "https://gw.example.com/plivo/answer?agent=sales",
        "https://gw.example.com/plivo/hangup",
    )
    [created] = fake.created
    assert request_uuid == created["request_uuid"]
    [req] = fake.requests
    assert (req.method, req.path) == ("POST", f"/v1/Account/{fake.auth_id}/Call/")
    assert req.headers["authorization"] == _basic(fake)
    assert req.body["from"] == "14155550199" and req.body["to"] == "14155550100"
    assert req.body["answer_url"] == "https://gw.example.com/plivo/answer?agent=sales"
    assert req.body["answer_method"] == "POST"
    assert req.body["hangup_url"] == "https://gw.example.com/plivo/hangup"


async def test_hangup(fake: FakePlivoRest, rest: PlivoRest) -> None:
    call = fake.add_call()
    await rest.hangup(call.call_uuid)
    assert call.status == "completed"
    [req] = fake.requests
    assert req.method == "DELETE"
    assert req.path == f"/v1/Account/{fake.auth_id}/Call/{call.call_uuid}/"


async def test_hangup_of_an_unknown_call_is_not_found(rest: PlivoRest) -> None:
    with pytest.raises(PlivoApiError) as err:
        await rest.hangup("00000000-0000-0000-0000-000000000000")
    assert err.value.not_found


async def test_transfer(fake: FakePlivoRest, rest: PlivoRest) -> None:
    call = fake.add_call()
    await rest.transfer(call.call_uuid, "https://gw.example.com/plivo/transfer?to=sales")
    assert call.aleg_url == "https://gw.example.com/plivo/transfer?to=sales"
    [req] = fake.requests
    assert (req.method, req.path) == ("POST", f"/v1/Account/{fake.auth_id}/Call/{call.call_uuid}/")
    assert req.body["legs"] == "aleg" and req.body["aleg_method"] == "POST"


async def test_wrong_token_is_an_error_that_does_not_leak_it(fake: FakePlivoRest) -> None:
    rest = PlivoRest(fake.auth_id, "wrong-secret-token", api_base=fake.base_url)
    with pytest.raises(PlivoApiError) as err:
        await rest.hangup(fake.add_call().call_uuid)
    assert not err.value.not_found
    assert "wrong-secret-token" not in str(err.value)


async def test_server_errors_walk_every_fallback_host_and_all_hit_the_fake(
    fake: FakePlivoRest, rest: PlivoRest, resolved_hosts: list[str]
) -> None:
    call = fake.add_call()
    fake.fail_next(10, status=503)
    with pytest.raises(PlivoApiError):
        await rest.hangup(call.call_uuid)
    # The SDK tries its voice host, then each fallback host: three requests, all to the fake.
    assert len(fake.requests) == 3
    assert {req.host for req in fake.requests} == {fake.base_url.removeprefix("http://")}
    assert resolved_hosts and set(resolved_hosts) <= LOOPBACK  # the guard sat in the path
    assert call.status == "in-progress"


async def test_a_fallback_that_answers_succeeds(fake: FakePlivoRest, rest: PlivoRest) -> None:
    fake.fail_next(2, status=500)
    request_uuid = await rest.create_call(
        "14155550199", "14155550100", "https://gw.example.com/a", "https://gw.example.com/h"
    )
    assert len(fake.requests) == 3
    assert [c["request_uuid"] for c in fake.created] == [request_uuid]


async def test_unreachable_api_is_an_error(resolved_hosts: list[str]) -> None:
    with socket.socket() as sock:  # a loopback port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rest = PlivoRest("MAXXXXXXXXXXXXXXXXXX", "t", api_base=f"http://127.0.0.1:{port}", timeout=1)
    with pytest.raises(PlivoApiError, match="ConnectionError"):
        await rest.hangup("00000000-0000-0000-0000-000000000000")
    assert set(resolved_hosts) <= LOOPBACK
