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
from providers.plivo.media import PlivoMediaProtocol, PlivoProtocolError, parse_extra_headers

CALL_ID = "12345678-1234-1234-1234-123456789abc"
STREAM_ID = "87654321-4321-4321-4321-cba987654321"


def start_message(headers: object = "callToken=abc123,agent=sales", **overrides) -> str:
    start = {
        "callId": CALL_ID,
        "streamId": STREAM_ID,
        "accountId": "MAXXXXXXXXXXXXXXXXXX",
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
    }
    start.update(overrides)
    msg = {"event": "start", "sequenceNumber": 1, "start": start}
    if headers is not None:
        msg["extra_headers"] = headers
    return json.dumps(msg)


def media_message(audio: bytes, chunk: int = 1, timestamp: str = "1705312200000", **kw) -> str:
    media = {
        "track": "inbound",
        "timestamp": timestamp,
        "chunk": chunk,
        "payload": base64.b64encode(audio).decode(),
    }
    media.update(kw)
    return json.dumps(
        {"event": "media", "sequenceNumber": chunk + 1, "streamId": STREAM_ID, "media": media}
    )


def played(name: str) -> str:
    return json.dumps(
        {"event": "playedStream", "sequenceNumber": 9, "streamId": STREAM_ID, "name": name}
    )


CLEARED = json.dumps({"sequenceNumber": 0, "event": "clearedAudio", "streamId": STREAM_ID})


@pytest.fixture
def proto() -> PlivoMediaProtocol:
    p = PlivoMediaProtocol()
    p.receive_text(start_message())
    return p


def test_start_gives_call_started_with_extra_headers() -> None:
    p = PlivoMediaProtocol()
    events = p.receive_text(start_message())
    assert events == [
        CallStarted(
            provider_call_id=CALL_ID,
            stream_id=STREAM_ID,
            parameters={"callToken": "abc123", "agent": "sales"},
        )
    ]
    assert p.started and p.stream_id == STREAM_ID and p.call_id == CALL_ID
    assert p.account_id == "MAXXXXXXXXXXXXXXXXXX" and p.tracks == ("inbound",)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("userId=12345;sessionId=abc-xyz", {"userId": "12345", "sessionId": "abc-xyz"}),
        ("test1=12,test2=123", {"test1": "12", "test2": "123"}),
        ('{"callToken": "t0k", "n": 5}', {"callToken": "t0k", "n": "5"}),
        ({"callToken": "t0k"}, {"callToken": "t0k"}),
        ("", {}),
        ("garbage,=x,k=v=w", {"k": "v=w"}),
        ("{not json", {}),
        (["a=b"], {}),
        (None, {}),
    ],
)
def test_extra_headers_forms(raw: object, expected: dict[str, str]) -> None:
    assert parse_extra_headers(raw) == expected


def test_extra_headers_inside_start_are_used_when_not_top_level() -> None:
    p = PlivoMediaProtocol()
    message = start_message(headers=None, extra_headers="callToken=xyz")
    [event] = p.receive_text(message)
    assert isinstance(event, CallStarted) and event.parameters == {"callToken": "xyz"}


def test_media_gives_mulaw_bytes_and_timestamp(proto: PlivoMediaProtocol) -> None:
    audio = bytes(range(160))
    assert proto.receive_text(media_message(audio)) == [AudioIn(audio, 1705312200000)]


def test_media_of_outbound_track_is_ignored(proto: PlivoMediaProtocol) -> None:
    assert proto.receive_text(media_message(b"\xff" * 160, track="outbound")) == []


def test_media_chunk_gaps_are_counted(proto: PlivoMediaProtocol) -> None:
    for chunk in (1, 2, 4, 5, 5):
        proto.receive_text(media_message(b"\x7f" * 160, chunk=chunk))
    assert proto.sequence_gaps == 2


def test_bad_base64_is_non_fatal_and_the_stream_goes_on(proto: PlivoMediaProtocol) -> None:
    msg = json.loads(media_message(b"x"))
    msg["media"]["payload"] = "not base64!!"
    with pytest.raises(PlivoProtocolError) as err:
        proto.receive_text(json.dumps(msg))
    assert not err.value.fatal
    assert proto.receive_text(media_message(b"ok")) == [AudioIn(b"ok", 1705312200000)]


def test_dtmf(proto: PlivoMediaProtocol) -> None:
    msg = {
        "event": "dtmf",
        "sequenceNumber": 3,
        "streamId": STREAM_ID,
        "dtmf": {"track": "inbound", "digit": "5", "timestamp": "1"},
    }
    assert proto.receive_text(json.dumps(msg)) == [Dtmf("5")]
    msg["dtmf"]["digit"] = "x"
    with pytest.raises(PlivoProtocolError) as err:
        proto.receive_text(json.dumps(msg))
    assert not err.value.fatal


def test_stop_then_anything_is_fatal(proto: PlivoMediaProtocol) -> None:
    assert proto.receive_text('{"event": "stop"}') == [CallStopped("stopped")]
    assert proto.stopped
    with pytest.raises(PlivoProtocolError) as err:
        proto.receive_text(media_message(b"x"))
    assert err.value.fatal


@pytest.mark.parametrize(
    ("message", "fatal"),
    [
        ("{nope", False),
        ("[1, 2]", False),
        ('{"event": "hello"}', False),
        ('{"no": "event"}', False),
        ("[" * 100_000, True),  # over the size cap
    ],
)
def test_protocol_errors(proto: PlivoMediaProtocol, message: str, fatal: bool) -> None:
    with pytest.raises(PlivoProtocolError) as err:
        proto.receive_text(message)
    assert err.value.fatal is fatal


