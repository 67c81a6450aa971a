"""The fresh-machine contract: the README's two commands are what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _make_targets() -> dict[str, str]:
    """Makefile target -> its recipe and prerequisites, as text."""
    text = (REPO / "Makefile").read_text()
    targets: dict[str, str] = {}
    for match in re.finditer(r"^([a-z]+):(.*)\n((?:\t.*\n)*)", text, re.MULTILINE):
        targets[match.group(1)] = match.group(2) + "\n" + match.group(3)
    return targets


def test_readme_gives_the_two_commands_ci_runs():
    readme = (REPO / "README.md").read_text()
    block = readme.split("## The two commands", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make run", "make test"]
    ci = (REPO / ".ci" / "run").read_text()
    ci_commands = [
        line.strip() for line in ci.splitlines() if line.strip() and not line.startswith("#")
    ]
    assert "make test" in ci_commands


def test_make_run_and_test_bootstrap_the_venv_and_models():
    targets = _make_targets()
    for name in ("run", "test", "bench"):
        assert "$(STAMP)" in targets[name], f"make {name} must create .venv first"
        assert "callgate models fetch" in targets[name]
    assert "python3 -m venv" in (REPO / "Makefile").read_text().replace("$(PYTHON)", "python3")
    assert "--source pypi" in targets["test"]  # tests never reach another host
    assert "tests/setup.sh" in targets["test"] and "pytest" in targets["test"]


def test_readme_agent_example_is_a_valid_agent_file():
    import yaml

    from pipeline.agent import AgentConfig

    readme = (REPO / "README.md").read_text()
    block = readme.split("### Agents", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    agent = AgentConfig.model_validate(yaml.safe_load(block))
    assert agent.turn.smart_turn and agent.denoise.provider == "speex"
    assert [t if isinstance(t, str) else t.name for t in agent.tools] == [
        "end_call",
        "transfer_call",
        "send_dtmf",
        "order_status",
    ]
