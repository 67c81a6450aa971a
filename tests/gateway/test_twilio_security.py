"""Security of the Twilio edge and the /v1 API, against a real `callgate serve` process:
signatures on webhooks and media upgrades, call tokens on the media stream, API keys."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus

from gateway.security import issue_call_token
from tests.gateway.server import Server
from tests.gateway.twilio_client import (
    TwilioStream,
    answer_call,
    api_get,
    api_key_header,
    call_ids,
    call_record,
    close_code,
    media_socket,
    media_url,
    metric,
    metrics_text,
    post_webhook,
    sign,
    signed,
    start_stream,
    upgrade_signature,
    voice_form,
    wait_for_status,
)

pytestmark = pytest.mark.slow

REJECTED = "callgate_calls_rejected_total"


def rejected(server: Server, reason: str) -> float:
    return metric(server, REJECTED, provider="twilio", reason=reason)


def calls_started(server: Server) -> float:
    return metric(server, "callgate_calls_total", provider="twilio")


def test_webhooks_without_a_valid_signature_are_refused(gateway: Server):
    before_ids, before_rejected = call_ids(gateway), rejected(gateway, "signature")
    path = "/twilio/voice?agent=terse"
    form = voice_form()
    good = signed(gateway, path, form)
    public = gateway.env["CALLGATE_PUBLIC_URL"]
    token = gateway.env["TWILIO_AUTH_TOKEN"]
    bad = {
        "missing": None,
        "garbage": "bm90IGEgc2lnbmF0dXJl",
        "other_auth_token": sign("0" * 32, public + path, form),
        "url_without_query": sign(token, public + "/twilio/voice", form),
        "url_other_query": sign(token, public + "/twilio/voice?agent=default", form),
        "url_other_host": sign(token, "https://evil.example" + path, form),
        "params_tampered": sign(token, public + path, {**form, "From": "+15550000000"}),
    }
    for name, signature in bad.items():
        response = post_webhook(gateway, path, form, signature)
        assert response.status_code == 403, (name, response.text)
        assert "<Stream" not in response.text
    status_form = {"CallSid": form["CallSid"], "CallStatus": "completed"}
    for signature in (None, sign("0" * 32, public + "/twilio/status", status_form)):
        assert post_webhook(gateway, "/twilio/status", status_form, signature).status_code == 403

    assert call_ids(gateway) == before_ids  # nothing was answered, no call record made
    assert rejected(gateway, "signature") == before_rejected + len(bad) + 2

    answered = post_webhook(gateway, path, form, good)  # the same request, rightly signed
    assert answered.status_code == 200 and "<Stream" in answered.text
    assert answered.headers["content-type"].startswith("application/xml")
    new = call_ids(gateway) - before_ids
    assert len(new) == 1
    record = call_record(gateway, new.pop())
    assert (record["agent"], record["status"]) == ("terse", "ringing")
    assert record["provider_call_id"] == form["CallSid"]
    status_form = {"CallSid": form["CallSid"], "CallStatus": "in-progress"}
    status_sig = signed(gateway, "/twilio/status", status_form)
    assert post_webhook(gateway, "/twilio/status", status_form, status_sig).status_code == 204
    assert call_record(gateway, record["id"])["provider_status"] == "in-progress"


async def test_media_upgrade_without_a_valid_signature_gets_403(gateway: Server):
    before = (call_ids(gateway), calls_started(gateway), rejected(gateway, "signature"))
    url = media_url(gateway)
    bad = {
        "missing": None,
        "garbage": "bm90IGEgc2lnbmF0dXJl",
        "other_auth_token": upgrade_signature(gateway, auth_token="0" * 32),
        "http_scheme": upgrade_signature(gateway, url=gateway.url + "/twilio/media"),
        "other_path": upgrade_signature(gateway, url=url.replace("/media", "/voice")),
    }
    for name, signature in bad.items():
        with pytest.raises(InvalidStatus) as refused:
            async with media_socket(gateway, signature):
                pass
        assert refused.value.response.status_code == 403, name
    after = (call_ids(gateway), calls_started(gateway), rejected(gateway, "signature"))
    assert after == (before[0], before[1], before[2] + len(bad))


async def test_media_start_without_a_good_call_token_is_closed_1008(gateway: Server):
    secret = gateway.env["CALLGATE_SECRET"]
    ringing = answer_call(gateway)  # a genuine call, whose own token is not used below
    body, mac = ringing.token.split(".")
    forged_claims = issue_call_token(secret, "cg_forged", "twilio", "terse", 300).split(".")[0]
    tokens = {
        "missing": None,
        "empty": "",
        "garbage": "not-a-token",
        "forged_mac": f"{body}.{mac[:-4]}AAAA",
        "forged_claims": f"{forged_claims}.{mac}",
        "other_secret": issue_call_token("x" * 32, ringing.call_id, "twilio", "terse", 300),
        "expired": issue_call_token(secret, ringing.call_id, "twilio", "terse", -5),
        "other_provider": issue_call_token(secret, ringing.call_id, "plivo", "terse", 300),
        "unknown_agent": issue_call_token(secret, ringing.call_id, "twilio", "nobody", 300),
    }
    before = (call_ids(gateway), calls_started(gateway), rejected(gateway, "token"))

    async def refused(token: str | None) -> int | None:
        async with media_socket(gateway) as ws:
            await start_stream(ws, TwilioStream(), token)
            return await close_code(ws)

    codes = await asyncio.gather(*(refused(token) for token in tokens.values()))
    assert dict(zip(tokens, codes, strict=True)) == {name: 1008 for name in tokens}
    assert call_ids(gateway) == before[0]
    assert calls_started(gateway) == before[1]
    assert rejected(gateway, "token") == before[2] + len(tokens)
    assert call_record(gateway, ringing.call_id)["status"] == "ringing"


async def test_a_call_token_serves_one_stream_only(gateway: Server):
    answered = answer_call(gateway)
    before_started = calls_started(gateway)
    first = TwilioStream(answered.call_sid)
    async with media_socket(gateway) as ws:
        await start_stream(ws, first, answered.token)
        async with asyncio.timeout(10):
            while '"media"' not in await ws.recv():  # the greeting: the call is live
                pass
        assert call_record(gateway, answered.call_id)["status"] == "in-progress"
        async with media_socket(gateway) as replay:  # the same token, while the call is live
            await start_stream(replay, TwilioStream(answered.call_sid), answered.token)
            assert await close_code(replay) == 1008
        await ws.send(first.stop())
        assert await close_code(ws) == 1000
    record = await wait_for_status(gateway, answered.call_id, "completed")
    assert record["end_reason"] == "stopped"
    async with media_socket(gateway) as late:  # and once the call is over
        await start_stream(late, TwilioStream(answered.call_sid), answered.token)
        assert await close_code(late) == 1008
    assert calls_started(gateway) == before_started + 1


def test_api_needs_the_key_or_the_calls_own_token(gateway: Server):
    assert api_get(gateway, "/v1/calls").status_code == 401
    assert api_get(gateway, "/v1/calls", Authorization="Bearer").status_code == 401
    basic = api_get(gateway, "/v1/calls", Authorization="Basic dXNlcjpwYXNz")
    assert basic.status_code == 401
    wrong = api_get(gateway, "/v1/calls", Authorization="Bearer wrong-key")
    assert wrong.status_code == 403
    assert set(wrong.json()["error"]) == {"code", "message"}
    assert api_get(gateway, "/v1/calls", **api_key_header(gateway)).status_code == 200

    mine, other = answer_call(gateway), answer_call(gateway)
    own = {"X-Callgate-Call-Token": mine.token}
    assert api_get(gateway, f"/v1/calls/{mine.call_id}", **own).status_code == 200
    assert api_get(gateway, f"/v1/calls/{other.call_id}", **own).status_code == 403
    assert api_get(gateway, "/v1/calls", **own).status_code == 401  # not the list
    forged = {"X-Callgate-Call-Token": mine.token[:-4] + "AAAA"}
    assert api_get(gateway, f"/v1/calls/{mine.call_id}", **forged).status_code == 403
    missing = api_get(gateway, "/v1/calls/cg_nonexistent", **api_key_header(gateway))
    assert missing.status_code == 404


def test_health_readiness_and_metrics(gateway: Server):
    assert api_get(gateway, "/healthz").status_code == 200
    ready = api_get(gateway, "/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "models": True, "draining": False}
    text = metrics_text(gateway)
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {
        "callgate_calls",
        "callgate_calls_active",
        "callgate_calls_rejected",
        "callgate_media_frames_in",
        "callgate_media_frames_out",
        "callgate_turn_latency_seconds",
    } <= names
    assert "# TYPE callgate_calls_total counter" in text
