"""`python -m bench` (`make bench`): load ramp with the stand-in agent, one-call offline latency.

    python -m bench                 ramp N = 10, 25, 50, 100, 150, 200 (stops at the first N
                                    with failed calls, dropped frames or gap p99 > 60 ms)
                                    and the one-call latency of the offline default agent
    python -m bench --smoke         3 calls for ~15 s (what CI runs)
    python -m bench --soak 2000     2,000 calls in sequence: RSS, threads and fds over time

Writes bench/results/{loadgen,latency,soak,smoke}.json, summary.md and PNG plots.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import denoise_eval
from bench.loadgen import LoadOptions, LoadResult, frames_in, load_turns, run_load
from bench.procstat import (
    Sampler,
    cpu_percent,
    host_busy_secs,
    own_cpu_secs,
    sample,
    thread_cpu_secs,
)
from bench.report import markdown, plots, rss_slope_mb, server_turns, step_figures
from bench.server import BenchServer, standin_answer_secs, start_server
from bench.twilio_wire import EncodedTurn

RESULTS = Path(__file__).resolve().parent / "results"
RAMP = (10, 25, 50, 100, 150, 200)
CLEAR_BUDGET_MS = 300 + 150  # bench.yaml interruptions.min_speech_secs + 150 ms
OTHERS_BUSY_PCT = 20.0
"""Other processes on the host used more than a fifth of a core: figures are contended."""


async def _measured(
    server: BenchServer, options: LoadOptions, turns: list[EncodedTurn], baseline_secs: float
) -> tuple[LoadResult, Sampler, dict[str, Any]]:
    sampler = Sampler(server.pid, interval=min(0.5, baseline_secs / 2))
    task = asyncio.create_task(sampler.run())
    await asyncio.sleep(baseline_secs)  # the idle baseline
    idle: dict[str, Any] = {
        "cpu_pct": cpu_percent(sampler.samples) or 0.0,
        "rss_mb": sampler.samples[-1].rss_mb,
    }
    loadgen_cpu, host_cpu, server_cpu = own_cpu_secs(), host_busy_secs(), sample(server.pid)
    threads_before = thread_cpu_secs(server.pid)
    result = await run_load(options, turns)
    secs = result.ended_at - result.started_at
    threads = thread_cpu_secs(server.pid)
    idle["threads_cpu_secs"] = {
        role: busy - threads_before.get(role, 0.0) for role, busy in threads.items()
    }
    loadgen_cpu = own_cpu_secs() - loadgen_cpu
    server_cpu = sample(server.pid).cpu_secs - server_cpu.cpu_secs
    idle["loadgen_cpu_pct"] = 100 * loadgen_cpu / secs
    idle["others_cpu_pct"] = 100 * (host_busy_secs() - host_cpu - loadgen_cpu - server_cpu) / secs
    await asyncio.sleep(min(1.0, baseline_secs))
    task.cancel()
    return result, sampler, idle


def _step(
    server: BenchServer, options: LoadOptions, turns: list[EncodedTurn], baseline_secs: float = 2.0
) -> dict[str, Any]:
    log_mark = server.log_path.stat().st_size
    result, sampler, idle = asyncio.run(_measured(server, options, turns, baseline_secs))
    with server.log_path.open() as log:
        log.seek(log_mark)
        records = [json.loads(line) for line in log if line.startswith("{")]
    figures = step_figures(result, sampler.samples, idle, records, CLEAR_BUDGET_MS)
    figures["idle_cpu_pct"] = round(idle["cpu_pct"], 1)
    figures["idle_rss_mb"] = round(idle["rss_mb"], 1)
    figures["loadgen_cpu_pct"] = round(idle["loadgen_cpu_pct"], 1)
    figures["others_cpu_pct"] = round(idle["others_cpu_pct"], 1)
    figures["cpu_pct_per_call_by_thread"] = _by_thread(
        idle["threads_cpu_secs"], figures["server_cpu_pct_per_call"]
    )
    figures["host_contended"] |= figures["others_cpu_pct"] > OTHERS_BUSY_PCT
    figures["_gaps"] = [g for c in result.calls for g in c.gaps_ms]
    return figures


def _by_thread(busy_secs: dict[str, float], per_call_pct: float | None) -> dict[str, float]:
    """The steady per-call CPU split in the proportions the server's threads used over the
    step: where a call's cost goes (main = the event loop: protocol, codecs, pacing)."""
    total = sum(busy_secs.values())
    if not total or per_call_pct is None:
        return {}
    shares = sorted(busy_secs.items(), key=lambda item: -item[1])
    return {role: round(per_call_pct * secs / total, 2) for role, secs in shares if secs > 0}


def ramp(
    turns: list[EncodedTurn], steps: tuple[int, ...], call_secs: float, answer_secs: float
) -> list[dict]:
    figures = []
    with tempfile.TemporaryDirectory() as workdir:
        server = start_server(Path(workdir), "bench", answer_secs=answer_secs)
        try:
            for n in steps:
                spread = min(5.0, n / 10)
                options = LoadOptions(server.url, n, call_secs=call_secs, ramp_secs=spread,
                                      answer_frames=frames_in(answer_secs))
                step = _step(server, options, turns)
                if not step["holds_load"] and step["host_contended"]:
                    step = _step(server, options, turns)  # once more, hoping for a quiet host
                step["answer_secs"] = answer_secs
                figures.append(step)
                print(json.dumps({k: v for k, v in step.items() if k != "_gaps"}), flush=True)
                if not step["holds_load"]:  # CPU and Smart Turn misses are reported, not fatal
                    break
        finally:
            server.stop()
    return figures


