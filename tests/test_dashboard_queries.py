"""Every query of every dashboard panel, run against a real Prometheus that scraped the simulated fleet."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from carbon_servers import FakeApi, Reply, uk_fw24h, uk_intensity

from exporter import budgets
from exporter.sources.simulated import SimulatedGpuSource
from exporter.workload import parse_cgroup
from tests.exporter_proc import ExporterProcess, start_exporter
from tests.fake_inference import FakeInferenceServer, Traffic
from tests.fake_redfish import FakeBmc, Profile, dmtf_modern
from tests.prom_procs import prometheus

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "grafana" / "dashboards"
RULES = ROOT / "prometheus" / "rules"
# What Grafana would put in for a 1 s scrape interval and a dashboard range, roughly.
RATE_INTERVAL = "15s"
RANGE = "1h"
ALL = ".*"  # the allValue of every multi-value variable
CLUSTER = "test-cluster"
EXAMPLE_BUDGETS = ROOT / "prometheus" / "budgets.example.yml"
# kube-prometheus' always-firing Watchdog and another team's alert: the dashboards must not count them.
FOREIGN_ALERTS = {
    "groups": [
        {
            "name": "others",
            "rules": [
                {"alert": "Watchdog", "expr": "vector(1)", "labels": {"severity": "none"}},
                {"alert": "KubePodCrashLooping", "expr": "vector(1)", "labels": {"severity": "warning"}},
            ],
        }
    ]
}

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Fleet:
    seed: int
    pod: str  # a simulated pod that holds its GPU for the whole test: the fake vLLM server's pod
    namespace: str


def seed_with_every_identity() -> Fleet:
    """A simulation seed whose first processes include a Kubernetes pod, a Slurm job and a plain process,
    and one of whose pods holds its GPU for the first 300 s (long enough for every query to have data).

    Each value of the simulated fleet is a function of the seed and time, so this is found, not hoped for.
    """
    for seed in range(500):
        source = SimulatedGpuSource(4, seed)
        first = source.read(0.0)
        cgroups = [p.cgroup or "" for r in first for p in r.processes or ()]
        if not (any("slurm" in c for c in cgroups) and any("kubepods" in c for c in cgroups)):
            continue
        held = {
            (r.index, p.cgroup) for r in first for p in r.processes or () if "kubepods" in (p.cgroup or "")
        }
        for t in range(30, 301, 30):
            held &= {(r.index, p.cgroup) for r in source.read(float(t)) for p in r.processes or ()}
        for _, cgroup in sorted(held, key=str):
            name, namespace = source.pods()[parse_cgroup(cgroup or "").pod_uid]
            return Fleet(seed, name, namespace)
    raise AssertionError("no simulation seed starts with both a pod and a Slurm job and keeps a pod 300 s")


def uk_forecast_points() -> list[tuple[str, str, float]]:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    fmt = "%Y-%m-%dT%H:%MZ"
    periods = [
        (start + timedelta(minutes=30 * k), start + timedelta(minutes=30 * (k + 1))) for k in range(48)
    ]
    # Half hour 9 is the greenest: 160 g/kWh.
    return [
        (a.strftime(fmt), b.strftime(fmt), 160.0 if k == 9 else 200.0 + k) for k, (a, b) in enumerate(periods)
    ]


@dataclass
class Stack:
    prometheus: str  # base URL
    instance: str  # the exporter's instance label
    inference_pod: str  # namespace/pod of the fake vLLM server


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("dashboard-queries")
    api = FakeApi()
    # A BMC reading 8 kW for the node: more than four simulated H100s and the CPUs, so the node panels
    # have an unmetered part to show.
    bmc = FakeBmc(tmp, Profile(base_w=8000.0))
    dmtf_modern(bmc)
    exporter: ExporterProcess | None = None
    fleet = seed_with_every_identity()
    # An inference server in one of the simulated pods, for the inference efficiency panels.
    vllm = FakeInferenceServer("vllm", Traffic("meta-llama/Llama-3.1-8B-Instruct", 4.0, 800, 200))
    try:
        api.script("/intensity", Reply(body=uk_intensity(forecast=210, actual=None, start=time.time())))
        api.script("/intensity/*", Reply(body=uk_fw24h(uk_forecast_points())))
        # ukgrid (average, direct basis, with forecast), a static marginal signal, a WUE and a market
        # block: every carbon panel has data. Electricity Maps configured on the other basis is skipped
        # (never asked), which the provider-error panel shows.
        config = {
            "carbon": {
                "zone": "GB",
                "basis": "direct",
                "pue": 1.2,
                "wue": 1.8,
                "providers": [
                    {
                        "type": "electricitymaps",
                        "url": api.url,
                        "token_env": "UNUSED_EM_TOKEN",
                        "emission_factor_type": "lifecycle",
                    },
                    {"type": "ukgrid", "url": api.url, "refresh": "1m"},
                    {"type": "static", "grams_per_kwh": 420, "signal": "marginal"},
                ],
                "market": {
                    "instruments": [{"name": "wind-ppa", "share": 0.6, "grams_per_kwh": 0}],
                    "residual_grams_per_kwh": 400,
                },
            }
        }
        (tmp / "exporter.yml").write_text(yaml.safe_dump(config))
        exporter = start_exporter(
            [
                "--source.gpu=simulated",
                f"--source.gpu.simulated.seed={fleet.seed}",
                "--source.cpu=estimated",
                # Idle power configured, not learned: the learner calls all of a steady load idle (on
                # a quiet or a saturated machine), and then no process is charged CPU energy and the
                # CPU-by-user panel has no series to show.
                "--attribution.cpu-package-idle-watts=0",
                "--sample.interval=250ms",
                f"--config.file={tmp / 'exporter.yml'}",
                f"--state.file={tmp / 'state.json'}",
                "--state.interval=1s",
                "--source.node=redfish",
                f"--source.node.redfish.url={bmc.url}",
                f"--source.node.redfish.ca-file={bmc.ca_file}",
                "--source.node.interval=1s",
            ],
            env={"FOOTPRINT_REDFISH_USERNAME": bmc.username, "FOOTPRINT_REDFISH_PASSWORD": bmc.password},
            wait=60,
        )

        # Our recording rules, evaluated every second instead of every minute so the test need not wait;
        # budgets.rules.yml ships empty, so the example budgets stand in for it, projected after 2 s.
        examples = yaml.safe_load(EXAMPLE_BUDGETS.read_text())
        examples["settings"] = {"evaluation_interval": "1s", "projection_min_data": "2s"}
        budget_rules = budgets.render_rules(budgets.parse_budgets(examples))
        rule_files = []
        for name, rules in [
            *((p.name, yaml.safe_load(p.read_text())) for p in sorted(RULES.glob("*.yml"))),
            ("budgets.rules.yml", budget_rules),
            ("others.yml", FOREIGN_ALERTS),
        ]:
            for group in rules.get("groups", []):
                group["interval"] = "1s"
            (tmp / name).write_text(yaml.safe_dump(rules))
            rule_files.append(str(tmp / name))
        prom_config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": rule_files,
            "scrape_configs": [
                {
                    "job_name": "footprint",
                    # As an external or target label would on a store several clusters write to.
                    "static_configs": [{"targets": [exporter.instance], "labels": {"cluster": CLUSTER}}],
                },
                {
                    # What a PodMonitor gives the server's series: its pod's namespace and name (and
                    # the cluster, as the store's external label would).
                    "job_name": "vllm",
                    "static_configs": [
                        {
                            "targets": [vllm.target],
                            "labels": {"namespace": fleet.namespace, "pod": fleet.pod, "cluster": CLUSTER},
                        }
                    ],
                },
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(prom_config))
        with prometheus(tmp / "prometheus.yml", tmp / "prom") as prom:
            yield Stack(prom.url, exporter.instance, f"{fleet.namespace}/{fleet.pod}")
    finally:
        if exporter is not None:
            exporter.stop()
        vllm.close()
        api.close()
        bmc.close()


def expand(expr: str, instance: str) -> str:
    values = {
        "cluster": ALL,
        "instance": instance,
        "gpu": ALL,
        "namespace": ALL,
        "zone": ALL,
        "__rate_interval": RATE_INTERVAL,
        "__range": RANGE,
        "__interval": "5s",
    }
    out = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values[m.group(1) or m.group(2)], expr)
    assert "$" not in out, out
    return out


def query(stack: Stack, expr: str, instant: bool) -> tuple[str | None, list[Any]]:
    """(error, result) of a query: instant at now, or a range over the last minute."""
    now = time.time()
    params: dict[str, str | float]
    if instant:
        params = {"query": expr, "time": now}
        r = requests.get(f"{stack.prometheus}/api/v1/query", params=params, timeout=30)
    else:
        params = {"query": expr, "start": now - 60, "end": now, "step": "2s"}
        r = requests.get(f"{stack.prometheus}/api/v1/query_range", params=params, timeout=30)
    body = r.json()
    if body.get("status") != "success":
        return f"{body.get('errorType')}: {body.get('error')}", []
    return None, body["data"]["result"]


def dashboard_queries() -> list[tuple[str, str, str, bool]]:
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dash = json.loads(path.read_text())
        for panel in dash["panels"]:
            for t in panel.get("targets", []):
                out.append((dash["title"], f"{panel['title']} [{t['refId']}]", t["expr"], bool(t["instant"])))
    return out


def test_expand_substitutes_every_variable() -> None:
    assert expand('rate(x{instance=~"$instance", gpu=~"${gpu}"}[$__rate_interval])', "h:1") == (
        'rate(x{instance=~"h:1", gpu=~".*"}[15s])'
    )


def test_every_panel_query_parses_and_returns_data(stack: Stack) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 60
    pending = {(d, p): (expand(e, stack.instance), instant) for d, p, e, instant in queries}
    errors: dict[tuple[str, str], str] = {}
    # Series appear as the exporter samples, Prometheus scrapes and the rules evaluate: retry
    # empty answers until a generous deadline, fail at once on a query Prometheus rejects.
    deadline = time.monotonic() + 150
    while pending and time.monotonic() < deadline:
        for key, (expr, instant) in list(pending.items()):
            error, result = query(stack, expr, instant)
            if error:
                errors[key] = f"{error}\n    {expr}"
                del pending[key]
            elif result and (instant or any(len(s["values"]) >= 2 for s in result)):
                del pending[key]
        if pending:
            time.sleep(2)
    report = [f"{d}: {p}: {msg}" for (d, p), msg in errors.items()]
    report += [f"{d}: {p}: returned no data\n    {expr}" for (d, p), (expr, _) in pending.items()]
    assert not report, "\n".join(report)


def test_variable_queries_find_the_exporter(stack: Stack) -> None:
    for path in sorted(DASHBOARDS.glob("*.json")):
        for var in json.loads(path.read_text())["templating"]["list"]:
            if var["type"] != "query":
                continue
            m = re.fullmatch(r"label_values\((.+), (\w+)\)", var["definition"])
            assert m, var["definition"]
            selector, label = expand(m.group(1), stack.instance), m.group(2)
            r = requests.get(
                f"{stack.prometheus}/api/v1/label/{label}/values", params={"match[]": selector}, timeout=30
            ).json()
            values = [v for v in r["data"] if v]
            assert values, f"{path.name}: variable {var['name']} has no values"
            if label == "instance":
                assert values == [stack.instance]
            if label == "gpu":
                assert sorted(values) == ["0", "1", "2", "3"]
            if label == "zone":
                assert values == ["GB"]
            if label == "cluster":
                assert values == [CLUSTER]


def test_the_checker_tells_empty_and_broken_queries_apart(stack: Stack) -> None:
    assert query(stack, 'footprint_gpu_power_watts{instance="nowhere:1"}', True) == (None, [])
    error, _ = query(stack, "sum(rate(footprint_gpu_energy_joules_total[15s])", True)
    assert error is not None and error.startswith("bad_data")


def panel_value(stack: Stack, dashboard: str, title: str) -> dict[str, float]:
    """The instant values of a panel's first query, keyed by the labels it keeps."""
    ((_, _, expr, _),) = [q for q in dashboard_queries() if q[0] == dashboard and q[1] == f"{title} [A]"]
    error, result = query(stack, expand(expr, stack.instance), True)
    assert error is None, error
    return {
        ",".join(f"{k}={v}" for k, v in sorted(s["metric"].items())): float(s["value"][1]) for s in result
    }


