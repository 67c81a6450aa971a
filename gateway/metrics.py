"""Prometheus metrics of one process (text format on /metrics)."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from pipeline.turn_timing import STAGES

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls_active = Gauge(
            "callgate_calls_active", "Calls with a live media stream", registry=self.registry
        )
        self.draining = Gauge(
            "callgate_draining", "1 while the process drains (SIGTERM)", registry=self.registry
        )
        self.calls_total = Counter(
            "callgate_calls_total", "Calls started", ["provider"], registry=self.registry
        )
        self.calls_rejected = Counter(
            "callgate_calls_rejected_total",
            "Webhooks, upgrades and media sockets refused",
            ["provider", "reason"],
            registry=self.registry,
        )
        self.frames_in = Counter(
            "callgate_media_frames_in_total", "Caller media messages received",
            registry=self.registry,
        )
        self.frames_out = Counter(
            "callgate_media_frames_out_total", "Agent 20 ms frames sent", registry=self.registry
        )
        self.service_errors = Counter(
            "callgate_service_errors_total",
            "STT, LLM and TTS failures during calls (each one apologised for)",
            ["service", "kind"],
            registry=self.registry,
        )
        self.turn_latency = Histogram(
            "callgate_turn_latency_seconds",
            "Seconds from the end of the caller's speech to each stage of the answer",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        for stage in STAGES:
            self.turn_latency.labels(stage=stage)
        self.tasks = Gauge(
            "callgate_asyncio_tasks", "Live asyncio tasks (a leak shows as growth between calls)",
            registry=self.registry,
        )
        self.tasks.set_function(_live_tasks)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _live_tasks() -> int:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # rendered off the event loop
        return 0
