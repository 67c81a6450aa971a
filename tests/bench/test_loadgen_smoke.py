"""CI smoke of the load generator: 3 simulated Twilio calls against a real stand-in gateway."""

from __future__ import annotations

import json
import statistics

import pytest

from bench.loadgen import LoadOptions, load_turns, run_load
from bench.server import start_server
from bench.twilio_wire import SILENCE_B64, TwilioWire, classify
from gateway.simulated_twilio import TwilioDialect
from tests.corpus import asterisk_prompts


def test_wire_roundtrip_measures_media_without_decoding() -> None:
    dialect = TwilioDialect(None, "+15005550006", "+15005550001")
    wire = TwilioWire(dialect)
    assert json.loads(dialect.connected())["event"] == "connected"
    message = wire.media(SILENCE_B64)
    assert classify(message) == ("media", 160)
    fields = json.loads(message)
    assert fields["sequenceNumber"] == "1" and fields["media"]["chunk"] == "1"
    assert fields["streamSid"] == dialect.stream_sid
    assert json.loads(dialect.mark("m1"))["sequenceNumber"] == "2"  # one count for both
    assert classify('{"event":"mark","streamSid":"MZ1","mark":{"name":"m3"}}') == ("mark", "m3")
    assert classify('{"event":"clear","streamSid":"MZ1"}') == ("clear", 0)
    with pytest.raises(ValueError):
        classify("not json")


@pytest.mark.timed
async def test_three_calls_without_failures(tmp_path) -> None:
    asterisk_prompts()  # skips, or fails under CI=true, without the speech corpus
    turns = load_turns(limit=4)
    server = start_server(tmp_path, "bench")  # bench.yaml answers every turn with 1 s of audio
    try:
        options = LoadOptions(server.url, calls=3, call_secs=10.0, ramp_secs=0.5)
        result = await run_load(options, turns)
    finally:
        assert server.stop() == 0
    calls = result.calls
    assert [c.failed for c in calls] == [None, None, None]
    assert all(c.greeting_ms is not None for c in calls)
    assert all(c.turns_answered >= 2 for c in calls)
    assert sum(c.turns_answered for c in calls) >= sum(c.turns_spoken for c in calls) - 3
    gaps = [g for c in calls for g in c.gaps_ms]
    assert len(gaps) > 100
    assert 18 <= statistics.median(gaps) <= 22  # steady playout: one 20 ms frame at a time
    assert max(gaps) < 100
    assert sum(c.underruns + c.dropped_frames for c in calls) == 0
    clears = [ms for c in calls for ms in c.clear_ms]
    assert clears and max(clears) < 1000  # every barge-in cut the answer before it ended
