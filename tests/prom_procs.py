"""Start and stop real Prometheus and Alertmanager processes on free loopback ports, for integration tests.

Usage::

    from tests.prom_procs import free_port, prometheus, alertmanager

    with alertmanager(am_config, tmp_path / "am") as am, prometheus(prom_config, tmp_path / "prom") as prom:
        prom.query('up')              # -> list of result dicts from /api/v1/query
        prom.alerts()                 # -> list of alerts from /api/v1/alerts
        am.alerts()                   # -> list of alerts from Alertmanager's /api/v2/alerts

Both context managers bind 127.0.0.1 only, keep their data (TSDB, silences, logs) under the directory you give
them, wait until the process answers ``/-/ready`` (raising with the log tail if it exits or never does), and
always stop the process on exit (SIGTERM, then SIGKILL). The binaries are the Debian ones: ``prometheus`` and
``prometheus-alertmanager`` (``alertmanager`` is tried too). Prometheus is started with
``--web.enable-lifecycle`` so ``reload()`` can re-read its configuration.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

# Every port free_port() handed out in this process. The port is released before the process that
# will listen on it binds it (a second or so for the exporter's imports, longer for Prometheus), and
# in that time the kernel may choose the same port for the next bind(0): two servers a test starts
# one after the other would then collide. A port once handed out is never handed out again.
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind port 0 and read what the kernel chose),
    never one this process was given before."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def binary(*names: str) -> str:
    """The first of NAMES found on PATH; raises FileNotFoundError naming them all otherwise."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError(
        f"none of {', '.join(names)} is installed (Debian packages prometheus, prometheus-alertmanager)"
    )


@dataclass
class RunningServer:
    """A started Prometheus or Alertmanager: its process, port, base URL and log file."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def get(self, path: str, **params: Any) -> Any:
        """GET a JSON API path; returns the ``data`` member of Prometheus-style answers, else the body."""
        resp = requests.get(self.url + path, params=params or None, timeout=10)
        resp.raise_for_status()
        body = resp.json()
        return body["data"] if isinstance(body, dict) and "data" in body else body

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Prometheus instant query; the list of results (each with ``metric`` and ``value``)."""
        return list(self.get("/api/v1/query", query=promql)["result"])

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts: Prometheus' /api/v1/alerts, or Alertmanager's /api/v2/alerts."""
        if self.name == "prometheus":
            return list(self.get("/api/v1/alerts")["alerts"])
        return list(self.get("/api/v2/alerts"))

    def reload(self) -> None:
        requests.post(self.url + "/-/reload", timeout=10).raise_for_status()

    def stop(self, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)


def wait_ready(server: RunningServer, timeout: float = 60) -> None:
    """Poll ``/-/ready`` until it answers 200; raise RuntimeError with the log tail on exit or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{server.log_tail()}")
        try:
            if requests.get(server.url + "/-/ready", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready after {timeout:.0f}s:\n{server.log_tail()}")


def _start(name: str, cmd: Sequence[str], port: int, workdir: Path, timeout: float) -> RunningServer:
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = RunningServer(name, proc, port, log_path)
    try:
        wait_ready(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


@contextmanager
def prometheus(
    config: Path, workdir: Path, *, extra_args: Sequence[str] = (), timeout: float = 60
) -> Iterator[RunningServer]:
    """Run Prometheus with CONFIG on a free loopback port, TSDB and log under WORKDIR; stop it on exit."""
    port = free_port()
    cmd = [
        binary("prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        *extra_args,
    ]
    server = _start("prometheus", cmd, port, workdir, timeout)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def alertmanager(
    config: Path, workdir: Path, *, extra_args: Sequence[str] = (), timeout: float = 60
) -> Iterator[RunningServer]:
    """Run Alertmanager with CONFIG on a free loopback port, no cluster, data under WORKDIR; stop on exit."""
    port = free_port()
    cmd = [
        binary("prometheus-alertmanager", "alertmanager"),
        f"--config.file={config}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        *extra_args,
    ]
    server = _start("alertmanager", cmd, port, workdir, timeout)
    try:
        yield server
    finally:
        server.stop()
