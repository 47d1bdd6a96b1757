"""Beyond one Prometheus: remote write into a real VictoriaMetrics (Debian package) beside Prometheus.

A simulated 8-GPU exporter is scraped by a real Prometheus that evaluates our recording rules and
remote-writes every sample (raw and recorded) to a real single-node VictoriaMetrics on loopback.
At one past timestamp both answer the same: the raw counters, the recording rules' results, and a
dashboard query evaluated by each engine itself. The compressed remote-write bytes per sample are
read from Prometheus' own counters for the sizing table in docs/deployment.md.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from metrics_text import parse, select

from tests.exporter_proc import start_exporter
from tests.prom_procs import RunningServer, free_port, prometheus

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "prometheus" / "rules" / "footprint.rules.yml"
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@dataclass
class Pair:
    prometheus: RunningServer
    vm_url: str


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("remote-write-vm")
    binary = shutil.which("victoria-metrics")
    assert binary is not None, "victoria-metrics is not installed (Debian package victoria-metrics)"
    vm_port = free_port()
    vm_url = f"http://127.0.0.1:{vm_port}"
    log = (tmp / "vm.log").open("wb")
    vm = subprocess.Popen(
        [
            binary,
            f"-httpListenAddr=127.0.0.1:{vm_port}",
            f"-storageDataPath={tmp / 'vm-data'}",
            "-retentionPeriod=1d",
            # Answer with the newest samples (by default the last 30 s are held back from queries).
            "-search.latencyOffset=0s",
            "-search.disableCache",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    exporter = None
    try:
        _wait(lambda: requests.get(vm_url + "/health", timeout=2).status_code == 200, 60, "VictoriaMetrics")
        exporter = start_exporter(
            [
                "--source.gpu=simulated",
                "--source.gpu.simulated.count=8",
                "--source.gpu.simulated.seed=7",
                "--source.cpu=estimated",
                "--sample.interval=250ms",
            ],
            wait=60,
        )
        rules = yaml.safe_load(RULES.read_text())
        for group in rules["groups"]:
            group["interval"] = "1s"
        (tmp / "rules.yml").write_text(yaml.safe_dump(rules))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp / "rules.yml")],
            "scrape_configs": [
                {"job_name": "footprint", "static_configs": [{"targets": [exporter.instance]}]}
            ],
            # As deploy/fleet/remote-write/victoriametrics.yml sends: batches of up to 2000 samples,
            # or what 5 s brought; the bytes per sample measured below depend on that batching.
            "remote_write": [
                {
                    "url": f"{vm_url}/api/v1/write",
                    "name": "victoriametrics",
                    "queue_config": {"max_samples_per_send": 2000, "batch_send_deadline": "5s"},
                }
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        with prometheus(tmp / "prometheus.yml", tmp / "prom") as prom:
            yield Pair(prom, vm_url)
    finally:
        if exporter is not None:
            exporter.stop()
        vm.send_signal(signal.SIGTERM)
        try:
            vm.wait(timeout=30)
        except subprocess.TimeoutExpired:
            vm.kill()
            vm.wait(timeout=30)
        log.close()


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{what} not ready after {timeout:g}s")


def _query(url: str, expr: str, at: float) -> dict[str, float]:
    response = requests.get(url + "/api/v1/query", params={"query": expr, "time": f"{at:.3f}"}, timeout=30)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    out = {}
    for item in body["data"]["result"]:
        labels = {k: v for k, v in item["metric"].items() if k != "__name__"}
        out[json.dumps(labels, sort_keys=True)] = float(item["value"][1])
    return out


def _same(a: dict[str, float], b: dict[str, float]) -> None:
    assert a, "no data"
    assert a.keys() == b.keys()
    for key in a:
        # VictoriaMetrics stores floats as decimal mantissa and exponent: equal to 12 digits.
        assert math.isclose(a[key], b[key], rel_tol=1e-9, abs_tol=1e-9), (key, a[key], b[key])


@pytest.fixture(scope="module")
def settled(pair: Pair) -> float:
    """A past timestamp both stores have every sample for: Prometheus has rules evaluated over it."""
    _wait(lambda: pair.prometheus.query("instance_gpu:footprint_gpu_energy_joules:rate5m"), 120, "rules")
    time.sleep(20)
    at = math.floor(time.time()) - 12.0
    expr = "count(footprint_gpu_energy_joules_total)"
    _wait(lambda: _query(pair.vm_url, expr, at) == _query(pair.prometheus.url, expr, at), 60, "remote write")
    return at


@pytest.mark.parametrize(
    "expr",
    [
        "footprint_gpu_energy_joules_total",
        "footprint_process_gpu_energy_joules_total",
        "footprint_cpu_energy_joules_total",
    ],
)
def test_raw_counters_are_the_same_in_both(pair: Pair, settled: float, expr: str) -> None:
    _same(_query(pair.prometheus.url, expr, settled), _query(pair.vm_url, expr, settled))


@pytest.mark.parametrize(
    "expr",
    [
        "instance:footprint_gpu_power_watts:sum",
        "instance_gpu:footprint_gpu_energy_joules:rate5m",
        "namespace_pod:footprint_process_gpu_power_watts:sum",
        "instance:footprint_emissions_grams:rate5m",
        "fleet:footprint_gpu_info:count",
    ],
)
def test_recording_rules_reach_victoriametrics_unchanged(pair: Pair, settled: float, expr: str) -> None:
    prom = _query(pair.prometheus.url, expr, settled)
    _same(prom, _query(pair.vm_url, expr, settled))
    if expr == "fleet:footprint_gpu_info:count":
        assert list(prom.values()) == [8.0]


def test_a_dashboard_query_gives_the_same_answer_from_either_engine(pair: Pair, settled: float) -> None:
    # Workloads dashboard, "Attributed GPU power by user", with $instance and $namespace set to all.
    expr = 'sum by (user) (footprint_process_gpu_power_watts{instance=~".*", gpu=~".*", namespace=~".*"})'
    prom = _query(pair.prometheus.url, expr, settled)
    assert len(prom) >= 2
    _same(prom, _query(pair.vm_url, expr, settled))


def test_remote_write_bytes_per_sample_are_measured(pair: Pair, settled: float) -> None:
    text = requests.get(pair.prometheus.url + "/metrics", timeout=30).text
    samples = parse(text)
    sent = sum(select(samples, "prometheus_remote_storage_samples_total").values())
    wire = sum(select(samples, "prometheus_remote_storage_bytes_total").values())
    failed = sum(select(samples, "prometheus_remote_storage_samples_failed_total").values())
    assert sent > 1000 and failed == 0
    per_sample = wire / sent
    print(
        f"\nremote write to VictoriaMetrics: {sent:.0f} samples, {wire:.0f} bytes, {per_sample:.2f} B/sample"
    )
    # Snappy-compressed protobuf: well under the ~60-100 bytes of a sample with its labels in text.
    assert 0.5 < per_sample < 60
