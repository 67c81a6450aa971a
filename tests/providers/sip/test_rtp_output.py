"""The sending half of a call's RTP, tick by tick: comfort silence between the agent's turns,
markers on talkspurts, hold, marks, clear and RFC 4733 digits."""

from __future__ import annotations

import numpy as np
import pytest

from providers.sip.rfc4733 import TelephoneEvent
from providers.sip.rtp import SAMPLES_PER_FRAME, RtpPacket
from providers.sip.rtp_output import DTMF_GAP_TICKS, RtpOutput

SPEECH = bytes(range(1, 161))  # 20 ms of mu-law codes that are not silence
TONE_16K = (
    (np.sin(np.arange(960) * 2 * np.pi * 440 / 16000) * 8000).astype("<i2").tobytes()
)  # 60 ms of 16 kHz PCM


def output(codec: str = "PCMU", dtmf: int | None = 101) -> tuple[RtpOutput, list[str]]:
    marks: list[str] = []
    return RtpOutput(codec, 0 if codec == "PCMU" else 8, dtmf, marks.append), marks


def run(out: RtpOutput, ticks: range, sending: bool = True) -> list[RtpPacket | None]:
    packets = [out.tick(tick, sending) for tick in ticks]
    return [RtpPacket.parse(p) if p is not None else None for p in packets]


@pytest.mark.parametrize(("codec", "silence"), [("PCMU", 0xFF), ("PCMA", 0xD5)])
def test_nothing_queued_sends_comfort_silence_in_the_law(codec: str, silence: int):
    out, _ = output(codec)
    packets = run(out, range(3))
    assert all(p is not None and p.payload == bytes([silence]) * 160 for p in packets)
    assert [p.payload_type for p in packets if p] == [out.payload_type] * 3
    assert [p.marker for p in packets if p] == [True, False, False]  # the stream's first packet


def test_each_talkspurt_is_marked_and_the_stream_stays_continuous():
    out, _ = output()
    packets = run(out, range(2))  # silence
    for _ in range(3):
        out.audio(SPEECH, "ulaw8k")
    packets += run(out, range(2, 7))  # three of speech, two of silence
    out.audio(SPEECH, "ulaw8k")
    packets += run(out, range(7, 9))  # the next turn, then silence
    assert all(p is not None for p in packets)
    spoken = [p.payload == SPEECH for p in packets if p]
    assert spoken == [False, False, True, True, True, False, False, True, False]
    assert [p.marker for p in packets if p] == [
        True, False, True, False, False, False, False, True, False
    ]  # fmt: skip
    first = packets[0]
    assert first is not None
    assert [(p.sequence - first.sequence) & 0xFFFF for p in packets if p] == list(range(9))
    assert [
        (p.timestamp - first.timestamp) & 0xFFFFFFFF for p in packets if p
    ] == [SAMPLES_PER_FRAME * n for n in range(9)]


def test_hold_sends_nothing_but_consumes_the_queue_and_reaches_marks():
    out, marks = output()
    run(out, range(2))
    out.audio(SPEECH * 2, "ulaw8k")
    out.mark("held")
    assert run(out, range(2, 5), sending=False) == [None, None, None]
    assert marks == ["held"]
    out.audio(SPEECH, "ulaw8k")
    resumed = run(out, range(5, 7))
    assert resumed[0] is not None and resumed[0].marker and resumed[0].payload == SPEECH
    assert resumed[1] is not None and not resumed[1].marker


def test_a_mark_waits_for_the_audio_before_it_and_clear_drops_both():
    out, marks = output()
    out.mark("empty")
    assert marks == ["empty"]
    out.audio(TONE_16K)  # 60 ms; the resampler holds some back until the mark flushes it
    out.mark("after")
    sent = run(out, range(3))
    assert marks == ["empty"]
    sent += run(out, range(3, 5))
    assert marks == ["empty", "after"]  # four packets: the filter's tail, padded, went too
    assert [p.payload != b"\xff" * 160 for p in sent if p] == [True] * 4 + [False]
    out.audio(SPEECH * 10, "ulaw8k")
    out.mark("dropped")
    out.clear()
    (packet,) = run(out, range(5, 6))
    assert packet is not None and packet.payload == b"\xff" * 160
    assert marks == ["empty", "after"]


def test_digits_are_events_with_silence_between():
    out, _ = output()
    assert out.dtmf("1#") == 2
    packets = [p for p in run(out, range(40)) if p is not None]
    events = [p for p in packets if p.payload_type == 101]
    assert [TelephoneEvent.parse(p.payload).digit for p in events if p.marker] == ["1", "#"]
    first_end = max(i for i, p in enumerate(packets) if p.payload_type == 101 and
                    TelephoneEvent.parse(p.payload).digit == "1")
    gap = packets[first_end + 1 : first_end + 1 + DTMF_GAP_TICKS]
    assert all(p.payload_type == 0 and p.payload == b"\xff" * 160 for p in gap)
    with pytest.raises(ValueError):
        out.dtmf("x")
    no_dtmf, _ = output(dtmf=None)
    with pytest.raises(RuntimeError, match="telephone-event"):
        no_dtmf.dtmf("1")


def test_unknown_codec_and_encoding_are_refused():
    with pytest.raises(ValueError):
        RtpOutput("G722", 9, None, print)
    out, _ = output()
    with pytest.raises(ValueError, match="encoding"):
        out.audio(SPEECH, "opus")
