"""Start the real exporter as a subprocess on a free loopback port, for integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ExporterProcess:
    proc: subprocess.Popen[str]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> str:
        return requests.get(self.url + "/metrics", timeout=10).text

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> tuple[int, str]:
        """Signal the exporter and return (exit status, everything it logged)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err


def start_exporter(
    args: Sequence[str], env: dict[str, str] | None = None, wait: float = 30
) -> ExporterProcess:
    """Run the exporter with ARGS on a free loopback port and wait until /healthz answers."""
    port = free_port()
    full_env = {**os.environ, **(env or {})}
    cmd = [sys.executable, "-m", "exporter", *args, f"--web.listen-address=127.0.0.1:{port}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
    exporter = ExporterProcess(proc, port)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise RuntimeError(f"exporter exited with {proc.returncode}: {err}")
        try:
            if requests.get(exporter.url + "/healthz", timeout=1).status_code == 200:
                return exporter
        except requests.RequestException:
            pass
        time.sleep(0.1)
    exporter.stop(signal.SIGKILL)
    raise RuntimeError("exporter did not become healthy")
