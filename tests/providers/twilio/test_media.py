import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.events import (
    AudioIn,
    CallStarted,
    CallStopped,
    Dtmf,
    PlaybackMarked,
    StreamNotStarted,
)
from providers.json_fields import MAX_MESSAGE_CHARS
from providers.twilio import media as media_module
from providers.twilio.media import SUPPORTED_FORMAT, TwilioMediaProtocol, TwilioProtocolError

STREAM_SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL_SID = "CA7ab1f3c9d2e04b6f8a5c3d2e1f0a9b8c"
ACCOUNT_SID = "AC25e16e9a716a4a1786a7c83f58e30482"
MULAW = bytes(range(160))  # one 20 ms frame of 8 kHz mu-law

# Messages in the shape of Twilio's documented examples (Media Streams - WebSocket Messages).
CONNECTED = '{"event": "connected", "protocol": "Call", "version": "1.0.0"}'
START = json.dumps(
    {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": ACCOUNT_SID,
            "streamSid": STREAM_SID,
            "callSid": CALL_SID,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"},
        },
        "streamSid": STREAM_SID,
    }
)


def media(seq: int, payload: bytes = MULAW, track: str = "inbound", ts: int = 5) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(seq),
            "media": {
                "track": track,
                "chunk": str(seq - 1),
                "timestamp": str(ts),
                "payload": base64.b64encode(payload).decode(),
            },
            "streamSid": STREAM_SID,
        }
    )


DTMF = json.dumps(
    {
        "event": "dtmf",
        "streamSid": STREAM_SID,
        "sequenceNumber": "3",
        "dtmf": {"track": "inbound_track", "digit": "1"},
    }
)
MARK = json.dumps(
    {"event": "mark", "sequenceNumber": "4", "streamSid": STREAM_SID, "mark": {"name": "my label"}}
)
STOP = json.dumps(
    {
        "event": "stop",
        "sequenceNumber": "5",
        "streamSid": STREAM_SID,
        "stop": {"accountSid": ACCOUNT_SID, "callSid": CALL_SID},
    }
)


def started() -> TwilioMediaProtocol:
    proto = TwilioMediaProtocol()
    proto.receive_text(CONNECTED)
    proto.receive_text(START)
    return proto


def test_full_exchange_yields_one_event_per_message() -> None:
    proto = TwilioMediaProtocol()
    assert proto.receive_text(CONNECTED) == []
    assert not proto.started

    assert proto.receive_text(START) == [
        CallStarted(
            provider_call_id=CALL_SID,
            stream_id=STREAM_SID,
            parameters={"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"},
        )
    ]
    assert proto.started
    assert (proto.stream_sid, proto.call_sid, proto.account_sid) == (
        STREAM_SID,
        CALL_SID,
        ACCOUNT_SID,
    )
    assert proto.media_format == SUPPORTED_FORMAT
    assert proto.tracks == ("inbound",)

    assert proto.receive_text(media(2)) == [AudioIn(MULAW, 5)]
    assert proto.receive_text(DTMF) == [Dtmf("1")]
    assert proto.receive_text(MARK) == [PlaybackMarked("my label")]
    assert proto.receive_text(STOP) == [CallStopped("stopped")]
    assert proto.stopped
    assert proto.sequence_gaps == 0


def test_outbound_track_media_is_not_caller_audio() -> None:
    assert started().receive_text(media(2, track="outbound")) == []


def test_sequence_gaps_are_counted_not_fatal() -> None:
    proto = started()
    for seq in (2, 3, 7, 8, 8):
        assert len(proto.receive_text(media(seq))) == 1
    assert proto.sequence_gaps == 2


def test_outbound_messages_have_twilios_shapes() -> None:
    proto = started()
    assert proto.send_audio(MULAW) == (
        '{"event":"media","streamSid":"'
        + STREAM_SID
        + '","media":{"payload":"'
        + base64.b64encode(MULAW).decode()
        + '"}}'
    )
    assert json.loads(proto.send_mark("turn-3")) == {
        "event": "mark",
        "streamSid": STREAM_SID,
        "mark": {"name": "turn-3"},
    }
    assert json.loads(proto.send_clear()) == {"event": "clear", "streamSid": STREAM_SID}


def test_outbound_stream_sid_is_json_escaped() -> None:
    msg = json.loads(START)
    msg["start"]["streamSid"] = 'MZ"\\x'
    proto = TwilioMediaProtocol()
    proto.receive_text(json.dumps(msg))
    assert json.loads(proto.send_audio(b"\xff"))["streamSid"] == 'MZ"\\x'
    assert json.loads(proto.send_clear())["streamSid"] == 'MZ"\\x'


@pytest.mark.parametrize("send", ["send_audio", "send_mark", "send_clear"])
def test_outbound_before_start_raises(send: str) -> None:
    proto = TwilioMediaProtocol()
    args = {"send_audio": (MULAW,), "send_mark": ("m",), "send_clear": ()}[send]
    with pytest.raises(StreamNotStarted):
        getattr(proto, send)(*args)


