"""Offline text-to-speech: espeak-ng through its C API (ctypes), streamed as 16 kHz PCM.

espeak-ng keeps global state and is not thread-safe, so the process has one engine, initialised
once, that synthesises one text at a time on its own worker thread. Audio leaves espeak's
callback in ~50 ms buffers, is resampled on that thread and handed to the event loop chunk by
chunk, so the first audio is out before the sentence is finished.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import espeakng_loader
import structlog

from pipeline.frames import CANONICAL_RATE, AudioEncoding
from pipeline.inference import name_native_thread
from pipeline.resample import StreamResampler

__all__ = ["EspeakError", "EspeakTTS"]

log = structlog.get_logger()

# Values from espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # report missing data instead of calling exit()
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000  # add a sentence pause (~300 ms) at the end of the text
_PARAM_RATE = 1
_PARAM_PITCH = 3
_EE_OK = 0
_BUFFER_MS = 50  # length of the buffers espeak hands to the callback

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

# All synthesis runs here; one thread, since the engine does one text at a time anyway.
_EXECUTOR = ThreadPoolExecutor(
    max_workers=1, thread_name_prefix="espeak", initializer=name_native_thread
)


class EspeakError(RuntimeError):
    """espeak-ng failed to initialise or to synthesise."""


class _Engine:
    """The process-wide espeak-ng instance. `synth` is safe to call from any thread."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        self._lib = lib
        self._lock = threading.Lock()
        self._sink: Callable[[bytes], bool] | None = None
        self._sink_error: Exception | None = None  # raised by the sink inside the C callback
        self._settings: tuple[str, int, int] | None = None
        # ctypes callbacks must stay referenced for as long as C may call them.
        self._callback = _SynthCallback(self._on_audio)

        data_path = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path, _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate}) with data at {data_path!r}")
        lib.espeak_SetSynthCallback(self._callback)
        self.sample_rate: int = rate
        log.info("espeak_loaded", sample_rate=rate)

    def synth(
        self,
        text: str,
        voice: str,
        rate: int,
        pitch: int,
        end_pause: bool,
        sink: Callable[[bytes], bool],
    ) -> None:
        """Speak `text`, passing each PCM16 buffer to `sink`; returns when done or when `sink`
        returns False (synthesis is then aborted)."""
        encoded = text.encode()
        flags = _CHARS_UTF8 | (_ENDPAUSE if end_pause else 0)
        with self._lock:
            self._apply(voice, rate, pitch)
            self._sink = sink
            try:
                err = self._lib.espeak_Synth(
                    encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, flags, None, None
                )
            finally:
                self._sink = None
                sink_error, self._sink_error = self._sink_error, None
        if sink_error is not None:
            raise sink_error
        if err != _EE_OK:
            raise EspeakError(f"espeak_Synth failed ({err})")

    def _apply(self, voice: str, rate: int, pitch: int) -> None:
        settings = (voice, rate, pitch)
        if settings == self._settings:
            return
        self._settings = None  # unknown until every call below has succeeded
        if self._lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise EspeakError(f"espeak-ng has no voice {voice!r}")
        self._lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
        self._lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0)
        self._settings = settings

    def _on_audio(
        self, wav: ctypes._Pointer[ctypes.c_short], samples: int, _events: int | None
    ) -> int:
        # Called by espeak on the synthesising thread; wav is NULL at the end of the text.
        # Returns 1 to abort. An exception must not escape into C: it is kept for `synth`.
        sink = self._sink
        if sink is None:
            return 1
        if not wav or samples <= 0:
            return 0
        try:
            return 0 if sink(ctypes.string_at(wav, samples * 2)) else 1
        except Exception as exc:
            self._sink_error = exc
            return 1


_engine: _Engine | None = None
_engine_lock = threading.Lock()


def _get_engine() -> _Engine:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _Engine()
        return _engine


_END = object()


@dataclass(slots=True)
class _Job:
    """One synthesis request, shared by the consumer (event loop) and the espeak thread."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[object] = field(default_factory=asyncio.Queue)
    cancelled: bool = False  # set by the consumer; read by the espeak thread

    def put(self, item: object) -> bool:
        """Hand `item` to the consumer; False once nobody is listening."""
        if self.cancelled:
            return False
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed
            self.cancelled = True
            return False
        return True


class EspeakTTS:
    """TextToSpeech with espeak-ng: PCM16 mono at 16 kHz, streamed as it is synthesised.

    Instances are cheap and may differ in voice, rate and pitch; they share one engine.
    Without `end_pause` the audio ends ~10 ms after the last word, so consecutive sentences
    abut; with it, each text ends with espeak's ~300 ms sentence pause.
    Stopping iteration (break, `aclose()`, task cancellation) aborts synthesis within one
    espeak buffer.
    """

    encoding: AudioEncoding = "pcm16k"

    def __init__(
        self, voice: str = "en-us", rate_wpm: int = 175, pitch: int = 50, end_pause: bool = False
    ) -> None:
        self.voice = voice
        self.rate_wpm = rate_wpm
        self.pitch = pitch
        self.end_pause = end_pause

    async def warm_up(self) -> None:
        """Initialise the engine and load the voice now rather than on the first sentence."""
        await asyncio.get_running_loop().run_in_executor(_EXECUTOR, self._warm_up)

    def _warm_up(self) -> None:
        _get_engine().synth(".", self.voice, self.rate_wpm, self.pitch, False, lambda _pcm: True)

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        if not text.strip():
            return
        job = _Job(asyncio.get_running_loop())
        job.loop.run_in_executor(_EXECUTOR, self._run, text, job)
        try:
            while (item := await job.queue.get()) is not _END:
                if isinstance(item, BaseException):
                    raise EspeakError(f"synthesis failed: {item}") from item
                assert isinstance(item, bytes)
                yield item
        finally:
            job.cancelled = True

    def _run(self, text: str, job: _Job) -> None:
        """Runs on the espeak thread; never raises (errors travel through the queue)."""
        try:
            if job.cancelled:
                return
            engine = _get_engine()
            resampler = StreamResampler(engine.sample_rate, CANONICAL_RATE)

            def sink(pcm: bytes) -> bool:
                if job.cancelled:
                    return False
                out = resampler.process(pcm)
                return job.put(out) if out else True

            engine.synth(text, self.voice, self.rate_wpm, self.pitch, self.end_pause, sink)
            if tail := resampler.flush():
                job.put(tail)
        except Exception as exc:
            job.put(exc)
        finally:
            job.put(_END)