def test_carbon_panels_show_what_the_providers_said(stack: Stack) -> None:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    intensity = panel_value(stack, "Footprint / Carbon", "Intensity now")
    assert intensity == {"signal=average,zone=GB": 210.0, "signal=marginal,zone=GB": 420.0}
    assert panel_value(stack, "Footprint / Carbon", "Forecast minimum, next 24 h") == {
        "signal=average,zone=GB": 160.0
    }
    (begins,) = panel_value(stack, "Footprint / Carbon", "Forecast minimum begins").values()
    assert begins == (start + timedelta(minutes=270)).timestamp() * 1000  # milliseconds for Grafana
    (pue,) = panel_value(stack, "Footprint / Carbon", "PUE").values()
    assert pue == 1.2
    (water,) = panel_value(stack, "Footprint / Carbon", "Water").values()
    assert water > 0


def test_fleet_power_is_the_node_input_power_where_a_bmc_reads_it(stack: Stack) -> None:
    (total,) = panel_value(stack, "Footprint / Fleet overview", "Power now").values()
    assert total == 8000.0  # the fake BMC's reading, not GPU + CPU
    _, gpus = query(stack, f'sum(footprint_gpu_power_watts{{instance="{stack.instance}"}})', True)
    _, cpus = query(stack, f'sum(footprint_cpu_power_watts{{instance="{stack.instance}"}})', True)
    components = float(gpus[0]["value"][1]) + float(cpus[0]["value"][1])
    assert (
        4 * 60 < components < 4 * 700 + 2000
    )  # four simulated H100s between idle and their limit, plus CPUs
    # The node panel's unmetered part is what the components leave of the BMC's 8 kW.
    unmetered = panel_value(stack, "Footprint / Node and GPU", "Unmetered share of node energy")
    assert 0.5 < unmetered[f"instance={stack.instance}"] < 1.0