def _bad_base64() -> str:
    return media(2).replace(base64.b64encode(MULAW).decode()[:8], "!!not-b64")


@pytest.mark.parametrize(
    ("message", "fatal", "reason"),
    [
        ("{not json", False, "not valid JSON"),
        ("[1, 2]", False, "not a JSON object"),
        ('{"event": "dance", "streamSid": "x"}', False, "unknown event"),
        ('{"streamSid": "x"}', False, "unknown event"),
        (_bad_base64(), False, "base64"),
        (media(2).replace(STREAM_SID, "MZother"), False, "another streamSid"),
        ('{"event": "media", "media": "x"}', False, "not an object"),
        (DTMF.replace('"1"', '"x"'), False, "DTMF key"),
        (MARK.replace('"my label"', "17"), False, "'name'"),
        ("[" * 100_000, True, "exceeds"),
        ("[" * 60_000, False, "not valid JSON"),
        (START, True, "second start"),
        (CONNECTED, False, "connected after start"),
    ],
)
def test_errors_after_start(message: str, fatal: bool, reason: str) -> None:
    proto = started()
    with pytest.raises(TwilioProtocolError, match=reason) as err:
        proto.receive_text(message)
    assert err.value.fatal is fatal
    assert proto.receive_text(media(3)) == [AudioIn(MULAW, 5)]  # the stream goes on


@pytest.mark.parametrize("message", [media(2), DTMF, MARK, STOP])
def test_anything_but_start_before_start_is_fatal(message: str) -> None:
    with pytest.raises(TwilioProtocolError, match="before start") as err:
        TwilioMediaProtocol().receive_text(message)
    assert err.value.fatal


@pytest.mark.parametrize(
    "replace",
    [
        ('"audio/x-mulaw"', '"audio/l16"'),
        ("8000", "16000"),
        ('"channels": 1', '"channels": 2'),
        ('"mediaFormat"', '"otherFormat"'),
        (f'"callSid": "{CALL_SID}"', '"callSid": 7'),
        (f'"streamSid": "{STREAM_SID}", "callSid"', '"callSid"'),
        ('"Bob"', "3"),
    ],
)
def test_malformed_start_is_fatal(replace: tuple[str, str]) -> None:
    message = START.replace(*replace)
    assert message != START
    proto = TwilioMediaProtocol()
    with pytest.raises(TwilioProtocolError) as err:
        proto.receive_text(message)
    assert err.value.fatal
    assert not proto.started


def test_message_after_stop_is_fatal() -> None:
    proto = started()
    proto.receive_text(STOP)
    with pytest.raises(TwilioProtocolError, match="after stop") as err:
        proto.receive_text(media(6))
    assert err.value.fatal


def test_oversize_message_is_rejected_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_parsing(_: str) -> object:
        raise AssertionError("oversize message was parsed")

    monkeypatch.setattr(media_module.json, "loads", no_parsing)
    huge = '{"event": "media", "media": {"payload": "' + "A" * 1_000_000 + '"}}'
    assert len(huge) > MAX_MESSAGE_CHARS
    with pytest.raises(TwilioProtocolError, match="exceeds") as err:
        TwilioMediaProtocol().receive_text(huge)
    assert err.value.fatal


def _receive_or_protocol_error(proto: TwilioMediaProtocol, message: str) -> None:
    try:
        events = proto.receive_text(message)
    except TwilioProtocolError:
        return
    assert isinstance(events, list) and len(events) <= 1


keys = st.sampled_from(
    [
        "payload",
        "track",
        "timestamp",
        "digit",
        "name",
        "streamSid",
        "callSid",
        "mediaFormat",
        "customParameters",
        "encoding",
        "sampleRate",
        "channels",
        "tracks",
    ]
) | st.text(max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=20,
)
events = st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop", "clear", ""])
fields = st.sampled_from(["start", "media", "dtmf", "mark", "stop"])
messages = st.builds(
    lambda event, extra, sid, seq: {
        "event": event,
        "streamSid": sid,
        "sequenceNumber": seq,
        **extra,
    },
    events,
    st.dictionaries(fields, json_values, max_size=3),
    st.sampled_from([STREAM_SID, "MZx", 3]),
    json_values | st.integers(0, 99).map(str),
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_arbitrary_text(text: str) -> None:
    _receive_or_protocol_error(TwilioMediaProtocol(), text)
    _receive_or_protocol_error(started(), text)


@settings(max_examples=300, deadline=None)
@given(st.lists(messages, max_size=5))
def test_fuzz_protocol_shaped_json(sequence: list[dict[str, object]]) -> None:
    fresh, live = TwilioMediaProtocol(), started()
    for msg in sequence:
        text = json.dumps(msg)
        _receive_or_protocol_error(fresh, text)
        _receive_or_protocol_error(live, text)
