"""One real gateway process, with fake Twilio and Plivo REST APIs behind it, shared by the e2e
tests of both providers."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.plivo_rest import FakePlivoRest
from tests.fakes.twilio_rest import FakeTwilioRest
from tests.gateway.server import CHATTY_AGENT, TEST_AGENT, Server, start_server, write_config


@pytest.fixture(scope="session")
def fake_twilio() -> Iterator[FakeTwilioRest]:
    with FakeTwilioRest() as fake:
        yield fake


@pytest.fixture(scope="session")
def fake_plivo() -> Iterator[FakePlivoRest]:
    with FakePlivoRest() as fake:
        yield fake


@pytest.fixture(scope="session")
def gateway(
    tmp_path_factory, fake_twilio: FakeTwilioRest, fake_plivo: FakePlivoRest
) -> Iterator[Server]:
    directory: Path = tmp_path_factory.mktemp("gateway")
    config = write_config(directory, {"terse": TEST_AGENT, "chatty": CHATTY_AGENT})
    env = {
        "CALLGATE_API_KEY": "test-api-key-" + secrets.token_hex(8),
        "CALLGATE_SECRET": secrets.token_hex(16),
        "TWILIO_ACCOUNT_SID": fake_twilio.account_sid,
        "TWILIO_AUTH_TOKEN": fake_twilio.auth_token,
        "TWILIO_API_BASE": fake_twilio.base_url,
        "PLIVO_AUTH_ID": fake_plivo.auth_id,
        "PLIVO_AUTH_TOKEN": fake_plivo.auth_token,
        "PLIVO_API_BASE": fake_plivo.base_url,
    }
    server = start_server(config, env, directory / "server.log")
    yield server
    assert server.stop() == 0