def latency(prompts: int = 5) -> dict[str, Any]:
    """One call to the offline default agent (Whisper, espeak): end of speech to first audio."""
    from gateway.simulated_call import CallOptions, run_call
    from tests.corpus import select_prompts

    wavs = [p.wav for p in select_prompts(prompts, seed=3, min_secs=1.5, max_secs=4.0)]
    with tempfile.TemporaryDirectory() as workdir:
        server = start_server(Path(workdir), "default")
        try:
            options = CallOptions(server.url, "twilio", wavs, auth_token="", api_key="")
            summary = asyncio.run(run_call(options, lambda event: None))
            server_side = server_turns(server.logs())
        finally:
            server.stop()
    samples = summary["latency_ms"]["end_of_speech_to_first_audio"]
    return {
        "status": summary["status"],
        "turns": len(wavs),
        "end_of_speech_to_first_audio_ms": samples,
        "median_ms": statistics.median(samples) if samples else None,
        "first_greeting_audio_ms": summary["latency_ms"]["first_greeting_audio"],
        "target_median_ms": 800,
        "server": server_side,
    }


def soak(
    turns: list[EncodedTurn], total: int, answer_secs: float, concurrency: int = 25
) -> dict[str, Any]:
    """`total` short calls, `concurrency` at a time: resources after each batch."""
    batches = []
    with tempfile.TemporaryDirectory() as workdir:
        server = start_server(Path(workdir), "bench", answer_secs=answer_secs)
        try:
            for done in range(0, total, concurrency):
                options = LoadOptions(server.url, concurrency, call_secs=4.0, ramp_secs=0.5,
                                      answer_frames=frames_in(answer_secs), barge_in_every=2)
                step = _step(server, options, turns, baseline_secs=0.2)
                time.sleep(0.5)
                now = sample(server.pid)
                batches.append({"calls_done": done + concurrency, "rss_mb": round(now.rss_mb, 1),
                                "threads": now.threads, "fds": now.fds,
                                **_gauges(server, "calls_active", "asyncio_tasks"),
                                "failed": step["failed_calls"]})
        finally:
            server.stop()
    warm = batches[len(batches) // 10 :] or batches
    rss = [b["rss_mb"] for b in warm]
    return {
        "calls": total,
        "failed_calls": sum(b["failed"] for b in batches),
        "rss_mb_after_warmup": [min(rss), max(rss)],
        "rss_growth_pct": round(100 * (rss[-1] - rss[0]) / rss[0], 1),
        "fds_first_last": [batches[0]["fds"], batches[-1]["fds"]],
        "threads_first_last": [batches[0]["threads"], batches[-1]["threads"]],
        "asyncio_tasks_first_last": [batches[0]["asyncio_tasks"], batches[-1]["asyncio_tasks"]],
        "calls_active_at_end": batches[-1]["calls_active"],
        "batches": batches,
    }


def _gauges(server: BenchServer, *names: str) -> dict[str, float | None]:
    """Gauges from the server's /metrics (`callgate_<name>`) between batches."""
    text = httpx.get(f"{server.url}/metrics", timeout=5, trust_env=False).text
    values: dict[str, float | None] = dict.fromkeys(names)
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name.removeprefix("callgate_") in values:
            values[name.removeprefix("callgate_")] = float(value)
    return values


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--smoke", action="store_true", help="3 calls for ~15 s")
    parser.add_argument("--soak", type=int, metavar="CALLS", help="calls in sequence")
    parser.add_argument("--steps", type=lambda s: tuple(int(n) for n in s.split(",")),
                        default=RAMP)
    parser.add_argument("--call-secs", type=float, default=40.0)
    parser.add_argument("--answer-secs", type=float, default=standin_answer_secs(),
                        help="stand-in agent audio per answer (default: bench.yaml's, 1 s)")
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--no-denoise", action="store_true", help="skip the noise evaluation")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    turns = load_turns()
    report: dict[str, Any] = {"machine": f"{platform.node()} {os.cpu_count()} cores"}
    gaps: dict[int, list[float]] = {}
    if args.smoke:
        [step] = ramp(turns, (3,), call_secs=15.0, answer_secs=args.answer_secs)
        report["smoke"] = {k: v for k, v in step.items() if k != "_gaps"}
        _write("smoke.json", report["smoke"])
    elif args.soak:
        report["soak"] = soak(turns, args.soak, args.answer_secs)
        _write("soak.json", report["soak"])
    else:
        steps = ramp(turns, args.steps, args.call_secs, args.answer_secs)
        gaps = {s["calls"]: s.pop("_gaps") for s in steps}
        report["ramp"] = steps
        report["rss_mb_per_call"] = rss_slope_mb(steps)
        _write("loadgen.json", {"ramp": steps, "rss_mb_per_call": report["rss_mb_per_call"]})
        if not args.no_latency:
            report["latency"] = latency()
            _write("latency.json", report["latency"])
        if not args.no_denoise:  # VAD false starts and WER per suppressor, CPU per call-minute
            denoise_eval.main()
    _earlier_results(report)
    (RESULTS / "summary.md").write_text(markdown(report))
    plots(report, gaps, RESULTS)
    print(f"results in {RESULTS}")
    return 0


def _earlier_results(report: dict[str, Any]) -> None:
    """Fills in what this run did not measure from the last runs' JSON (one summary for all)."""
    for key, name in (("ramp", "loadgen.json"), ("latency", "latency.json"), ("soak", "soak.json")):
        path = RESULTS / name
        if key not in report and path.exists():
            data = json.loads(path.read_text())
            if key == "ramp":
                report["ramp"], report["rss_mb_per_call"] = data["ramp"], data["rss_mb_per_call"]
            else:
                report[key] = data


def _write(name: str, data: Any) -> None:
    (RESULTS / name).write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
