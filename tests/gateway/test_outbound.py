"""Outbound calls end to end: `POST /v1/calls` on a real `callgate serve`, the fake provider
places the call (signed callbacks, the media stream, a simulated callee speaking real prompts),
the agent hangs up, and the status webhook reaches a loopback receiver with the transcript."""

from __future__ import annotations

import itertools
import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree as ET

import httpx
import pytest

from gateway.status_webhooks import SIGNATURE_HEADER, verify
from tests.corpus import asterisk_prompts
from tests.fakes.phone import Callee
from tests.fakes.plivo_rest import FakePlivoRest
from tests.fakes.twilio_rest import FakeTwilioRest
from tests.gateway.server import CALLGATE, Server, start_server, write_config
from tests.gateway.webhook_receiver import Delivery, WebhookReceiver

pytestmark = pytest.mark.slow

OUTBOUND_AGENT = {
    "greeting": "Hello, this is Callgate calling about your order.",
    "llm": {
        "provider": "scripted",
        "intents": [
            {
                "name": "goodbye",
                "keywords": ["goodbye"],
                "reply": "Goodbye {customer_name}!",
                "tool": "end_call",
            }
        ],
        "fallback": "Thanks {customer_name}, order {order_number} ships today.",
    },
}
VARIABLES = {"customer_name": "Ada", "order_number": "A17"}
FROM = "+15005550001"
TWILIO_EVENTS = ["initiated", "ringing", "answered", "completed"]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory, fake_twilio: FakeTwilioRest, fake_plivo: FakePlivoRest
) -> Iterator[Server]:
    directory: Path = tmp_path_factory.mktemp("outbound")
    config = write_config(directory, {"outbound": OUTBOUND_AGENT})
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


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


def api(server: Server, method: str, path: str, body: object = None, **headers: str):
    headers = {"Authorization": f"Bearer {server.env['CALLGATE_API_KEY']}", **headers}
    return httpx.request(method, server.url + path, json=body, headers=headers, timeout=30)


def number() -> str:
    return "+1500555" + str(secrets.randbelow(10**4)).zfill(4)


def outbound(provider: str, to: str, receiver: WebhookReceiver | None = None) -> dict:
    body = {"to": to, "from": FROM, "provider": provider, "agent": "outbound"}
    body["variables"] = VARIABLES
    if receiver is not None:
        body["status_webhook"] = receiver.hook_url
    return body


def callee_saying_goodbye() -> Callee:
    prompts = {p.name: p for p in asterisk_prompts()}
    return Callee([prompts["hours"].wav, prompts["vm-goodbye"].wav])


def check_completed(server: Server, deliveries: list[Delivery], call_id: str) -> dict:
    """Every delivery verifies; the completed one carries the transcript; the record agrees."""
    for delivery in deliveries:
        header = delivery.headers[SIGNATURE_HEADER]
        assert verify(server.env["CALLGATE_API_KEY"], delivery.body, header)
        assert not verify("another-key", delivery.body, header)
    completed = deliveries[-1].json
    assert completed["event"] == "completed"
    call = completed["call"]
    said = [t["text"] for t in call["transcript"] if t["role"] == "assistant"]
    assert said[0] == OUTBOUND_AGENT["greeting"]
    assert "Thanks Ada, order A17 ships today." in said  # the variables reached the prompt
    assert said[-1] == "Goodbye Ada!"
    heard = " ".join(t["text"] for t in call["transcript"] if t["role"] == "user").lower()
    assert "goodbye" in heard
    assert call["summary"]["hangup_by"] == "agent" and call["summary"]["duration_secs"] > 1
    record = api(server, "GET", f"/v1/calls/{call_id}").json()
    assert (record["status"], record["direction"]) == ("completed", "outbound")
    assert record["variables"] == VARIABLES and record["transcript"] == call["transcript"]
    return call


