"""The G.711 edge of Twilio, Plivo and SIP calls: wire codes at 8 kHz <-> canonical PCM16."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pipeline.codecs import alaw_to_pcm, pcm_to_alaw, pcm_to_ulaw, ulaw_to_pcm
from pipeline.frames import CANONICAL_RATE
from pipeline.resample import stream_resampler

_CODECS: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
    "ulaw": (ulaw_to_pcm, pcm_to_ulaw),
    "alaw": (alaw_to_pcm, pcm_to_alaw),
}


class G711Audio:
    """One per call: decodes and upsamples caller audio, downsamples and encodes agent audio.

    Each direction keeps its own resampler state, so chunk borders never click. The resamplers
    hold back a little audio (see `pipeline.resample`); `flush_outbound` releases the agent's tail.
    """

    __slots__ = ("_decode", "_down", "_encode", "_up")

    def __init__(self, law: Literal["ulaw", "alaw"] = "ulaw", wire_rate: int = 8000) -> None:
        if law not in _CODECS:
            raise ValueError(f"unknown G.711 law {law!r}")
        self._decode, self._encode = _CODECS[law]
        self._up = stream_resampler(wire_rate, CANONICAL_RATE)
        self._down = stream_resampler(CANONICAL_RATE, wire_rate)

    def inbound(self, payload: bytes) -> bytes:
        """Wire codes -> PCM16 LE at 16 kHz (possibly empty while the resampler fills)."""
        return self._up.process(self._decode(payload))

    def outbound(self, pcm16k: bytes) -> bytes:
        """PCM16 LE at 16 kHz -> wire codes at the wire rate."""
        return self._encode(self._down.process(pcm16k))

    def flush_outbound(self) -> bytes:
        """Wire codes for the agent audio still held in the resampler (end of an utterance)."""
        return self._encode(self._down.flush())
