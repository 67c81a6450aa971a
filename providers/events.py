"""Events every provider core produces, whatever its wire format."""

from __future__ import annotations

from dataclasses import dataclass, field


class ProtocolError(Exception):
    """A peer sent something the protocol does not allow; the edge decides to ignore or end.

    `fatal` tells the edge whether the stream can go on (drop this message and log) or must
    end (its state is broken, or the peer is not a genuine media stream of that provider).
    """

    def __init__(self, message: str, *, fatal: bool) -> None:
        super().__init__(message)
        self.fatal = fatal


class StreamNotStarted(RuntimeError):
    """An outbound message was asked for before the provider's `start` named the stream."""


@dataclass(frozen=True, slots=True)
class CallStarted:
    provider_call_id: str
    stream_id: str
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AudioIn:
    """Caller audio as it came off the wire (for G.711 providers: 8 kHz mu-law bytes)."""

    payload: bytes
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class PlaybackMarked:
    """The far end has played everything sent before the mark named `name`."""

    name: str


@dataclass(frozen=True, slots=True)
class CallStopped:
    reason: str = "stopped"


Event = CallStarted | AudioIn | Dtmf | PlaybackMarked | CallStopped
