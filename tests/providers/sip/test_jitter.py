"""The receive jitter buffer: reorder, duplicates, late packets, loss, pauses, new streams."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from providers.sip.jitter import CONCEALED_REPEATS, ULAW_SILENCE, JitterBuffer

SSRC = 0x1234


def frame(n: int) -> bytes:
    """A recognisable loud frame per sequence number (mu-law codes 0x00-0x1f are loud)."""
    return bytes([n % 32]) * 160


def push(buffer: JitterBuffer, seq: int, ts: int | None = None, ssrc: int = SSRC) -> None:
    buffer.push(seq & 0xFFFF, (seq * 160 if ts is None else ts) & 0xFFFFFFFF, ssrc, frame(seq))


def pulls(buffer: JitterBuffer, n: int) -> list[bytes | None]:
    return [buffer.pull() for _ in range(n)]


def test_waits_for_its_depth_then_plays_in_order():
    buffer = JitterBuffer(depth=3)
    push(buffer, 10)
    assert buffer.pull() is None
    push(buffer, 11)
    assert buffer.pull() is None
    push(buffer, 12)
    assert pulls(buffer, 3) == [frame(10), frame(11), frame(12)]


def test_a_lone_first_packet_starts_playing_after_depth_ticks():
    buffer = JitterBuffer(depth=3)
    push(buffer, 5)
    assert pulls(buffer, 3) == [None, None, frame(5)]


def test_reordered_packets_come_out_in_sequence_order():
    buffer = JitterBuffer(depth=3)
    for seq in (2, 1, 3, 5, 4, 6):
        push(buffer, seq)
    assert pulls(buffer, 6) == [frame(n) for n in range(1, 7)]
    assert buffer.stats.lost == buffer.stats.concealed == 0


def test_duplicates_and_late_packets_are_dropped():
    buffer = JitterBuffer(depth=2)
    push(buffer, 1)
    push(buffer, 2)
    push(buffer, 2)
    assert pulls(buffer, 2) == [frame(1), frame(2)]
    push(buffer, 1)  # its turn has passed
    push(buffer, 3)
    assert buffer.pull() == frame(3)
    assert (buffer.stats.duplicates, buffer.stats.late) == (1, 1)


def test_sequence_numbers_wrap_around():
    buffer = JitterBuffer(depth=3)
    for seq in (65534, 0, 65535, 1):
        push(buffer, seq)
    assert pulls(buffer, 4) == [frame(65534), frame(65535), frame(0), frame(1)]


def test_a_lost_packet_is_concealed_by_a_quieter_repeat_then_silence():
    buffer = JitterBuffer(depth=2)
    push(buffer, 1)
    push(buffer, 2)
    for seq in range(3 + CONCEALED_REPEATS + 2, 3 + CONCEALED_REPEATS + 5):
        push(buffer, seq)  # a burst of CONCEALED_REPEATS + 2 lost packets
    out = pulls(buffer, 2 + CONCEALED_REPEATS + 2 + 3)
    assert out[:2] == [frame(1), frame(2)]
    concealed = out[2 : 2 + CONCEALED_REPEATS + 2]
    assert concealed[0] != frame(2) and concealed[0] != ULAW_SILENCE
    assert concealed[0][0] > frame(2)[0]  # mu-law: a higher code (below 0x80) is quieter
    assert concealed[-2:] == [ULAW_SILENCE, ULAW_SILENCE]
    assert out[-3:] == [frame(n) for n in range(8, 11)]
    assert buffer.stats.lost == buffer.stats.concealed == CONCEALED_REPEATS + 2


def test_a_sender_pause_costs_no_latency_and_no_depth():
    buffer = JitterBuffer(depth=2)
    push(buffer, 1)
    push(buffer, 2)
    assert pulls(buffer, 2) == [frame(1), frame(2)]
    silent = pulls(buffer, 50)  # the caller paused (silence suppression): one second of nothing
    assert all(f is not None for f in silent)
    push(buffer, 3, ts=3 * 160 + 50 * 160)  # the next talkspurt: timestamp jumped, sequence didn't
    assert buffer.pull() == frame(3)  # at once: no re-buffering
    assert buffer.depth == 2 and buffer.stats.lost == 0


def test_underrun_from_jitter_grows_the_depth():
    buffer = JitterBuffer(depth=2, max_depth=4)
    push(buffer, 1)
    push(buffer, 2)
    pulls(buffer, 2)
    assert buffer.pull() not in (None, frame(2))  # underrun: concealed
    push(buffer, 3)  # the awaited packet, on time by its timestamp: the network was slow
    assert buffer.depth == 3
    assert buffer.pull() == frame(3)


def test_underrun_ending_past_the_gap_skips_the_lost_packets():
    buffer = JitterBuffer(depth=2)
    push(buffer, 1)
    push(buffer, 2)
    pulls(buffer, 2)
    pulls(buffer, 3)
    push(buffer, 6)  # 3, 4, 5 lost while we were already concealing
    assert buffer.pull() == frame(6)
    assert buffer.stats.lost == 3


def test_depth_is_bounded_by_dropping_the_oldest():
    buffer = JitterBuffer(depth=2, max_depth=4)
    for seq in range(1, 20):  # a burst after a stall
        push(buffer, seq)
    out = pulls(buffer, 5)
    assert out[0] == frame(1)
    assert buffer.buffered <= 4
    assert out[1] == frame(16)  # jumped to the newest max_depth frames


def test_a_new_ssrc_or_a_huge_jump_starts_a_new_stream():
    buffer = JitterBuffer(depth=2)
    push(buffer, 1)
    push(buffer, 2)
    pulls(buffer, 2)
    push(buffer, 40000, ssrc=99)
    push(buffer, 40001, ssrc=99)
    assert pulls(buffer, 2) == [frame(40000), frame(40001)]
    push(buffer, 7, ssrc=99)  # restarted numbering, same SSRC
    push(buffer, 8, ssrc=99)
    assert pulls(buffer, 2) == [frame(7), frame(8)]
    assert buffer.stats.resets == 2


@given(
    st.lists(st.integers(0, 60), min_size=1, max_size=200),
    st.integers(0, 0xFFFF),
    st.integers(1, 4),
)
def test_never_plays_a_frame_twice_or_out_of_order(offsets, start, depth):
    """Whatever arrives in whatever order, each frame comes out at most once, in order."""
    buffer = JitterBuffer(depth=depth, min_depth=1, max_depth=8)
    out = []
    for i, offset in enumerate(offsets):
        seq = (start + offset) & 0xFFFF
        buffer.push(seq, seq * 160, SSRC, bytes([0, offset]) * 80)  # concealment never starts 0x00
        if i % 2:
            out.append(buffer.pull())
    out += pulls(buffer, 80)
    played = [f[1] for f in out if f is not None and f[0] == 0]
    assert played == sorted(set(played))
    assert out[-1] == ULAW_SILENCE  # drained: comfort silence
