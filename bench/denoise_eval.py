"""Measures the noise suppressors: VAD false starts on real noise, Whisper WER on clean and noisy
speech, and CPU per call-minute of denoise, VAD and Smart Turn.

Everything goes through the phone path first (8 kHz, mu-law, streamed back up to 16 kHz), then
the denoiser and VAD in 20 ms frames, as a call would. `python -m bench.denoise_eval` writes
`bench/results/denoise.json` and `denoise.md`; the slow tests in tests/pipeline/test_denoise.py
call the same functions on smaller sets.
"""

from __future__ import annotations

import asyncio
import json
import time
import wave
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import soxr

from pipeline.codecs import pcm_to_ulaw, ulaw_to_pcm
from pipeline.denoise import DenoiseKind, make_denoiser
from pipeline.frames import CANONICAL_FRAME_BYTES, CANONICAL_RATE
from pipeline.resample import StreamResampler
from pipeline.smart_turn import SmartTurn
from pipeline.stt.whisper import WhisperSTT
from pipeline.vad import SpeechStarted, VadModel, VadSegmenter, VadStream, shared_model

KINDS: tuple[DenoiseKind, ...] = ("none", "speex", "rnnoise")
LOUD_DBFS = -26.0
BABBLE = frozenset({"coffee_shop_44k.wav"})  # real background talk: only its own level is noise
LEAD_SECS, TAIL_SECS, PREROLL_SECS = 1.0, 0.3, 0.3
FRAMES_PER_MINUTE = 60 * 1000 // 20
NOISE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "noise"


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono float64 samples (int16 scale) and rate of a 16-bit WAV; stereo is mixed down."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit samples")
        raw = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        return raw.reshape(-1, w.getnchannels()).mean(axis=1), w.getframerate()


def to_8k(x: np.ndarray, rate: int) -> np.ndarray:
    return soxr.resample(x.astype(np.float32), rate, 8000).astype(np.float64) if rate != 8000 else x


def phone_line(x8k: np.ndarray) -> bytes:
    """8 kHz samples as the pipeline gets them: mu-law on the wire, then streamed up to 16 kHz."""
    wire = pcm_to_ulaw(np.clip(np.rint(x8k), -32768, 32767).astype(np.int16).tobytes())
    up = StreamResampler(8000, CANONICAL_RATE)
    return up.process(ulaw_to_pcm(wire)) + up.flush()


def frames(pcm16k: bytes) -> Iterable[bytes]:
    """Whole 20 ms frames, as a call delivers them (a ragged tail is dropped)."""
    for start in range(0, len(pcm16k) - CANONICAL_FRAME_BYTES + 1, CANONICAL_FRAME_BYTES):
        yield pcm16k[start : start + CANONICAL_FRAME_BYTES]


def denoised(kind: DenoiseKind, pcm16k: bytes) -> bytes:
    """`pcm16k` through a fresh denoiser of `kind`, frame by frame."""
    denoiser = make_denoiser(kind)
    return b"".join([denoiser.process(f) for f in frames(pcm16k)])


def speech_starts(pcm16k: bytes, model: VadModel) -> int:
    """VAD speech starts with the default agent's turn settings."""
    stream = VadStream(model)
    segmenter = VadSegmenter(threshold=0.5, min_speech_secs=0.1, pause_secs=0.2)
    starts = 0
    for f in frames(pcm16k):
        starts += sum(isinstance(e, SpeechStarted) for e in segmenter.update(stream.push(f)))
    return starts


def noise_false_starts(
    paths: Sequence[Path], kinds: Sequence[DenoiseKind] = KINDS, model: VadModel | None = None
) -> list[dict]:
    """One row per recording and level ('own', and LOUD_DBFS unless babble): minutes and
    false speech starts for each kind."""
    model = model or shared_model()
    rows = []
    for path in paths:
        x, rate = read_wav(path)
        x8 = to_8k(x, rate)
        rms = float(np.sqrt(np.mean(x8**2)))
        levels = {"own": 1.0}
        if path.name not in BABBLE:
            levels[f"{LOUD_DBFS:g} dBFS"] = 32768 * 10 ** (LOUD_DBFS / 20) / rms
        for level, gain in levels.items():
            line = phone_line(x8 * gain)
            row = {"file": path.name, "level": level, "minutes": len(x8) / 8000 / 60}
            row["dbfs"] = round(20 * np.log10(rms * gain / 32768), 1)
            row.update({kind: speech_starts(denoised(kind, line), model) for kind in kinds})
            rows.append(row)
    return rows


def per_minute(rows: Sequence[dict], kind: DenoiseKind) -> float:
    return sum(r[kind] for r in rows) / sum(r["minutes"] for r in rows)


def noisy_prompts(
    prompts: Sequence, noise_paths: Sequence[Path], snr_db: float | None, seed: int = 0
) -> list[tuple[str, bytes]]:
    """(reference text, 16 kHz phone audio) per prompt: LEAD_SECS of noise, the prompt, and
    TAIL_SECS, with the noise (recording i mod n, random offset) at `snr_db` against the
    prompt's RMS; `snr_db=None` is clean speech in digital silence."""
    rng = np.random.default_rng(seed)
    noises = [to_8k(*read_wav(p)) for p in noise_paths]
    out = []
    for i, prompt in enumerate(prompts):
        pcm, rate = prompt.pcm()
        speech = to_8k(np.frombuffer(pcm, dtype=np.int16).astype(np.float64), rate)
        lead, tail = int(LEAD_SECS * 8000), int(TAIL_SECS * 8000)
        mix = np.concatenate([np.zeros(lead), speech, np.zeros(tail)])
        if snr_db is not None:
            noise = noises[i % len(noises)]
            noise = np.roll(noise, -int(rng.integers(len(noise))))
            noise = np.resize(noise, len(mix))  # repeats the short recordings
            gain = np.sqrt(np.mean(speech**2) / np.mean(noise**2)) * 10 ** (-snr_db / 20)
            mix += gain * noise
        out.append((prompt.text, phone_line(mix)))
    return out