def test_deep_nesting_under_the_cap_is_a_clean_error(proto: PlivoMediaProtocol) -> None:
    message = "[" * (MAX_MESSAGE_CHARS - 1)
    with pytest.raises(PlivoProtocolError):
        proto.receive_text(message)


@pytest.mark.parametrize(
    "message",
    [
        media_message(b"x"),
        played("a"),
        CLEARED,
        '{"event": "dtmf", "dtmf": {"digit": "1"}}',
        '{"event": "stop"}',
    ],
)
def test_events_before_start_are_fatal(message: str) -> None:
    with pytest.raises(PlivoProtocolError) as err:
        PlivoMediaProtocol().receive_text(message)
    assert err.value.fatal


def test_second_start_is_fatal(proto: PlivoMediaProtocol) -> None:
    with pytest.raises(PlivoProtocolError) as err:
        proto.receive_text(start_message())
    assert err.value.fatal


@pytest.mark.parametrize(
    "overrides",
    [
        {"mediaFormat": {"encoding": "audio/x-l16", "sampleRate": 8000}},
        {"mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 16000}},
        {"mediaFormat": None},
        {"streamId": ""},
        {"callId": 7},
        {"tracks": "inbound"},
    ],
)
def test_bad_start_is_fatal_and_starts_nothing(overrides: dict) -> None:
    p = PlivoMediaProtocol()
    with pytest.raises(PlivoProtocolError) as err:
        p.receive_text(start_message(**overrides))
    assert err.value.fatal and not p.started


def test_outbound_messages_need_start() -> None:
    p = PlivoMediaProtocol()
    for send in (lambda: p.send_audio(b"\xff"), lambda: p.send_mark("m"), p.send_clear):
        with pytest.raises(StreamNotStarted):
            send()


def test_send_audio_is_play_audio_with_base64_mulaw(proto: PlivoMediaProtocol) -> None:
    audio = bytes(range(256)) * 2
    msg = json.loads(proto.send_audio(audio))
    assert msg == {
        "event": "playAudio",
        "media": {
            "contentType": "audio/x-mulaw",
            "sampleRate": 8000,
            "payload": base64.b64encode(audio).decode(),
        },
    }


def test_send_mark_and_clear_carry_stream_id(proto: PlivoMediaProtocol) -> None:
    assert json.loads(proto.send_mark('greeting "1"')) == {
        "event": "checkpoint",
        "streamId": STREAM_ID,
        "name": 'greeting "1"',
    }
    assert json.loads(proto.send_clear()) == {"event": "clearAudio", "streamId": STREAM_ID}


def test_played_stream_reports_each_checkpoint_once(proto: PlivoMediaProtocol) -> None:
    proto.send_mark("a")
    proto.send_mark("b")
    assert proto.receive_text(played("a")) == [PlaybackMarked("a")]
    assert proto.receive_text(played("b")) == [PlaybackMarked("b")]
    with pytest.raises(PlivoProtocolError) as err:
        proto.receive_text(played("b"))
    assert not err.value.fatal


def test_cleared_audio_reports_the_checkpoints_the_clear_dropped(
    proto: PlivoMediaProtocol,
) -> None:
    proto.send_mark("a")
    proto.send_mark("b")
    proto.send_mark("c")
    proto.receive_text(played("a"))
    proto.send_clear()
    proto.send_mark("d")  # sent after the clear: belongs to the new playback
    # "b" was played just before Plivo handled the clear: reported once, now.
    assert proto.receive_text(played("b")) == [PlaybackMarked("b")]
    assert proto.receive_text(CLEARED) == [PlaybackMarked("c")]
    assert proto.receive_text(played("d")) == [PlaybackMarked("d")]
    assert proto.receive_text(CLEARED) == []  # unsolicited: nothing pending


def test_two_clears_are_acknowledged_in_order(proto: PlivoMediaProtocol) -> None:
    proto.send_mark("a")
    proto.send_clear()
    proto.send_mark("b")
    proto.send_clear()
    assert proto.receive_text(CLEARED) == [PlaybackMarked("a")]
    assert proto.receive_text(CLEARED) == [PlaybackMarked("b")]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_arbitrary_text_only_raises_protocol_errors(text: str) -> None:
    for p in (PlivoMediaProtocol(), _started()):
        try:
            events = p.receive_text(text)
        except PlivoProtocolError:
            continue
        assert isinstance(events, list)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
_events = st.sampled_from(
    ["start", "media", "dtmf", "playedStream", "clearedAudio", "stop", "checkpoint", ""]
)
_keys = st.sampled_from(
    ["start", "media", "dtmf", "name", "streamId", "extra_headers", "sequenceNumber"]
)


@settings(max_examples=300, deadline=None)
@given(_events, st.dictionaries(_keys, _json_values, max_size=5))
def test_fuzz_plausible_messages_only_raise_protocol_errors(event: str, fields: dict) -> None:
    message = json.dumps({"event": event, **fields})
    for p in (PlivoMediaProtocol(), _started()):
        try:
            events = p.receive_text(message)
        except PlivoProtocolError:
            continue
        assert isinstance(events, list)


def _started() -> PlivoMediaProtocol:
    p = PlivoMediaProtocol()
    p.receive_text(start_message())
    p.send_mark("m")
    p.send_clear()
    return p
