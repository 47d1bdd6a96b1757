"""Scrape and sampler-tick times at 1x10 up to 16x1000 GPUs x processes, on fake sources (NVML excluded)."""

from __future__ import annotations

import http.client
import time
from dataclasses import dataclass

from prometheus_client import generate_latest

from benchmarks.fakes import build_rig
from benchmarks.overhead import PROMETHEUS_ACCEPT
from benchmarks.stats import median, percentile
from exporter.exposition import render_text
from exporter.web import WebConfig, serve

# (GPUs, processes in total). The design target "8 GPUs and 200 attributed processes" reads as 200 in total;
# the 8x1600 row is the other reading (200 processes on each of 8 GPUs).
SIZES: tuple[tuple[int, int], ...] = ((1, 10), (8, 200), (16, 1000), (8, 1600))


@dataclass(frozen=True)
class ScaleResult:
    gpus: int
    processes: int
    series: int
    body_bytes: int
    tick_ms: tuple[float, float]  # median, p99; source reads excluded
    scrape_ms: tuple[float, float]  # in-process: collect + our text encoder, what /metrics serves
    generic_ms: tuple[
        float, float
    ]  # in-process: collect + prometheus_client's generate_latest, for comparison
    http_ms: tuple[float, float]  # GET /metrics on 127.0.0.1 with Prometheus' Accept header, new connection

    @property
    def label(self) -> str:
        return f"{self.gpus}x{self.processes}"


def _reps(processes: int, quick: bool) -> int:
    base = 200 if processes <= 10 else 100 if processes <= 200 else 30
    return max(5, base // 5) if quick else base


def _source_read_s(rig_snapshot_sources: tuple[object, ...]) -> float:
    return sum(getattr(s, "read_duration_s", 0.0) for s in rig_snapshot_sources)


def measure_tick(gpus: int, processes: int, reps: int) -> tuple[float, float]:
    rig = build_rig(gpus, processes)
    try:
        times = []
        for _ in range(reps):
            rig.clock.t += 1.0
            rig.wall.t += 1.0
            started = time.perf_counter()
            snap = rig.sampler.tick()
            elapsed = time.perf_counter() - started
            times.append((elapsed - _source_read_s(snap.sources)) * 1000.0)
        return median(times), percentile(times, 99)
    finally:
        rig.close()


def _get(port: int) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics", headers={"Accept": PROMETHEUS_ACCEPT})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET /metrics answered {response.status}")
        return body
    finally:
        conn.close()


def measure(gpus: int, processes: int, quick: bool = False) -> ScaleResult:
    reps = _reps(processes, quick)
    tick = measure_tick(gpus, processes, reps)
    rig = build_rig(gpus, processes)
    try:
        body = render_text(rig.registry)
        series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        scrape, generic = [], []
        for _ in range(reps):
            started = time.perf_counter()
            render_text(rig.registry)
            middle = time.perf_counter()
            generate_latest(rig.registry)
            generic.append((time.perf_counter() - middle) * 1000.0)
            scrape.append((middle - started) * 1000.0)
        server = serve("127.0.0.1", 0, rig.registry, WebConfig())
        try:
            port = int(server.server_address[1])
            _get(port)
            over_http = []
            for _ in range(reps):
                started = time.perf_counter()
                _get(port)
                over_http.append((time.perf_counter() - started) * 1000.0)
        finally:
            server.shutdown()
            server.server_close()
    finally:
        rig.close()
    return ScaleResult(
        gpus,
        processes,
        series,
        len(body),
        tick,
        (median(scrape), percentile(scrape, 99)),
        (median(generic), percentile(generic, 99)),
        (median(over_http), percentile(over_http, 99)),
    )


def run(quick: bool = False, sizes: tuple[tuple[int, int], ...] = SIZES) -> list[ScaleResult]:
    return [measure(g, p, quick) for g, p in sizes]
