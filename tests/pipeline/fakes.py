"""Stand-ins shared by the conversation tests."""

from __future__ import annotations

import asyncio


def done(value: object) -> asyncio.Future:
    """A future that has already resolved to `value`."""
    future = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


class InstantOutput:
    """The call's output where the far end plays everything at once; it counts what it played
    and notes the hang-up."""

    def __init__(self) -> None:
        self.played = 0
        self.hung_up = False

    def play(self, pcm: bytes, encoding: str = "pcm16k") -> asyncio.Future[float]:
        self.played += len(pcm)
        return done(0.0)

    def mark(self) -> asyncio.Future[bool]:
        return done(True)

    def clear(self) -> float:
        return 0.0

    async def hang_up(self) -> None:
        self.hung_up = True
