"""The call's writer, against a sink that records when each thing was sent (real asyncio time)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress

import pytest

from gateway.playout import Playout
from pipeline.frames import CANONICAL_FRAME_BYTES

FRAME = 0.02
EARLY = 0.003
"""asyncio timers never fire early; this absorbs clock rounding and a pre-emption between the
writer reading the clock and the sink recording the send."""


class RecordingSink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, float, bytes | str | None]] = []
        self.encodings: list[str] = []

    async def send_audio(self, audio: bytes, encoding: str = "pcm16k") -> None:
        self.sent.append(("audio", time.monotonic(), audio))
        self.encodings.append(encoding)

    async def send_mark(self, name: str) -> None:
        self.sent.append(("mark", time.monotonic(), name))

    async def send_clear(self) -> None:
        self.sent.append(("clear", time.monotonic(), None))

    def audio(self) -> list[tuple[float, bytes]]:
        return [(t, pcm) for kind, t, pcm in self.sent if kind == "audio"]

    def kinds(self) -> list[str]:
        return [kind if kind != "mark" else f"mark:{what}" for kind, _, what in self.sent]


@asynccontextmanager
async def running(lead_secs: float) -> AsyncIterator[tuple[Playout, RecordingSink]]:
    sink = RecordingSink()
    playout = Playout(sink, lead_secs=lead_secs)
    task = asyncio.create_task(playout.run())
    try:
        yield playout, sink
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the writer"
        await asyncio.sleep(0.002)


def frames(count: int, fill: int) -> bytes:
    return bytes([fill]) * (CANONICAL_FRAME_BYTES * count)


def assert_never_ahead(times: list[float], lead: float) -> None:
    """Right after frame i goes out, the far end holds at most `lead` of unplayed audio.

    The far end's clock starts no later than the first send, so measuring from it is safe.
    """
    start = times[0]
    for i, sent_at in enumerate(times):
        buffered = start + (i + 1) * FRAME - sent_at
        assert buffered <= lead + EARLY, f"frame {i} left {buffered * 1000:.1f} ms buffered"


@pytest.mark.parametrize("lead", [0.06, 0.1])
async def test_frames_are_640_bytes_paced_20ms_never_more_than_lead_ahead(lead: float):
    pcm = bytes(range(256)) * 50  # 12800 bytes = 20 frames, content shows order
    async with running(lead) as (playout, sink):
        first = playout.play(pcm)
        await until(lambda: len(sink.audio()) == 20)
        first_sent = await first
    times = [t for t, _ in sink.audio()]
    assert all(len(frame) == CANONICAL_FRAME_BYTES for _, frame in sink.audio())
    assert b"".join(frame for _, frame in sink.audio()) == pcm
    assert playout.frames_sent == 20

    burst = round(lead / FRAME)
    assert times[burst - 1] - times[0] < 0.05, "the first lead's worth goes out at once"
    assert_never_ahead(times, lead)  # so frame `burst` on waits for its 20 ms slot
    intervals = sorted(b - a for a, b in zip(times[burst:], times[burst + 1 :], strict=False))
    assert 0.012 < intervals[len(intervals) // 2] < 0.028, "steady: one frame per 20 ms"
    assert times[19] - times[0] < 20 * FRAME - lead + 0.1, "and no dawdling"
    assert 0 <= times[0] - first_sent < 0.005


async def test_play_future_is_the_send_time_of_its_own_first_frame():
    async with running(0.1) as (playout, sink):
        playout.play(frames(10, 1))
        second = playout.play(frames(3, 2))
        sent_at = await second
        await until(lambda: len(sink.audio()) == 13)
    first_of_second = next(t for t, pcm in sink.audio() if pcm[0] == 2)
    assert 0 <= first_of_second - sent_at < 0.005


async def test_far_end_clock_restarts_after_running_dry():
    async with running(0.1) as (playout, sink):
        playout.play(frames(3, 1))
        await until(lambda: len(sink.audio()) == 3)
        await asyncio.sleep(0.15)  # the far end played those 60 ms and went quiet
        assert playout.far_end_plays_until < time.monotonic()
        playout.play(frames(10, 2))
        await until(lambda: len(sink.audio()) == 13)
    second = [t for t, pcm in sink.audio() if pcm[0] == 2]
    assert_never_ahead(second, 0.1)  # no catch-up burst for the idle time
    assert second[-1] - second[0] >= 4 * FRAME - EARLY


async def test_mark_pads_partial_frame_and_follows_its_audio():
    async with running(0.1) as (playout, sink):
        playout.play(b"\x07" * 1000)  # one frame and 360 bytes
        heard = playout.mark()
        await until(lambda: len(sink.sent) == 3)
        assert sink.kinds() == ["audio", "audio", "mark:m1"]
        padded = sink.audio()[1][1]
        assert padded == b"\x07" * 360 + bytes(CANONICAL_FRAME_BYTES - 360)
        assert not heard.done()
        playout.marked("m1")
        assert await heard is True
        playout.marked("m1")  # a repeated or unknown ack changes nothing
        playout.marked("nope")


async def test_marks_go_out_in_order_after_paced_audio():
    async with running(0.06) as (playout, sink):
        playout.play(frames(6, 1))
        playout.mark()
        playout.play(frames(2, 2))
        playout.mark()
        await until(lambda: len(sink.sent) == 10)
    assert sink.kinds() == ["audio"] * 6 + ["mark:m1"] + ["audio"] * 2 + ["mark:m2"]
    mark_time = sink.sent[6][1]
    assert mark_time >= sink.sent[5][1]


@pytest.mark.parametrize("played", [False, True])
async def test_clear_settles_marks_drops_audio_and_ignores_late_acks(played: bool):
    lead = 0.2  # 10 frames and their mark go out at once, and play 200 ms later
    async with running(lead) as (playout, sink):
        playout.play(frames(10, 1))
        sent_mark = playout.mark()
        playout.play(frames(25, 2))
        queued_mark = playout.mark()
        queued_play = playout.play(frames(5, 3))
        await until(lambda: "mark:m1" in sink.kinds())
        if played:  # wait until the far end has played up to the mark
            await asyncio.sleep(sink.sent[10][1] + lead + 0.03 - time.monotonic())
        cleared_at = time.monotonic()
        dropped = playout.clear()
        await until(lambda: "clear" in sink.kinds())
        await asyncio.sleep(0.05)

        assert await queued_mark is False
        assert queued_play.cancelled()
        assert await sent_mark is played
        unheard = 40 * FRAME - (cleared_at - sink.sent[0][1])  # of the 40 frames queued
        assert unheard - 0.03 < dropped <= unheard + EARLY  # (one frame may be in flight)
        after_clear = [t for t, _ in sink.audio() if t >= cleared_at]
        assert after_clear == [], "no audio may go out once clear() returned"
        assert sink.kinds()[-1] == "clear"
        assert all(pcm[0] != 3 for _, pcm in sink.audio())

        playout.marked("m1")  # acks of cleared marks arrive later: ignored
        playout.marked("m2")
        assert sent_mark.result() is played

        again = playout.play(frames(2, 4))  # the writer goes on after a clear
        heard = playout.mark()
        await until(lambda: sink.kinds()[-1] == "mark:m3")
        assert await again >= cleared_at
        playout.marked("m3")
        assert await heard is True


async def test_marks_abandoned_by_their_awaiter_do_not_break_the_writer():
    async with running(0.1) as (playout, sink):
        playout.play(frames(2, 1))
        acked = playout.mark()
        playout.play(frames(1, 1))
        cleared = playout.mark()
        acked.cancel()
        cleared.cancel()
        await until(lambda: "mark:m2" in sink.kinds())
        playout.marked("m1")
        playout.clear()
        await until(lambda: "clear" in sink.kinds())
        assert acked.cancelled() and cleared.cancelled()


async def test_mulaw_goes_out_in_160_byte_frames_untouched_and_padded_with_mulaw_silence():
    mulaw = bytes(range(256)) * 3 + bytes(range(32))  # 800 bytes = 5 frames; then 40 more
    async with running(0.06) as (playout, sink):
        playout.play(mulaw + b"\x01" * 40, "ulaw8k")
        heard = playout.mark()
        await until(lambda: len(sink.audio()) == 6)
        frames = [frame for _, frame in sink.audio()]
        assert b"".join(frames[:5]) == mulaw and {len(f) for f in frames} == {160}
        assert frames[5] == b"\x01" * 40 + b"\xff" * 120
        assert sink.encodings == ["ulaw8k"] * 6
        assert_never_ahead([t for t, _ in sink.audio()], 0.06)  # paced like PCM frames
        times = [t for t, _ in sink.audio()]
        assert times[5] - times[0] >= 3 * FRAME - EARLY
        playout.marked("m1")
        assert await heard


async def test_encodings_switch_at_a_frame_border_and_clear_counts_both():
    async with running(0.06) as (playout, sink):
        playout.play(frames(1, 7) + bytes(100))  # PCM: one frame and a part
        playout.play(b"\x02" * 480, "ulaw8k")  # mu-law: three frames
        await until(lambda: len(sink.audio()) >= 2)
        assert sink.encodings[:2] == ["pcm16k", "pcm16k"]
        assert sink.audio()[1][1] == bytes(CANONICAL_FRAME_BYTES)  # padded PCM, then the switch
        playout.play(b"\x03" * 80, "ulaw8k")  # half a frame more, still partial
        dropped = playout.clear()
        assert 0.03 <= dropped <= 0.06 + 0.01 + 0.06 + 0.01  # unsent mu-law, the half, in flight
        playout.play(frames(1, 9))
        await until(lambda: sink.kinds()[-1] == "audio" and sink.encodings[-1] == "pcm16k")
        assert "clear" in sink.kinds()