def transcripts(stt: WhisperSTT, audios: Sequence[bytes]) -> list[str]:
    async def run() -> list[str]:
        return list(await asyncio.gather(*(stt.transcribe(a) for a in audios)))

    return asyncio.run(run())


def wer_by_kind(
    items: Sequence[tuple[str, bytes]],
    kinds: Sequence[DenoiseKind],
    word_error_rate: Callable[[list[str], list[str]], float],
    stt: WhisperSTT | None = None,
) -> dict[str, float]:
    """Whisper WER of the denoised items for each kind. STT hears the turn from PREROLL_SECS
    before the speech, as the conversation would give it."""
    stt = stt or WhisperSTT(beam_size=1)
    skip = int((LEAD_SECS - PREROLL_SECS) * CANONICAL_RATE) * 2
    refs = [text for text, _ in items]
    return {
        kind: word_error_rate(refs, transcripts(stt, [denoised(kind, a)[skip:] for _, a in items]))
        for kind in kinds
    }


def _cpu_us(work: Callable[[bytes], object], inputs: Sequence[bytes]) -> float:
    started = time.process_time()
    for item in inputs:
        work(item)
    return (time.process_time() - started) / len(inputs) * 1e6


def cpu_costs(pcm16k: bytes, smart_turn_per_minute: int = 12) -> dict[str, dict[str, float]]:
    """Per 20 ms frame (us) and per call-minute (CPU seconds) for each denoiser and for VAD;
    Smart Turn per inference on 8 s of audio, and per minute at `smart_turn_per_minute`
    inferences (one per VAD pause)."""
    chunks = list(frames(pcm16k))
    costs: dict[str, dict[str, float]] = {}
    for kind in KINDS[1:]:
        denoiser = make_denoiser(kind)
        costs[f"denoise_{kind}"] = {"us_per_frame": _cpu_us(denoiser.process, chunks)}
    costs["vad"] = {"us_per_frame": _cpu_us(VadStream(shared_model()).push, chunks)}
    for row in costs.values():
        row["cpu_s_per_call_minute"] = row["us_per_frame"] * FRAMES_PER_MINUTE / 1e6
    turn = SmartTurn()
    window = pcm16k[: 8 * CANONICAL_RATE * 2]
    turn.probability(window)  # warm-up
    us = _cpu_us(turn.probability, [window] * 10)
    costs["smart_turn"] = {
        "us_per_inference": us,
        "cpu_s_per_call_minute": us * smart_turn_per_minute / 1e6,
    }
    return costs


def main() -> None:
    from tests.corpus import select_prompts, word_error_rate

    paths = sorted(NOISE_DIR.glob("*.wav"))
    rows = noise_false_starts(paths)
    loud = [r for r in rows if r["level"] != "own"]
    own = [r for r in rows if r["level"] == "own"]
    prompts = select_prompts(20, seed=7)
    wer = {
        label: wer_by_kind(noisy_prompts(prompts, paths, snr), KINDS, word_error_rate)
        for label, snr in (("clean", None), ("snr_10db", 10.0), ("snr_5db", 5.0))
    }
    longest = max(paths, key=lambda p: p.stat().st_size)
    sample = phone_line(to_8k(*read_wav(longest))[: 30 * 8000])
    results = {
        "false_starts": rows,
        "false_starts_per_minute": {
            "own_level": {k: per_minute(own, k) for k in KINDS},
            "loud": {k: per_minute(loud, k) for k in KINDS},
        },
        "wer": wer,
        "cpu": cpu_costs(sample),
    }
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "denoise.json").write_text(json.dumps(results, indent=2))
    (out / "denoise.md").write_text(_markdown(results))
    print(_markdown(results))


def _markdown(results: dict) -> str:
    lines = ["# Noise suppression", "", "## VAD false speech starts on real noise", ""]
    lines += ["| file | level | dBFS | minutes | " + " | ".join(KINDS) + " |"]
    lines += ["|---" * (4 + len(KINDS)) + "|"]
    for r in results["false_starts"]:
        cells = [r["file"], r["level"], r["dbfs"], f"{r['minutes']:.2f}", *(r[k] for k in KINDS)]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    for level, figures in results["false_starts_per_minute"].items():
        per = ", ".join(f"{k} {v:.2f}" for k, v in figures.items())
        lines.append(f"\nPer minute, {level}: {per}")
    lines += ["", "## Whisper tiny.en WER (20 prompts, beam 1)", ""]
    lines += ["| condition | " + " | ".join(KINDS) + " |", "|---" * (1 + len(KINDS)) + "|"]
    for label, by_kind in results["wer"].items():
        lines.append(f"| {label} | " + " | ".join(f"{by_kind[k]:.3f}" for k in KINDS) + " |")
    lines += ["", "## CPU", "", "| stage | us per unit | CPU s per call-minute |", "|---|---|---|"]
    for stage, row in results["cpu"].items():
        unit = row.get("us_per_frame", row.get("us_per_inference"))
        lines.append(f"| {stage} | {unit:.0f} | {row['cpu_s_per_call_minute']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
