"""The ramp summary names the most calls that held, as the benchmark issue asks."""

from __future__ import annotations

from bench.report import largest_holding


def step(calls: int, holds: bool, passed: bool) -> dict:
    return {"calls": calls, "holds_load": holds, "passed": passed}


def test_the_largest_step_that_held_and_the_largest_that_passed_are_named():
    lines = largest_holding([step(10, True, True), step(25, True, True), step(50, True, False),
                             step(75, False, False)])
    assert lines[0].endswith("gap p99 <= 60 ms): 50.")
    assert lines[1].endswith("met every target: 25.")


def test_a_ramp_where_nothing_held_says_none():
    lines = largest_holding([step(10, False, False)])
    assert lines[0].endswith(": none.") and lines[1].endswith(": none.")
