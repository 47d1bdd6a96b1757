"""Tests of deploy/fleet: configs checked by promtool, and three exporters -> agent -> central end to end."""

from __future__ import annotations

import contextlib
import functools
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import yaml

from tests import prom_procs

REPO = Path(__file__).resolve().parents[1]
FLEET = REPO / "deploy" / "fleet"
EXPORTER = Path(sys.executable).with_name("footprint-exporter")
WAIT_S = 120.0  # generous: the CI machine is shared and slow
T = TypeVar("T")


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} is not installed"
    return path


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("promtool"), *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


# --- the shipped configs -------------------------------------------------------------------------------


def test_agent_config_is_valid_for_agent_mode() -> None:
    result = _promtool("check", "config", "--agent", FLEET / "prometheus-agent.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((FLEET / "prometheus-agent.yml").read_text(encoding="utf-8"))
    assert set(config["global"]["external_labels"]) == {"datacenter", "rack"}
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "footprint-exporter"  # fleet-rules.yml counts up{job="footprint-exporter"}
    assert job["file_sd_configs"][0]["files"] == ["file_sd/*.yml"]
    assert "rule_files" not in config  # an agent evaluates no rules


@pytest.mark.parametrize("name", ["thanos-receive.yml", "mimir.yml", "victoriametrics.yml"])
def test_remote_write_snippets_are_valid_agent_configs(name: str) -> None:
    path = FLEET / "remote-write" / name
    result = _promtool("check", "config", "--agent", path)
    assert result.returncode == 0, result.stdout + result.stderr
    (target,) = yaml.safe_load(path.read_text(encoding="utf-8"))["remote_write"]
    expected_path = {
        "thanos-receive.yml": "/api/v1/receive",
        "mimir.yml": "/api/v1/push",
        "victoriametrics.yml": "/api/v1/write",
    }[name]
    assert target["url"].endswith(expected_path)


def test_central_config_with_the_rules_beside_it_is_valid(tmp_path: Path) -> None:
    shutil.copy(FLEET / "prometheus-central.yml", tmp_path / "prometheus.yml")
    shutil.copy(FLEET / "fleet-rules.yml", tmp_path / "fleet-rules.yml")
    (tmp_path / "rules").mkdir()
    result = _promtool("check", "config", tmp_path / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 12 rules found" in result.stdout


def test_file_sd_example_has_one_node_label_per_target() -> None:
    groups = yaml.safe_load((FLEET / "file_sd" / "gpu-nodes.yml").read_text(encoding="utf-8"))
    targets = [t for g in groups for t in g["targets"]]
    assert len(targets) == len(set(targets)) == 3
    for group in groups:
        assert len(group["targets"]) == 1
        host, port = group["targets"][0].rsplit(":", 1)
        assert port == "9877" and host.split(".")[0] == group["labels"]["node"]
        assert not {"rack", "datacenter"} & set(group["labels"])  # those come from external_labels


def _series(metric: str, rack: str, node: str, values: str, gpu: str | None = None) -> dict[str, str]:
    gpu_label = f',gpu="{gpu}"' if gpu is not None else ""
    return {
        "series": f'{metric}{{datacenter="dc1",rack="{rack}",node="{node}"{gpu_label}}}',
        "values": values,
    }


def test_fleet_rules_sum_nodes_per_rack(tmp_path: Path) -> None:
    """promtool unit test of fleet-rules.yml: two racks, known node values, exact rack and DC sums."""
    tests = {
        "rule_files": [str(FLEET / "fleet-rules.yml")],
        "evaluation_interval": "30s",
        "tests": [
            {
                "interval": "30s",
                "input_series": [
                    _series("footprint_gpu_power_watts", "a", "n1", "300x20", "0"),
                    _series("footprint_gpu_power_watts", "a", "n1", "250x20", "1"),
                    _series("footprint_gpu_power_watts", "a", "n2", "100x20", "0"),
                    _series("footprint_gpu_power_watts", "b", "n3", "700x20", "0"),
                    # 300 J every 30 s = 10 W
                    _series("footprint_gpu_energy_joules_total", "b", "n3", "0+300x20", "0"),
                    _series("footprint_gpu_emissions_grams_total", "b", "n3", "0+15x20", "0"),
                    _series("footprint_cpu_emissions_grams_total", "b", "n3", "0+7.5x20"),
                    _series("footprint_gpu_info", "a", "n1", "1x20", "0"),
                    _series("footprint_gpu_info", "a", "n1", "1x20", "1"),
                    _series("footprint_gpu_info", "b", "n3", "1x20", "0"),
                ],
                "promql_expr_test": [
                    {
                        "expr": "rack:footprint_gpu_power_watts:sum",
                        "eval_time": "5m",
                        "exp_samples": [
                            {
                                "labels": 'rack:footprint_gpu_power_watts:sum{datacenter="dc1",rack="a"}',
                                "value": 650,
                            },
                            {
                                "labels": 'rack:footprint_gpu_power_watts:sum{datacenter="dc1",rack="b"}',
                                "value": 700,
                            },
                        ],
                    },
                    {
                        "expr": "datacenter:footprint_gpu_power_watts:sum",
                        "eval_time": "5m",
                        "exp_samples": [
                            {
                                "labels": 'datacenter:footprint_gpu_power_watts:sum{datacenter="dc1"}',
                                "value": 1350,
                            }
                        ],
                    },
                    {
                        "expr": "rack:footprint_gpu_energy_joules:rate5m",
                        "eval_time": "5m",
                        "exp_samples": [
                            {
                                "labels": "rack:footprint_gpu_energy_joules:rate5m"
                                '{datacenter="dc1",rack="b"}',
                                "value": 10,
                            }
                        ],
                    },
                    # (15 + 7.5) g per 30 s = 0.75 g/s, GPU and CPU together
                    {
                        "expr": "rack:footprint_emissions_grams:rate5m",
                        "eval_time": "5m",
                        "exp_samples": [
                            {
                                "labels": 'rack:footprint_emissions_grams:rate5m{datacenter="dc1",rack="b"}',
                                "value": 0.75,
                            }
                        ],
                    },
                    {
                        "expr": "datacenter:footprint_gpu_count:sum",
                        "eval_time": "5m",
                        "exp_samples": [
                            {"labels": 'datacenter:footprint_gpu_count:sum{datacenter="dc1"}', "value": 3}
                        ],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "fleet_test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False), encoding="utf-8")
    result = _promtool("test", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _rack_b_silent(eval_time: str, dark_for: str) -> dict[str, object]:
    """promtool's expectation of FootprintRackAgentSilent for rack b, dark for DARK_FOR at EVAL_TIME."""
    description = (
        f"The Prometheus agent of rack b (dc1) has sent nothing for {dark_for}: the agent is down or "
        "cannot reach the remote_write endpoint."
    )
    labels = {"severity": "warning", "datacenter": "dc1", "rack": "b"}
    annotations = {"summary": f"No samples from rack b for {dark_for}.", "description": description}
    return {
        "alertname": "FootprintRackAgentSilent",
        "eval_time": eval_time,
        "exp_alerts": [{"exp_labels": labels, "exp_annotations": annotations}],
    }


def test_rack_alerts_fire_only_after_their_for_duration(tmp_path: Path) -> None:
    up = 'up{job="footprint-exporter",datacenter="dc1",rack="a",instance="n%d"}'
    tests = {
        "rule_files": [str(FLEET / "fleet-rules.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                # 2 of 5 exporters (40 %) down from minute 0; rack b's agent goes silent after minute 10.
                "input_series": [
                    *({"series": up % i, "values": "1x100"} for i in range(3)),
                    *({"series": up % i, "values": "0x100"} for i in range(3, 5)),
                    {
                        "series": 'up{job="footprint-exporter",datacenter="dc1",rack="b",instance="m1"}',
                        "values": "1x10",
                    },
                ],
                "alert_rule_test": [
                    {"alertname": "FootprintRackExportersDown", "eval_time": "5m", "exp_alerts": []},
                    {
                        "alertname": "FootprintRackExportersDown",
                        "eval_time": "11m",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning", "datacenter": "dc1", "rack": "a"},
                                "exp_annotations": {
                                    "summary": "More than 20% of the footprint exporters in a are down.",
                                    "description": "40% of the exporters in rack a (dc1) fail their "
                                    "scrapes; their energy and emissions are missing from every fleet total.",
                                },
                            }
                        ],
                    },
                    # Rack b's last sample is at minute 10: silent after 5 minutes without one, and still
                    # firing long after its samples have left every lookback window (it stays dark).
                    {"alertname": "FootprintRackAgentSilent", "eval_time": "15m", "exp_alerts": []},
                    _rack_b_silent("16m", "6m 0s"),
                    _rack_b_silent("90m", "1h 20m 0s"),
                ],
            }
        ],
    }
    path = tmp_path / "fleet_alerts_test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False), encoding="utf-8")
    result = _promtool("test", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- end to end: three exporters, one agent, one central Prometheus --------------------------------------


def _wait_for(what: str, check: Callable[[], T | None], timeout: float = WAIT_S) -> T:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value is not None:
                return value
        except (requests.RequestException, KeyError, ValueError) as exc:
            last_error = exc
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last error: {last_error!r})")


@contextlib.contextmanager
def _process(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process that is always stopped (SIGTERM, then SIGKILL) when the block ends."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


def _query(base: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    params: dict[str, str] = {"query": expr}
    if at is not None:
        params["time"] = f"{at:.3f}"
    response = requests.get(f"{base}/api/v1/query", params=params, timeout=10)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _scalar(base: str, expr: str, at: float | None = None) -> float | None:
    result = _query(base, expr, at)
    if len(result) != 1:
        return None
    return float(result[0]["value"][1])


def _count_gpus(url: str) -> int | None:
    """GPUs the exporter serves (None until it serves any: it may still be starting)."""
    text = requests.get(url, timeout=10).text
    return sum(1 for line in text.splitlines() if line.startswith("footprint_gpu_info{")) or None


NODES = [("node-1", 11, 2), ("node-2", 22, 3), ("node-3", 33, 4)]  # name, seed, simulated GPUs


@pytest.mark.integration
def test_central_fleet_rules_equal_the_sum_of_three_nodes(tmp_path: Path) -> None:
    prometheus = _tool("prometheus")
    assert EXPORTER.exists()
    with contextlib.ExitStack() as stack:
        # Three simulated nodes.
        targets: list[dict[str, Any]] = []
        exporter_urls: dict[str, str] = {}
        for name, seed, count in NODES:
            port = prom_procs.free_port()
            stack.enter_context(
                _process(
                    [
                        str(EXPORTER),
                        f"--web.listen-address=127.0.0.1:{port}",
                        "--source.gpu=simulated",
                        f"--source.gpu.simulated.seed={seed}",
                        f"--source.gpu.simulated.count={count}",
                        "--source.cpu=none",
                        "--sample.interval=500ms",
                    ],
                    tmp_path / f"{name}.log",
                )
            )
            targets.append({"targets": [f"127.0.0.1:{port}"], "labels": {"node": name}})
            exporter_urls[name] = f"http://127.0.0.1:{port}/metrics"
        for name, _seed, count in NODES:
            served = _wait_for(f"{name}'s GPUs", functools.partial(_count_gpus, exporter_urls[name]))
            assert served == count

        # Central Prometheus with the remote-write receiver and the fleet rules every second.
        rules = yaml.safe_load((FLEET / "fleet-rules.yml").read_text(encoding="utf-8"))
        for group in rules["groups"]:
            group["interval"] = "1s"
        (tmp_path / "fleet-rules.yml").write_text(yaml.safe_dump(rules), encoding="utf-8")
        central_config = {
            "global": {"evaluation_interval": "1s", "scrape_interval": "1s"},
            "rule_files": [str(tmp_path / "fleet-rules.yml")],
        }
        (tmp_path / "central.yml").write_text(yaml.safe_dump(central_config), encoding="utf-8")
        central_server = stack.enter_context(
            prom_procs.prometheus(
                tmp_path / "central.yml",
                tmp_path / "central",
                extra_args=["--web.enable-remote-write-receiver"],
            )
        )
        central = central_server.url

        # The rack's agent, from the shipped agent config with local targets and a 1 s pace.
        agent_port = prom_procs.free_port()
        agent_config = yaml.safe_load((FLEET / "prometheus-agent.yml").read_text(encoding="utf-8"))
        agent_config["global"].update(
            scrape_interval="1s",
            scrape_timeout="1s",
            external_labels={"datacenter": "dc-test", "rack": "rack-test"},
        )
        (tmp_path / "file_sd").mkdir()
        (tmp_path / "file_sd" / "nodes.yml").write_text(yaml.safe_dump(targets), encoding="utf-8")
        (remote,) = agent_config["remote_write"]
        remote["url"] = f"{central}/api/v1/write"
        remote["queue_config"]["batch_send_deadline"] = "1s"
        (tmp_path / "agent.yml").write_text(yaml.safe_dump(agent_config), encoding="utf-8")
        agent = stack.enter_context(
            _process(
                [
                    prometheus,
                    "--enable-feature=agent",
                    f"--config.file={tmp_path / 'agent.yml'}",
                    f"--storage.agent.path={tmp_path / 'agent'}",
                    f"--web.listen-address=127.0.0.1:{agent_port}",
                ],
                tmp_path / "agent.log",
            )
        )

        # All three nodes arrive at the central store through remote write, with the agent's labels.
        up = _wait_for(
            "three exporters up at central",
            lambda: _scalar(central, 'rack:footprint_exporters_up:sum{rack="rack-test"}') == 3 or None,
        )
        assert up is True
        # Every GPU, not just some: each series is remote-written on its own (the agent shards by
        # series), so the nodes' `up` above can arrive before some of their footprint_gpu_info.
        every_gpu = sum(count for _name, _seed, count in NODES)
        gpus = _wait_for(
            "all GPUs at central",
            lambda: (
                every_gpu if _scalar(central, "datacenter:footprint_gpu_count:sum") == every_gpu else None
            ),
        )
        per_node = {
            r["metric"]["node"]: float(r["value"][1])
            for r in _query(central, "count by (node) (footprint_gpu_info)")
        }
        # What each exporter serves itself, read directly, against what arrived at the central store.
        direct = {name: float(_count_gpus(exporter_urls[name]) or 0) for name, _s, _c in NODES}
        assert per_node == direct == {"node-1": 2.0, "node-2": 3.0, "node-3": 4.0}
        assert gpus == sum(direct.values()) == 9
        (rack,) = _query(central, "rack:footprint_gpu_power_watts:sum")
        assert rack["metric"] == {
            "__name__": "rack:footprint_gpu_power_watts:sum",
            "datacenter": "dc-test",
            "rack": "rack-test",
        }
        # Wait for the energy rate to cover a few samples of every node: until the central store holds
        # at least three of every GPU's energy counter (scrapes and remote-write batches are their own
        # schedule; a fixed sleep could leave a series with one sample and so no rate).
        _wait_for(
            "three samples of every GPU's energy at central",
            lambda: (
                _scalar(central, "count(count_over_time(footprint_gpu_energy_joules_total[5m]) >= 3)") == 9
                or None
            ),
        )

        # Stop the agent so that every sample it scraped has been delivered (it flushes on SIGTERM);
        # rule evaluations after that saw exactly the data a query sees, so both sides must agree.
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=90) == 0
        stopped = time.time()

        def evaluation_after_stop() -> tuple[float, float] | None:
            (series,) = _query(central, "rack:footprint_gpu_power_watts:sum[30s]")
            later = [(float(t), float(v)) for t, v in series["values"] if float(t) > stopped + 1.0]
            return later[-1] if later else None

        at, fleet_power = _wait_for("a rule evaluation after the agent stopped", evaluation_after_stop)
        nodes_power = _query(central, "footprint_gpu_power_watts", at)
        assert {r["metric"]["node"] for r in nodes_power} == {"node-1", "node-2", "node-3"}
        assert len(nodes_power) == 9
        expected = sum(float(r["value"][1]) for r in nodes_power)
        assert expected > 0
        assert fleet_power == pytest.approx(expected, rel=1e-9)

        fleet_rate = _scalar(central, "rack:footprint_gpu_energy_joules:rate5m", at)
        node_rates = _query(central, "rate(footprint_gpu_energy_joules_total[5m])", at)
        assert len(node_rates) == 9
        assert fleet_rate is not None and fleet_rate > 0
        assert fleet_rate == pytest.approx(sum(float(r["value"][1]) for r in node_rates), rel=1e-9)

        datacenter_power = _scalar(central, "datacenter:footprint_gpu_power_watts:sum", at)
        assert datacenter_power == pytest.approx(fleet_power, rel=1e-12)
