"""Start the real exporter as a subprocess on a free loopback port, for integration tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

import requests

from tests.prom_procs import free_port


@dataclass
class ExporterProcess:
    proc: subprocess.Popen[bytes]
    port: int
    # The exporter's log goes to a file, not a pipe: a pipe nobody reads fills up and blocks a
    # long-running exporter once it has logged 64 KiB.
    log: IO[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.port}"

    def metrics(self) -> str:
        return requests.get(self.url + "/metrics", timeout=10).text

    def wait_for_first_sample(self, timeout: float = 60) -> str:
        """Wait until the sampler has published its first snapshot; return that /metrics text.

        /healthz answers as soon as the server listens, a moment before the sampler's first tick: until
        then /metrics has none of the sampled series and the landing page shows the empty snapshot.
        """
        deadline = time.monotonic() + timeout
        while True:
            text = self.metrics()
            found = re.search(r"^footprint_samples_total (\S+)$", text, re.MULTILINE)
            if found and float(found.group(1)) >= 1:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"no sample published in {timeout:g}s: {self.log_text()[-3000:]}")
            time.sleep(0.05)

    def log_text(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> tuple[int, str]:
        """Signal the exporter and return (exit status, everything it logged)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        text = self.log_text()
        self.log.close()
        return self.proc.returncode, text


def start_exporter(
    args: Sequence[str],
    env: dict[str, str] | None = None,
    wait: float = 30,
    *,
    program: Sequence[str] = (sys.executable, "-m", "exporter"),
    inherit_env: bool = True,
    port: int | None = None,
) -> ExporterProcess:
    """Run the exporter with ARGS on a free loopback port and wait until /healthz answers.

    ``program`` is what starts it (the installed console script, say); with ``inherit_env=False`` the
    process sees only ``env``, as under systemd. ``port`` reuses a given port, so that a restarted
    exporter is the same scrape target to Prometheus.
    """
    port = free_port() if port is None else port
    full_env = {**(os.environ if inherit_env else {}), **(env or {})}
    cmd = [*program, *args, f"--web.listen-address=127.0.0.1:{port}"]
    log = tempfile.TemporaryFile()  # noqa: SIM115 - owned by ExporterProcess, closed by stop()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL, env=full_env
    )
    exporter = ExporterProcess(proc, port, log)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _, text = exporter.stop()
            raise RuntimeError(f"exporter exited with {proc.returncode}: {text[-3000:]}")
        try:
            if requests.get(exporter.url + "/healthz", timeout=1).status_code == 200:
                return exporter
        except requests.RequestException:
            pass
        time.sleep(0.1)
    _, text = exporter.stop(signal.SIGKILL)
    raise RuntimeError(f"exporter did not become healthy in {wait:g}s: {text[-3000:]}")
