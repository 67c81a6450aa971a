"""The simulated phone's Plivo dialect against the gateway's own Plivo pieces: the answer XML
it reads, the signatures it makes, and the stream messages the gateway's core parses."""

from __future__ import annotations

import json

import pytest

from gateway.security import encode_token_alnum, issue_call_token
from gateway.simulated_plivo import PlivoDialect
from providers.events import AudioIn, CallStarted, PlaybackMarked
from providers.plivo.media import PlivoMediaProtocol
from providers.plivo.signature import NONCE_HEADER, SIGNATURE_HEADER, verify_webhook
from providers.plivo.xml import speak_and_hangup_xml, stream_xml

AUTH_TOKEN = "plivo-auth-token"
PUBLIC = "https://callgate.example.test"
CALL_ID = "cg_" + "0123456789abcdef" * 2
TOKEN = issue_call_token("secret", CALL_ID, "plivo", "terse", 300)


def answered_dialect() -> tuple[PlivoDialect, str]:
    dialect = PlivoDialect(AUTH_TOKEN, "+15005550006", "+15005550001", "uuid-1")
    headers = {"calltoken": encode_token_alnum(TOKEN), "callid": CALL_ID.encode().hex()}
    xml = stream_xml("wss://callgate.example.test/plivo/media", headers)
    answer = dialect.parse_answer(xml)
    assert answer.verbs == ["Stream"]
    assert answer.stream_url == "wss://callgate.example.test/plivo/media"
    assert answer.parameters == {"token": TOKEN, "call_id": CALL_ID}
    return dialect, answer.stream_url


def test_answer_webhook_is_signed_like_plivo():
    dialect = PlivoDialect(AUTH_TOKEN, "+15005550006", "+15005550001")
    request = dialect.webhook("http://127.0.0.1:9", PUBLIC, "terse")
    assert request.url == "http://127.0.0.1:9/plivo/answer?agent=terse"
    assert (request.form["To"], request.form["From"]) == ("15005550006", "15005550001")
    assert request.form["CallUUID"] == dialect.call_uuid
    nonce, sig = request.headers[NONCE_HEADER], request.headers[SIGNATURE_HEADER]
    url = PUBLIC + "/plivo/answer?agent=terse"
    assert verify_webhook(AUTH_TOKEN, url, nonce, sig, request.form)
    assert not verify_webhook(AUTH_TOKEN, PUBLIC + "/plivo/answer", nonce, sig, request.form)


def test_upgrade_is_signed_over_the_stream_urls_http_form():
    dialect, stream_url = answered_dialect()
    ws_url, headers = dialect.stream_target("http://127.0.0.1:9", stream_url)
    assert ws_url == "ws://127.0.0.1:9/plivo/media"
    nonce, sig = headers[NONCE_HEADER], headers[SIGNATURE_HEADER]
    assert verify_webhook(AUTH_TOKEN, PUBLIC + "/plivo/media", nonce, sig, None, "GET")


def test_stream_messages_are_what_the_gateways_core_expects():
    dialect, _ = answered_dialect()
    core = PlivoMediaProtocol()
    assert dialect.connected() is None and dialect.stop() is None
    [started] = core.receive_text(dialect.start({}))
    assert isinstance(started, CallStarted)
    assert (started.provider_call_id, started.stream_id) == ("uuid-1", dialect.stream_sid)
    assert started.parameters["calltoken"] == encode_token_alnum(TOKEN)
    [audio] = core.receive_text(dialect.media(b"\x7f" * 160, 1, 0))
    assert isinstance(audio, AudioIn) and audio.payload == b"\x7f" * 160

    played = dialect.parse(core.send_audio(b"\x01" * 160))
    assert (played.kind, played.audio) == ("media", b"\x01" * 160)
    mark = dialect.parse(core.send_mark("m1"))
    assert (mark.kind, mark.name) == ("mark", "m1")
    assert core.receive_text(dialect.mark("m1")) == [PlaybackMarked("m1")]

    core.send_mark("m2")
    assert dialect.parse(core.send_clear()).kind == "clear"
    [cleared] = dialect.cleared(["m2"])  # Plivo answers once, naming no checkpoint
    assert json.loads(cleared)["event"] == "clearedAudio"
    assert core.receive_text(cleared) == [PlaybackMarked("m2")]


def test_rejects_what_plivo_could_not_play():
    pcm16k = json.dumps(
        {"event": "playAudio", "media": {"contentType": "audio/x-l16", "sampleRate": 16000,
                                         "payload": ""}}
    )
    with pytest.raises(ValueError, match="format"):
        PlivoDialect.parse(pcm16k)
    with pytest.raises(ValueError):
        PlivoDialect.parse("{not json")
    assert PlivoDialect.parse('{"event": "sendDTMF"}').kind == "other"


def test_answer_without_a_stream():
    dialect = PlivoDialect(None, "+1", "+2")
    answer = dialect.parse_answer(speak_and_hangup_xml("Sorry."))
    assert (answer.verbs, answer.stream_url, answer.say) == (["Speak", "Hangup"], None, "Sorry.")
    with pytest.raises(ValueError):
        dialect.parse_answer("<Reply/>")
