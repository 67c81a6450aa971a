"""What the application does once at start, in process."""

from __future__ import annotations

import gc
from pathlib import Path

import yaml

from gateway.app import create_app
from gateway.settings import load_config
from tests.gateway.server import write_config

BENCH_AGENT = Path(__file__).resolve().parents[2] / "config" / "agents" / "bench.yaml"


async def test_start_up_objects_are_frozen_out_of_the_collectors_reach(tmp_path: Path):
    agent = yaml.safe_load(BENCH_AGENT.read_text())
    app = create_app(load_config(write_config(tmp_path, {"default": agent})))
    gc.unfreeze()
    try:
        async with app.router.lifespan_context(app):
            assert app.state.gateway.models_ready
            frozen = gc.get_freeze_count()
        assert frozen > 10_000, frozen  # modules, models, settings: a full collection skips them
    finally:
        gc.unfreeze()