def test_inference_panels_join_the_fake_servers_pod(stack: Stack) -> None:
    namespace, pod = stack.inference_pod.split("/")
    deadline = time.monotonic() + 60
    while True:
        energy = panel_value(stack, "Footprint / Workloads", "Inference: energy per 1,000 generated tokens")
        if energy or time.monotonic() > deadline:
            break
        time.sleep(2)
    # One series, for the server's pod and model, joined with the simulated pod's GPU energy (its exact
    # value against a known truth is tests/test_inference.py's job).
    ((labels, joules),) = energy.items()
    assert labels == (
        f"cluster={CLUSTER},model_name=meta-llama/Llama-3.1-8B-Instruct,namespace={namespace},pod={pod}"
    )
    # The panel divides the pod's attributed GPU energy by its generated tokens over 5 minutes: at most
    # each GPU the pod held at its 700 W limit, over the token rate Prometheus sees for the server
    # (800 tokens/s once the window is full; less while the series is younger than the window).
    selector = f'namespace="{namespace}",pod="{pod}"'
    _, gpus = query(
        stack, f"count(count by (gpu) (footprint_process_gpu_energy_joules_total{{{selector}}}))", True
    )
    held = int(float(gpus[0]["value"][1]))
    _, tokens = query(stack, f"sum(rate(vllm:generation_tokens_total{{{selector}}}[5m]))", True)
    rate = float(tokens[0]["value"][1])
    assert 1 <= held <= 4 and 0 < rate <= 800 * 1.05
    assert 0 < joules < held * 700 / rate * 1000, (joules, held, rate)


def test_alerts_firing_counts_ours_only(stack: Stack) -> None:
    """Watchdog and another team's alert fire from the first evaluation; the panel leaves them out."""
    deadline = time.monotonic() + 60
    foreign: list[Any] = []
    while time.monotonic() < deadline and len(foreign) < 2:
        _, foreign = query(
            stack, 'ALERTS{alertstate="firing", alertname=~"Watchdog|KubePodCrashLooping"}', True
        )
        time.sleep(1)
    assert len(foreign) == 2
    _, ours = query(
        stack, 'count(ALERTS{alertstate="firing", alertname=~"Footprint.+|CarbonBudget.+"})', True
    )
    (shown,) = panel_value(stack, "Footprint / Fleet overview", "Alerts firing").values()
    assert shown == (float(ours[0]["value"][1]) if ours else 0.0)
    _, everything = query(stack, 'count(ALERTS{alertstate="firing"})', True)
    assert float(everything[0]["value"][1]) >= shown + 2
