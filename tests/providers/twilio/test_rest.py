import base64
import socket
from collections.abc import Iterator

import pytest

from providers.twilio.rest import TwilioApiError, TwilioRest
from tests.fakes.twilio_rest import FakeTwilioRest

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTwilioRest]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # an ambient proxy must not interfere
    with FakeTwilioRest() as server:
        yield server


@pytest.fixture
def outside_hosts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Refuses name resolution of any non-loopback host and records who asked for one."""
    asked: list[str] = []
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in LOOPBACK:
            asked.append(name)
            raise OSError(f"test refuses non-loopback host {name}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    return asked


def client_for(fake: FakeTwilioRest, **kwargs: object) -> TwilioRest:
    return TwilioRest(fake.account_sid, fake.auth_token, api_base=fake.base_url, **kwargs)


async def test_hangup_posts_status_completed(
    fake: FakeTwilioRest, outside_hosts: list[str]
) -> None:
    call = fake.add_call()
    await client_for(fake).hangup(call.sid)

    [req] = fake.requests
    assert req.method == "POST"
    assert req.path == f"/2010-04-01/Accounts/{fake.account_sid}/Calls/{call.sid}.json"
    assert req.form_pairs == [("Status", "completed")]
    assert req.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert req.headers["Accept"] == "application/json"
    expected = base64.b64encode(f"{fake.account_sid}:{fake.auth_token}".encode()).decode()
    assert req.headers["Authorization"] == f"Basic {expected}"
    assert req.headers["User-Agent"].startswith("twilio-python/")
    assert fake.calls[call.sid].status == "completed"
    assert outside_hosts == []


async def test_redirect_sends_twiml_and_fails_once_the_call_ended(fake: FakeTwilioRest) -> None:
    call = fake.add_call()
    rest = client_for(fake)
    twiml = '<?xml version="1.0" encoding="UTF-8"?><Response><Dial>+15005550009</Dial></Response>'
    await rest.redirect(call.sid, twiml)
    assert fake.requests[-1].form == {"Twiml": twiml}
    assert fake.calls[call.sid].twiml == twiml

    await rest.hangup(call.sid)
    with pytest.raises(TwilioApiError) as err:
        await rest.redirect(call.sid, twiml)
    assert (err.value.status, err.value.code) == (400, 21220)


async def test_create_call_returns_the_new_sid(fake: FakeTwilioRest) -> None:
    rest = client_for(fake)
    sid = await rest.create_call(
        "+15005550006",
        "+15005550001",
        "<Response/>",
        status_callback="https://gw.example/twilio/status",
        status_events=["initiated", "answered", "completed"],
    )
    assert sid.startswith("CA") and sid in fake.calls
    [req] = fake.requests
    assert req.path == f"/2010-04-01/Accounts/{fake.account_sid}/Calls.json"
    assert req.form == {
        "To": "+15005550006",
        "From": "+15005550001",
        "Twiml": "<Response/>",
        "StatusCallback": "https://gw.example/twilio/status",
        "StatusCallbackEvent": "completed",
    }
    assert req.getlist("StatusCallbackEvent") == ["initiated", "answered", "completed"]
    assert fake.calls[sid].status == "queued"


async def test_create_call_without_callback_sends_only_the_required_fields(
    fake: FakeTwilioRest,
) -> None:
    await client_for(fake).create_call("+15005550006", "+15005550001", "<Response/>")
    assert set(fake.requests[0].form) == {"To", "From", "Twiml"}


async def test_wrong_credentials_surface_as_authenticate_error(fake: FakeTwilioRest) -> None:
    call = fake.add_call()
    rest = TwilioRest(fake.account_sid, "not-the-token", api_base=fake.base_url)
    with pytest.raises(TwilioApiError, match=r"HTTP 401, code 20003: .*Authenticate") as err:
        await rest.hangup(call.sid)
    assert (err.value.status, err.value.code) == (401, 20003)
    assert fake.calls[call.sid].status == "in-progress"
    assert "not-the-token" not in str(err.value)


async def test_unknown_call_is_a_404(fake: FakeTwilioRest) -> None:
    with pytest.raises(TwilioApiError) as err:
        await client_for(fake).hangup("CA" + "0" * 32)
    assert (err.value.status, err.value.code) == (404, 20404)


async def test_api_base_wins_over_edge_and_region(
    fake: FakeTwilioRest, outside_hosts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    monkeypatch.setenv("TWILIO_REGION", "au1")
    call = fake.add_call()
    await client_for(fake, edge="dublin", region="ie1").hangup(call.sid)
    assert len(fake.requests) == 1
    assert outside_hosts == []


async def test_api_base_may_carry_a_path_prefix(outside_hosts: list[str]) -> None:
    with FakeTwilioRest() as fake:
        rest = TwilioRest(fake.account_sid, fake.auth_token, api_base=fake.base_url + "/twilio/")
        with pytest.raises(TwilioApiError) as err:
            await rest.hangup(fake.add_call().sid)
        assert err.value.status == 404
        assert fake.requests[0].path.startswith("/twilio/2010-04-01/Accounts/")
    assert outside_hosts == []


async def test_without_api_base_the_sdk_would_reach_twilio(outside_hosts: list[str]) -> None:
    """Proves the guard above is real: the default client goes to api.twilio.com."""
    rest = TwilioRest("AC" + "0" * 32, "token", api_base=None, timeout=2)
    with pytest.raises(TwilioApiError, match="hangup failed"):
        await rest.hangup("CA" + "0" * 32)
    assert outside_hosts and set(outside_hosts) == {"api.twilio.com"}


async def test_unreachable_api_is_a_clear_error(fake: FakeTwilioRest) -> None:
    base = fake.base_url
    fake.__exit__(None, None, None)
    rest = TwilioRest(fake.account_sid, fake.auth_token, api_base=base, timeout=2)
    with pytest.raises(TwilioApiError, match="hangup failed"):
        await rest.hangup("CA" + "0" * 32)


async def test_from_env_reads_the_api_base(fake: FakeTwilioRest, outside_hosts: list[str]) -> None:
    env = {
        "TWILIO_ACCOUNT_SID": fake.account_sid,
        "TWILIO_AUTH_TOKEN": fake.auth_token,
        "TWILIO_API_BASE": fake.base_url,
    }
    call = fake.add_call()
    await TwilioRest.from_env(env).hangup(call.sid)
    assert fake.calls[call.sid].status == "completed"
    assert outside_hosts == []


def test_api_base_must_be_http() -> None:
    with pytest.raises(ValueError, match="api_base"):
        TwilioRest("AC" + "1" * 32, "t", api_base="ftp://127.0.0.1")
