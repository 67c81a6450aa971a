"""Suite-wide: measured figures are collected by tests and printed once at the end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

FIGURES: dict[str, object] = {}


@pytest.fixture
def report_figure():
    """report_figure(name, value): a measured figure, printed in the summary and saved as JSON."""

    def report(name: str, value: object) -> None:
        FIGURES[name] = value

    return report


def pytest_terminal_summary(terminalreporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("measured figures")
    for name, value in FIGURES.items():
        terminalreporter.write_line(f"{name}: {json.dumps(value)}")
    target = os.environ.get("CALLGATE_FIGURES_JSON")
    if target:
        Path(target).write_text(json.dumps(FIGURES, indent=2))
