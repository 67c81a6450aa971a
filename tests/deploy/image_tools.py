"""Building and running the edge image without a container engine.

Debian's podman builds with `--isolation chroot` but cannot `podman run` here, so the image is
proven this way: debootstrap makes a minimal Debian root filesystem, `podman import` turns it
into the base image, `podman build` builds the Dockerfile on it, and `podman create` + `export`
unpack the result into a directory that is then run under chroot as the image's own user, with
the image's environment and entrypoint. Everything lives under one work directory that the
caller removes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.corpus import skip_or_fail

TOOLS = ("debootstrap", "podman", "unshare", "chroot", "tar", "mount")
SUITE = "bookworm"
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def require_tools() -> None:
    """Root and the tools above, or a skip (a failure under CI=true)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        skip_or_fail(f"{', '.join(missing)} not installed; run tests/setup.sh")
    if os.geteuid() != 0:
        skip_or_fail("building the image needs root (debootstrap, podman storage, chroot)")


def apt_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The machine's Debian mirror: the first source that serves the suite itself."""
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]
    for file in files:
        if not file.is_file():
            continue
        text = file.read_text(errors="replace")
        if file.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.MULTILINE))
                if SUITE in fields.get("Suites", "").split() and fields.get("URIs"):
                    return fields["URIs"].split()[0]
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^\]]*\]", " ", line).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                    return words[1]
    return DEFAULT_MIRROR


def run(args: list[str], timeout: float, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command, failing with its output when it fails."""
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args[:6])} ... exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def debootstrap(target: Path) -> None:
    """A minimal Debian with Python and its venv module, from the machine's mirror."""
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={BASE_PACKAGES}",
            SUITE,
            str(target),
            apt_mirror(),
        ],
        timeout=600,
    )


@dataclass(frozen=True)
class ImageConfig:
    user: str
    workdir: str
    env: dict[str, str]
    entrypoint: list[str]
    exposed: set[str]
    healthcheck: list[str]
    size_bytes: int


class Podman:
    """podman with its storage under `root` (overlay), so nothing outlives the work directory."""

    def __init__(self, root: Path) -> None:
        self._base = [
            "podman",
            "--root", str(root / "storage"),
            "--runroot", str(root / "run"),
            "--tmpdir", str(root / "tmp"),
            "--events-backend", "none",
            "--storage-driver", "overlay",
        ]  # fmt: skip

    def __call__(self, *args: str, timeout: float = 120) -> str:
        return run([*self._base, *args], timeout=timeout).stdout

    def import_rootfs(self, rootfs: Path, name: str) -> None:
        """`tar -C rootfs -c . | podman import - name`."""
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            run([*self._base, "import", "-", name], timeout=300, stdin=tar.stdout)
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            assert tar.wait(timeout=60) == 0, "tar of the base root filesystem failed"

    def build(self, context: Path, tag: str, base: str) -> None:
        """The Dockerfile in `context` on `base`; pip inside trusts the host's CA bundle."""
        self(
            "build",
            "--format", "docker",  # OCI images drop HEALTHCHECK
            "--isolation", "chroot",
            "--build-arg", f"BASE_IMAGE={base}",
            "--build-arg", f"PIP_CERT={CA_BUNDLE}",
            "--volume", "/etc/ssl/certs:/etc/ssl/certs:ro",
            "--tag", tag,
            str(context),
            timeout=900,
        )  # fmt: skip

    def config(self, tag: str) -> ImageConfig:
        [image] = json.loads(self("image", "inspect", tag))
        config = image["Config"]
        health = image.get("Healthcheck") or config.get("Healthcheck") or {}
        return ImageConfig(
            user=config.get("User", ""),
            workdir=config.get("WorkingDir") or "/",
            env=dict(item.split("=", 1) for item in config.get("Env", [])),
            entrypoint=config.get("Entrypoint") or [],
            exposed=set(config.get("ExposedPorts") or {}),
            healthcheck=health.get("Test") or [],
            size_bytes=int(image["Size"]),
        )

    def export(self, tag: str, target: Path) -> None:
        """The image's filesystem, unpacked into `target` (`podman create` + `podman export`)."""
        container = self("create", "--no-healthcheck", tag).strip()
        try:
            target.mkdir(parents=True)
            export = subprocess.Popen([*self._base, "export", container], stdout=subprocess.PIPE)
            assert export.stdout is not None
            with export.stdout:
                run(["tar", "-C", str(target), "-x"], timeout=300, stdin=export.stdout)
            assert export.wait(timeout=60) == 0, "podman export failed"
        finally:
            self("rm", "--force", container)

    def remove_all(self) -> None:
        self("rmi", "--all", "--force")


def chroot_command(rootfs: Path, config: ImageConfig, command: list[str]) -> list[str]:
    """`command` run in `rootfs` as the image's user (UID:GID) in its working directory, with
    /proc and /dev mounted in a private mount namespace: the mounts vanish with the process,
    whatever happens to the test. Every step execs the next, so the PID of the returned
    command is the server's own, and signals sent to it reach the server."""
    script = (
        'root=$0 user=$1 workdir=$2; shift 2; mount -t proc proc "$root/proc" '
        '&& mount --rbind /dev "$root/dev" '
        '&& exec chroot --userspec="$user" "$root" /bin/sh -c \'cd "$0" && exec "$@"\' '
        '"$workdir" "$@"'
    )
    return [
        "unshare", "--mount", "--propagation", "private", "sh", "-c", script,
        str(rootfs), config.user, config.workdir, *command,
    ]  # fmt: skip
