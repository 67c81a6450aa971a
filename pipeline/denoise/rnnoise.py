"""RNNoise (Xiph, v0.2 model): a small recurrent network over 48 kHz audio in 10 ms frames.

The native library comes from the `pyrnnoise` wheel; only its `librnnoise.so` is used, through
ctypes, without importing that package's Python side (which drags in audio-file and plotting
libraries). Each call owns one RNNoise state (~32 kB); audio goes 16 -> 48 kHz, through the
network, and back, with the fixed-delay FIR in `upsample3`.
"""

from __future__ import annotations

import ctypes
import importlib.util
import weakref
from functools import cache
from pathlib import Path

import numpy as np

from pipeline.denoise.base import HOP, HopSplitter
from pipeline.denoise.upsample3 import ROUND_TRIP_DELAY, Downsampler, Upsampler

FRAME_48K = 480  # RNNoise's fixed frame: 10 ms at 48 kHz, one hop at 16 kHz
NETWORK_DELAY = 2 * HOP  # measured on speech (cross-correlation): RNNoise lags 20 ms


class RNNoiseUnavailable(RuntimeError):
    """The RNNoise library is not installed."""


@cache
def _library() -> ctypes.CDLL:
    spec = importlib.util.find_spec("pyrnnoise")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RNNoiseUnavailable("denoise: rnnoise needs the `pyrnnoise` package installed")
    lib = ctypes.CDLL(str(Path(spec.submodule_search_locations[0]) / "librnnoise.so"))
    lib.rnnoise_create.argtypes = [ctypes.c_void_p]
    lib.rnnoise_create.restype = ctypes.c_void_p
    lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
    lib.rnnoise_destroy.restype = None
    lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.rnnoise_process_frame.restype = ctypes.c_float
    if lib.rnnoise_get_frame_size() != FRAME_48K:
        raise RNNoiseUnavailable("librnnoise has an unexpected frame size")
    return lib


class RNNoiseDenoiser:
    """One call's RNNoise state plus its resampling filters."""

    delay_samples = NETWORK_DELAY + ROUND_TRIP_DELAY

    __slots__ = ("__weakref__", "_down", "_hops", "_lib", "_state", "_up")

    def __init__(self) -> None:
        self._lib = _library()
        self._state = self._lib.rnnoise_create(None)
        if not self._state:
            raise MemoryError("rnnoise_create failed")
        weakref.finalize(self, self._lib.rnnoise_destroy, self._state)
        self._hops = HopSplitter()
        self._up, self._down = Upsampler(), Downsampler()

    def process(self, pcm16k: bytes) -> bytes:
        pcm = self._hops.whole_hops(pcm16k)
        if not pcm:
            return b""
        # RNNoise works on int16-scaled floats, so no scaling either way.
        wide = self._up.process(np.frombuffer(pcm, dtype=np.int16).astype(np.float32))
        run, state, address = self._lib.rnnoise_process_frame, self._state, wide.ctypes.data
        for offset in range(0, wide.nbytes, FRAME_48K * wide.itemsize):
            run(state, address + offset, address + offset)  # in place
        narrow = self._down.process(wide)
        return np.clip(np.rint(narrow), -32768, 32767).astype(np.int16).tobytes()
