"""`transfer_call` on a Plivo call, end to end: the scripted agent hears "extension", the gateway
moves the call's A leg through the (fake) Plivo Call Transfer API to `/plivo/transfer`, and that
URL, fetched as Plivo would, answers the `<Dial>`, for the signed target only."""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.fakes.plivo_rest import FakePlivoRest
from tests.gateway.plivo_client import answer_form, signature
from tests.gateway.server import Server, start_server, write_config
from tests.gateway.test_plivo_e2e import start_call
from tests.gateway.test_tools_e2e import TRANSFER_TO, _agent, _prompt
from tests.gateway.test_twilio_e2e import finish_call, said_by
from tests.gateway.twilio_client import call_record

pytestmark = pytest.mark.slow

CALLED = "+15005550006"
"""The number the simulated caller dials (`callgate call`'s default `--to`): the caller id."""


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[Server, FakePlivoRest]]:
    directory: Path = tmp_path_factory.mktemp("plivo_transfer")
    config = write_config(directory, {"tools": _agent("/unused", "http://127.0.0.1:9")})
    with FakePlivoRest() as plivo:
        env = {
            "CALLGATE_API_KEY": "test-api-key-" + secrets.token_hex(8),
            "CALLGATE_SECRET": secrets.token_hex(16),
            "PLIVO_AUTH_ID": plivo.auth_id,
            "PLIVO_AUTH_TOKEN": plivo.auth_token,
            "PLIVO_API_BASE": plivo.base_url,
        }
        gateway = start_server(config, env, directory / "server.log")
        yield gateway, plivo
        assert gateway.stop() == 0


def _fetch(gateway: Server, url: str, form: dict[str, str], headers: dict | None = None):
    """POST `url` (a public URL of the gateway) as Plivo fetches an aleg_url: V3-signed."""
    path = url.removeprefix(gateway.env["CALLGATE_PUBLIC_URL"])
    signed = signature(gateway, path, form) if headers is None else headers
    return httpx.post(gateway.url + path, data=form, headers=signed, timeout=10)


def test_transfer_moves_the_a_leg_to_a_signed_dial(server):
    gateway, plivo = server
    live = plivo.add_call(to=CALLED.removeprefix("+"))
    call = start_call(gateway, [_prompt("transfer")], "--agent", "tools", "--call-sid",
                      live.call_uuid)
    summary = finish_call(call, 120)[-1]
    assert "Transferring you now." in said_by(summary, "assistant")
    assert summary["hangup_by"] == "agent"  # the stream ends: the call left for the <Dial>
    record = call_record(gateway, summary["call_id"])
    assert (record["hangup_by"], record["end_reason"]) == ("transfer", "transferred")

    posts = [r for r in plivo.requests if r.path.endswith(f"/Call/{live.call_uuid}/")]
    assert [r.method for r in posts] == ["POST"]  # a transfer, and no hang-up after it
    body = posts[0].body
    assert (body["legs"], body["aleg_method"]) == ("aleg", "POST")
    aleg_url = body["aleg_url"]
    assert plivo.calls[live.call_uuid].aleg_url == aleg_url
    public = gateway.env["CALLGATE_PUBLIC_URL"]
    assert aleg_url.startswith(public + "/plivo/transfer?t=")
    assert TRANSFER_TO.removeprefix("+") not in aleg_url  # the target travels signed only

    form = {**answer_form(live.call_uuid), "CallStatus": "in-progress"}
    answered = _fetch(gateway, aleg_url, form)
    assert answered.status_code == 200, answered.text
    assert answered.headers["content-type"].startswith("application/xml")
    [dial] = list(ET.fromstring(answered.text))
    assert (dial.tag, dial.get("callerId")) == ("Dial", CALLED.removeprefix("+"))
    assert [(n.tag, n.text) for n in dial] == [("Number", TRANSFER_TO.removeprefix("+"))]

    token = parse_qs(urlsplit(aleg_url).query)["t"][0]
    body_part, mac = token.split(".")
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    refused = {
        "tampered_token": (f"{public}/plivo/transfer?t={body_part}.{flipped}", form, None),
        "bare_target": (f"{public}/plivo/transfer?to=%2B19005550100", form, None),
        "no_token": (f"{public}/plivo/transfer", form, None),
        "other_call": (aleg_url, {**form, "CallUUID": secrets.token_hex(8)}, None),
        "unsigned": (aleg_url, form, {}),
        "other_auth_token": (
            aleg_url, form, signature(gateway, aleg_url.removeprefix(public), form, token="0" * 40)
        ),
    }
    for name, (url, sent, headers) in refused.items():
        response = _fetch(gateway, url, sent, headers)
        assert response.status_code == 403, (name, response.text)
        assert "<Dial" not in response.text, name
