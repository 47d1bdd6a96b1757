"""Resident memory, CPU and scrape time of the running exporter beside node-exporter and CodeCarbon."""

from __future__ import annotations

import contextlib
import http.client
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from benchmarks import codecarbon_env
from benchmarks.stats import median, percentile

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
ROOT = Path(__file__).resolve().parent.parent
MB = 1024.0 * 1024.0
# What Prometheus 2.x sends by default: OpenMetrics preferred, text format 0.0.4 accepted.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


@dataclass(frozen=True)
class OverheadResult:
    name: str
    detail: str  # version or configuration; the reason when not available
    available: bool
    rss_mb_median: float = 0.0
    rss_mb_max: float = 0.0
    cpu_percent: float = 0.0  # of one core, over the measuring window
    scrape_ms: tuple[float, float] | None = None  # median, p99 over HTTP; None: nothing to scrape
    scrape_bytes: int = 0
    series: int = 0


@dataclass
class _Target:
    name: str
    detail: str
    proc: subprocess.Popen[bytes]
    port: int | None  # None: not an exporter (CodeCarbon)
    log: tempfile._TemporaryFileWrapper[bytes]
    ps: psutil.Process | None = None
    error: str = ""
    cpu_start: float = 0.0
    rss: list[float] = field(default_factory=list)
    scrapes: list[float] = field(default_factory=list)
    body: bytes = b""

    def cpu_seconds(self) -> float:
        assert self.ps is not None
        t = self.ps.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        # Threads' and child processes' time both count: whatever the tool costs the node.
        for child in self.ps.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                c = child.cpu_times()
                total += c.user + c.system
        return total

    def rss_bytes(self) -> float:
        assert self.ps is not None
        total = float(self.ps.memory_info().rss)
        for child in self.ps.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        return total

    def log_tail(self) -> str:
        self.log.flush()
        text = Path(self.log.name).read_text(errors="replace").strip().splitlines()
        return text[-1][:300] if text else "(no output)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int, timeout: float = 30.0) -> tuple[float, bytes]:
    """One GET /metrics on a new connection with Prometheus' Accept header; (ms, body)."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/metrics", headers={"Accept": PROMETHEUS_ACCEPT})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"GET /metrics answered {response.status}")
    return (time.perf_counter() - started) * 1000.0, body


def _start(name: str, detail: str, cmd: list[str], port: int | None, stdin: bool = False) -> _Target:
    log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by _stop, it outlives this function
        prefix=f"bench-{name.split()[0]}-", suffix=".log"
    )
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stderr=log,
        cwd=ROOT,
    )
    return _Target(name, detail, proc, port, log)


def _wait_ready(target: _Target, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if target.proc.poll() is not None:
            target.error = f"exited with status {target.proc.returncode}: {target.log_tail()}"
            return
        if target.port is None:
            assert target.proc.stdout is not None
            # CodeCarbon's import alone takes seconds; select keeps the deadline even if it never prints.
            if not select.select([target.proc.stdout], [], [], 0.5)[0]:
                continue
            line = target.proc.stdout.readline().decode(errors="replace")
            if line.startswith("ready"):
                target.ps = psutil.Process(target.proc.pid)
                return
            continue
        with contextlib.suppress(OSError, RuntimeError, http.client.HTTPException):
            scrape(target.port, timeout=5)
            target.ps = psutil.Process(target.proc.pid)
            return
        time.sleep(0.2)
    target.error = f"not ready after {timeout:.0f} s: {target.log_tail()}"


def _stop(target: _Target) -> None:
    proc = target.proc
    tell = target.port is None and proc.poll() is None  # CodeCarbon stops its tracker on a line on stdin
    try:
        if proc.poll() is None and not tell:
            proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(input=b"stop\n" if tell else None, timeout=30)
        except (subprocess.TimeoutExpired, OSError, ValueError):
            proc.kill()
            out, _ = proc.communicate()
        if target.port is None and out:
            last = out.decode(errors="replace").strip().splitlines()[-1:]
            if last and "network_attempts=" in last[0]:
                attempts = last[0].rsplit("network_attempts=", 1)[1]
                target.detail += f"; network connections attempted: {attempts}"
    finally:
        target.log.close()


def run(
    duration_s: float = 60.0,
    scrape_every_s: float = 15.0,
    warmup_s: float = 5.0,
    burst: int = 20,
    gpus: int = 8,
    with_codecarbon: bool = True,
) -> list[OverheadResult]:
    """Run our exporter, node-exporter and CodeCarbon at once and measure them over the same window."""
    targets: list[_Target] = []
    unavailable: list[OverheadResult] = []
    port = free_port()
    targets.append(
        _start(
            "footprint-exporter",
            f"{gpus} simulated GPUs, 1 s interval, defaults",
            [
                sys.executable,
                "-m",
                "exporter",
                "--source.gpu=simulated",
                f"--source.gpu.simulated.count={gpus}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            port,
        )
    )
    if os.access(NODE_EXPORTER, os.X_OK):
        version = subprocess.run([NODE_EXPORTER, "--version"], capture_output=True, text=True, timeout=30)
        words = (version.stdout + version.stderr).split()
        detail = words[2] if len(words) > 2 else "?"
        port = free_port()
        targets.append(
            _start(
                "prometheus-node-exporter",
                f"{detail}, default collectors",
                [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}"],
                port,
            )
        )
    else:
        unavailable.append(
            OverheadResult("prometheus-node-exporter", f"not available: {NODE_EXPORTER} not found", False)
        )
    if with_codecarbon:
        cc_python, cc_detail = codecarbon_env.ensure()
        if cc_python is None:
            unavailable.append(OverheadResult("CodeCarbon", f"not available: {cc_detail}", False))
        else:
            targets.append(
                _start(
                    "CodeCarbon",
                    f"{cc_detail}, OfflineEmissionsTracker, measure_power_secs=1",
                    [str(cc_python), "-c", codecarbon_env.TRACKER_SCRIPT],
                    None,
                    stdin=True,
                )
            )
    try:
        for target in targets:
            _wait_ready(target, timeout=90)
        live = [t for t in targets if not t.error]
        time.sleep(warmup_s)
        for target in live:
            if target.port is not None:
                scrape(target.port)  # the first scrape's one-time costs stay out of the window
            target.cpu_start = target.cpu_seconds()
        started = time.monotonic()
        next_scrape = started
        while True:
            now = time.monotonic()
            if now - started >= duration_s:
                break
            for target in live:
                with contextlib.suppress(psutil.Error):
                    target.rss.append(target.rss_bytes())
            if now >= next_scrape:
                next_scrape += scrape_every_s
                for target in live:
                    if target.port is not None:
                        ms, target.body = scrape(target.port)
                        target.scrapes.append(ms)
            time.sleep(max(0.0, min(1.0, started + duration_s - time.monotonic())))
        elapsed = time.monotonic() - started
        cpu = {t.name: (t.cpu_seconds() - t.cpu_start) / elapsed * 100.0 for t in live}
        for target in live:
            if target.port is not None:
                for _ in range(burst):  # scrape time on its own, after the CPU window closed
                    target.scrapes.append(scrape(target.port)[0])
    finally:
        for target in targets:
            _stop(target)
    results = []
    for target in targets:
        if target.error:
            results.append(OverheadResult(target.name, f"not available: {target.error}", False))
            continue
        series = sum(1 for line in target.body.splitlines() if line and not line.startswith(b"#"))
        scrapes = (median(target.scrapes), percentile(target.scrapes, 99)) if target.scrapes else None
        results.append(
            OverheadResult(
                target.name,
                target.detail,
                True,
                median(target.rss) / MB,
                max(target.rss) / MB,
                cpu[target.name],
                scrapes,
                len(target.body),
                series,
            )
        )
    return results + unavailable
