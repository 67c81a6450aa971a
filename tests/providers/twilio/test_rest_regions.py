"""Twilio's edge and region choose the REST host: proven on a loopback proxy that records the
host each request would tunnel to, and refuses it."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from providers.twilio.rest import TwilioApiError, TwilioRest
from tests.fakes.connect_proxy import RecordingProxy

SID = "AC" + "0" * 32
CALL = "CA" + "0" * 32


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingProxy]:
    """Every HTTPS request goes through the recording proxy; no name but 127.0.0.1 resolves."""
    real = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name != "127.0.0.1":
            raise OSError(f"test refuses to resolve {name}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    for variable in ("NO_PROXY", "no_proxy", "TWILIO_EDGE", "TWILIO_REGION"):
        monkeypatch.delenv(variable, raising=False)
    with RecordingProxy() as recording:
        monkeypatch.setenv("HTTPS_PROXY", recording.url)
        yield recording


async def hangup_target(rest: TwilioRest, proxy: RecordingProxy) -> str:
    with pytest.raises(TwilioApiError, match="hangup failed"):
        await rest.hangup(CALL)
    [target] = proxy.targets
    return target


@pytest.mark.parametrize(
    ("edge", "region", "host"),
    [
        ("dublin", "ie1", "api.dublin.ie1.twilio.com"),
        ("sydney", "au1", "api.sydney.au1.twilio.com"),
        ("ashburn", None, "api.ashburn.us1.twilio.com"),
        (None, "ie1", "api.ie1.twilio.com"),
        (None, None, "api.twilio.com"),
    ],
)
async def test_edge_and_region_pick_the_host(
    proxy: RecordingProxy, edge: str | None, region: str | None, host: str
) -> None:
    rest = TwilioRest(SID, "token", edge=edge, region=region, timeout=5)
    assert await hangup_target(rest, proxy) == f"{host}:443"


async def test_from_env_reads_edge_and_region(proxy: RecordingProxy) -> None:
    env = {
        "TWILIO_ACCOUNT_SID": SID,
        "TWILIO_AUTH_TOKEN": "token",
        "TWILIO_EDGE": "dublin",
        "TWILIO_REGION": "ie1",
    }
    rest = TwilioRest.from_env(env)
    assert await hangup_target(rest, proxy) == "api.dublin.ie1.twilio.com:443"