def test_twilio_outbound_call_end_to_end(server, fake_twilio, receiver):
    to = number()
    callee = fake_twilio.answer_with(to, callee_saying_goodbye())
    response = api(server, "POST", "/v1/calls", outbound("twilio", to, receiver))
    assert response.status_code == 201, response.text
    created = response.json()
    call_id, sid = created["id"], created["provider_call_id"]
    assert created["provider"] == "twilio" and sid.startswith("CA")

    create = next(r for r in fake_twilio.requests if r.form.get("To") == to)
    assert (create.method, create.path) == (
        "POST", f"/2010-04-01/Accounts/{fake_twilio.account_sid}/Calls.json"
    )
    assert create.form["From"] == FROM and "Url" not in create.form
    stream = ET.fromstring(create.form["Twiml"]).find("Connect/Stream")
    assert stream is not None and stream.get("url") == "ws" + server.url[4:] + "/twilio/media"
    parameters = {p.get("name"): p.get("value") for p in stream.iter("Parameter")}
    assert parameters["call_id"] == call_id and parameters["token"]
    assert create.form["StatusCallback"] == f"{server.url}/twilio/status?call_id={call_id}"
    assert create.getlist("StatusCallbackEvent") == TWILIO_EVENTS

    assert callee.done.wait(120) and callee.error is None, callee.error
    assert callee.hangup_by in ("agent", "rest_api")  # socket closed, or the REST hang-up first
    deliveries = receiver.wait_for(call_id, "completed", timeout=20)
    assert [d.json["event"] for d in deliveries] == TWILIO_EVENTS
    check_completed(server, deliveries, call_id)
    hangups = [r for r in fake_twilio.requests if r.path.endswith(f"/Calls/{sid}.json")]
    assert [r.form for r in hangups] == [{"Status": "completed"}]


