"""A private Docker engine for tests (Debian's docker.io) and a plain Debian bookworm base image.

``engine(workdir)`` starts ``dockerd`` on its own socket, data root and exec root under ``workdir``,
with ``--iptables=false --bridge=none --storage-driver=vfs`` (no host network changes, works in a
container), waits until it answers, and on exit removes its containers and stops it (SIGTERM, then
SIGKILL). ``debian_base(docker)`` imports a root file system made by ``debootstrap --variant=minbase
--include=python3,python3-venv bookworm``; the tarball is cached in ``$FOOTPRINT_TEST_CACHE``
(default ``/var/cache/footprint-test``) because debootstrap takes about a minute, and a fresh machine
builds it on first use.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("FOOTPRINT_TEST_CACHE", "/var/cache/footprint-test"))
BASE_TARBALL = "debian-bookworm-minbase-python3.tar"
BASE_IMAGE = "footprint-test/debian-bookworm-python3:minbase"


def need(binary: str, package: str) -> str:
    found = shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise FileNotFoundError(f"{binary} is not installed (Debian package {package}; .ci/run installs it)")
    return found


@dataclass
class Docker:
    client: str
    host: str

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host}

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.client, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args[:3])} failed: {result.stdout[-2000:]}{result.stderr[-3000:]}"
            )
        return result


@contextmanager
def engine(workdir: Path, timeout: float = 90) -> Iterator[Docker]:
    if os.geteuid() != 0:
        raise PermissionError("the image tests start dockerd and need root")
    dockerd = need("dockerd", "docker.io")
    client = need("docker", "docker.io")
    # A short directory: dockerd and containerd put unix sockets under these (108-byte limit).
    root = Path(tempfile.mkdtemp(prefix="fpd-", dir="/tmp"))
    sock = root / "docker.sock"
    cmd: Sequence[str] = [
        dockerd,
        f"--host=unix://{sock}",
        f"--data-root={root / 'data'}",
        f"--exec-root={root / 'exec'}",
        f"--pidfile={root / 'docker.pid'}",
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
        "--storage-driver=vfs",
    ]
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "dockerd.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    docker = Docker(client, f"unix://{sock}")
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            if sock.exists() and docker.run("version", timeout=10, check=False).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd not up after {timeout:g}s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield docker
    finally:
        if proc.poll() is None:
            ids = docker.run("ps", "-aq", timeout=30, check=False).stdout.split()
            if ids:
                docker.run("rm", "-f", *ids, timeout=60, check=False)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        # dockerd leaves its default network namespace bind-mounted under the exec root.
        for mount in _mounts_under(root):
            subprocess.run(["umount", "--lazy", mount], capture_output=True, timeout=30, check=False)
        shutil.rmtree(root, ignore_errors=True)


def _mounts_under(root: Path) -> list[str]:
    """Mount points below ``root``, deepest first (/proc/self/mounts escapes spaces as octal)."""
    prefix = str(root) + "/"
    points = []
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            point = line.split()[1].encode().decode("unicode_escape")
            if point.startswith(prefix):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def debian_mirror() -> str:
    """The Debian mirror apt uses on this machine, so debootstrap goes where apt-get already goes."""
    if os.environ.get("FOOTPRINT_TEST_DEBIAN_MIRROR"):
        return os.environ["FOOTPRINT_TEST_DEBIAN_MIRROR"]
    for path in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        try:
            text = path.read_text()
        except OSError:
            continue
        match = re.search(r"^URIs:\s*(\S+)", text, re.M) or re.search(
            r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M
        )
        if match and "security" not in match.group(1):
            return match.group(1)
    return "http://deb.debian.org/debian"


def base_tarball(workdir: Path) -> Path:
    """The cached bookworm minbase root file system with python3 and python3-venv, built if missing."""
    cached = CACHE / BASE_TARBALL
    if cached.is_file():
        return cached
    debootstrap = need("debootstrap", "debootstrap")
    rootfs = workdir / "rootfs"
    result = subprocess.run(
        [
            debootstrap,
            "--variant=minbase",
            "--include=python3,python3-venv",
            "bookworm",
            str(rootfs),
            debian_mirror(),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"debootstrap failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = CACHE / (BASE_TARBALL + ".partial")
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True, timeout=600)
    partial.replace(cached)  # atomic: a run killed half-way leaves no broken cache
    shutil.rmtree(rootfs, ignore_errors=True)
    return cached


def debian_base(docker: Docker, workdir: Path) -> str:
    tarball = base_tarball(workdir)
    docker.run("import", str(tarball), BASE_IMAGE, timeout=600)
    return BASE_IMAGE
