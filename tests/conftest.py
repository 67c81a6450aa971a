"""Suite-wide: measured figures are collected by tests and printed once at the end.

A figure travels as a user property of the test's report, so figures measured in pytest-xdist
workers reach the controlling process too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

FIGURES: dict[str, object] = {}


FIGURE_PROPERTY = "callgate_figure"


@pytest.fixture
def report_figure(request):
    """report_figure(name, value): a measured figure, printed in the summary and saved as JSON."""

    def report(name: str, value: object) -> None:
        request.node.user_properties.append((FIGURE_PROPERTY, (name, value)))

    return report


def pytest_collection_modifyitems(items) -> None:
    """A test that reports a figure measures time: it is `timed`, so it runs in the quiet pass."""
    for item in items:
        if "report_figure" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timed)


def pytest_runtest_logreport(report) -> None:
    for key, figure in report.user_properties:
        if key == FIGURE_PROPERTY:
            name, value = figure
            FIGURES[name] = value


def pytest_terminal_summary(terminalreporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("measured figures")
    for name, value in FIGURES.items():
        terminalreporter.write_line(f"{name}: {json.dumps(value)}")
    target = os.environ.get("CALLGATE_FIGURES_JSON")
    if target:
        Path(target).write_text(json.dumps(FIGURES, indent=2))