def test_plivo_outbound_call_end_to_end(server, fake_plivo, receiver):
    to = number()
    callee = fake_plivo.answer_with(to, callee_saying_goodbye())
    response = api(server, "POST", "/v1/calls", outbound("plivo", to, receiver))
    assert response.status_code == 201, response.text
    call_id = response.json()["id"]

    create = next(c for c in fake_plivo.created if c["to"] == to[1:])
    assert create["from"] == FROM[1:] and create["answer_method"] == "POST"
    answer_url = urlsplit(create["answer_url"])
    assert server.url + answer_url.path == f"{server.url}/plivo/answer"
    query = parse_qs(answer_url.query)
    assert query["call_id"] == [call_id] and query["token"][0].isalnum()
    assert create["hangup_url"] == f"{server.url}/plivo/hangup?call_id={call_id}"

    assert callee.done.wait(120) and callee.error is None, callee.error
    deliveries = receiver.wait_for(call_id, "completed", timeout=20)
    assert [d.json["event"] for d in deliveries] == ["initiated", "answered", "completed"]
    call = check_completed(server, deliveries, call_id)
    assert call["provider_call_id"] in fake_plivo.calls  # the answered call's UUID, linked
    uuid = call["provider_call_id"]
    hangups = [r for r in fake_plivo.requests if r.path.endswith(f"/Call/{uuid}/")]
    assert [r.method for r in hangups] == ["DELETE"]
    listed = api(server, "GET", "/v1/calls").json()["calls"]
    assert [r["id"] for r in listed].count(call_id) == 1  # the answer reused the record


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"to": None}, "to", "required"),
        ({"to": "0044 20 7946 0000"}, "to", "E.164"),
        ({"from": "+0123"}, "from", "E.164"),
        ({"provider": "skype"}, "provider", "twilio, plivo"),
        ({"agent": "nobody"}, "agent", "nobody"),
        ({"variables": {"name": 3}}, "variables.name", "string"),
        ({"variables": {"bad name": "x"}}, "variables", "letters"),
        ({"variables": {"v": "x" * 1001}}, "variables", "longer than"),
        ({"variables": {f"v{i}": "x" for i in range(51)}}, "variables", "at most"),
        ({"status_webhook": "ftp://example.test/hook"}, "status_webhook", "http"),
        ({"colour": "blue"}, "colour", "not a field"),
    ],
)
def test_invalid_requests_get_422_naming_the_field(server, fake_twilio, change, field, words):
    body = {**outbound("twilio", number()), **change}
    body = {key: value for key, value in body.items() if value is not None}
    before = len(fake_twilio.requests)
    response = api(server, "POST", "/v1/calls", body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("validation_error", field)
    assert words in error["message"] and error["message"].startswith(field)
    assert len(fake_twilio.requests) == before


def test_a_body_that_is_not_json_gets_422(server):
    response = httpx.post(
        server.url + "/v1/calls",
        content=b"to=+15005550006",
        headers={"Authorization": f"Bearer {server.env['CALLGATE_API_KEY']}"},
    )
    assert response.status_code == 422 and response.json()["error"]["field"] is None


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/calls"), ("DELETE", "/v1/calls/x")])
def test_the_api_key_is_required(server, method, path):
    body = outbound("twilio", number())
    missing = httpx.request(method, server.url + path, json=body, timeout=10)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
    wrong = httpx.request(
        method, server.url + path, json=body, timeout=10,
        headers={"Authorization": "Bearer " + server.env["CALLGATE_API_KEY"] + "x"},
    )
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "forbidden"


def test_delete_hangs_up_through_the_provider(server, fake_twilio, receiver):
    to = number()
    prompts = {p.name: p for p in asterisk_prompts()}
    long_talk = [prompts["hours"].wav] * 4
    callee = fake_twilio.answer_with(to, Callee(long_talk))
    call_id = api(server, "POST", "/v1/calls", outbound("twilio", to, receiver)).json()["id"]
    deadline = time.monotonic() + 30
    while api(server, "GET", f"/v1/calls/{call_id}").json()["status"] != "in-progress":
        assert time.monotonic() < deadline, "the call never started"
        time.sleep(0.1)

    sid = api(server, "GET", f"/v1/calls/{call_id}").json()["provider_call_id"]
    response = api(server, "DELETE", f"/v1/calls/{call_id}")
    assert response.status_code == 202, response.text
    hangups = [r for r in fake_twilio.requests if r.path.endswith(f"/Calls/{sid}.json")]
    assert [r.form for r in hangups] == [{"Status": "completed"}]
    assert callee.done.wait(10) and callee.hangup_by == "rest_api"
    completed = receiver.wait_for(call_id, "completed", timeout=10)[-1].json["call"]
    assert completed["hangup_by"] == "api" and completed["status"] == "completed"
    assert api(server, "DELETE", f"/v1/calls/{call_id}").status_code == 204  # already over
    assert api(server, "DELETE", "/v1/calls/cg_unknown").status_code == 404


def test_status_webhook_retries_with_backoff_without_holding_the_call(
    server, fake_twilio, receiver
):
    receiver.fail_first = 2
    started = time.monotonic()
    response = api(server, "POST", "/v1/calls", outbound("twilio", number(), receiver))
    assert response.status_code == 201 and time.monotonic() - started < 1.0
    call_id = response.json()["id"]
    deadline = time.monotonic() + 10
    while len(receiver.for_call(call_id)) < 3:
        assert time.monotonic() < deadline, receiver.deliveries
        time.sleep(0.05)
    tries = receiver.for_call(call_id)
    assert [d.json["event"] for d in tries] == ["initiated"] * 3
    assert len({d.json["id"] for d in tries}) == 1  # one event, delivered again
    gaps = [b.at - a.at for a, b in itertools.pairwise(tries)]
    assert 0.4 < gaps[0] < 0.9 and 0.9 < gaps[1] < 1.6, gaps
    assert all(verify(server.env["CALLGATE_API_KEY"], d.body, d.headers[SIGNATURE_HEADER])
               for d in tries)


def test_provider_failure_is_a_502_with_its_message(server, fake_plivo, receiver):
    fake_plivo.fail_next(3)  # the SDK tries Plivo's voice API and its two fallbacks
    response = api(server, "POST", "/v1/calls", outbound("plivo", number(), receiver))
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "provider_error" and "create_call" in error["message"]
    assert fake_plivo.auth_token not in error["message"]
    deadline = time.monotonic() + 5
    while not receiver.deliveries:
        assert time.monotonic() < deadline, "no failed event"
        time.sleep(0.05)
    event = receiver.deliveries[0].json
    assert event["event"] == "failed" and event["call"]["status"] == "failed"
    assert event["call"]["summary"]["end_reason"] == "provider_error"


def test_callgate_dial(server, fake_plivo):
    to = number()
    args = [str(CALLGATE), "dial", "--gateway", server.url, "--to", to, "--from", FROM,
            "--provider", "plivo", "--agent", "outbound", "--var", "customer_name=Ada"]
    done = subprocess.run(args, capture_output=True, text=True, env=server.env, timeout=30)
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    assert created["provider"] == "plivo" and created["status"] == "initiated"
    record = api(server, "GET", f"/v1/calls/{created['id']}").json()
    assert record["variables"] == {"customer_name": "Ada"} and record["to"] == to
    assert any(c["to"] == to[1:] for c in fake_plivo.created)

    bad = subprocess.run(
        [*args[:5], "12345", *args[6:]], capture_output=True, text=True, env=server.env,
        timeout=30,
    )
    assert bad.returncode == 1 and "to: must be an E.164 number" in bad.stderr
