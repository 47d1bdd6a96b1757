"""Carbon budgets at scale: what N budgets render to (bytes, rules) and how long Prometheus evaluates them."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
import yaml

from benchmarks.stats import median, percentile
from exporter import budgets
from tests.prom_procs import prometheus

ROOT = Path(__file__).resolve().parent.parent
# kubectl apply keeps the whole object in an annotation, which Kubernetes caps at 256 KiB.
PROMETHEUSRULE_LIMIT = 262144
# The synthetic store the rules evaluate on: clusters x nodes, namespaces, users, Slurm jobs, pods.
CLUSTERS, NODES_PER_CLUSTER, NAMESPACES, TEAMS, USERS, JOBS, PODS = 4, 250, 500, 20, 200, 100, 1000
PERIODS = ("month", "quarter", "year", "7d", "30d", "1d")


@dataclass(frozen=True)
class BudgetScaleResult:
    budgets: int
    # "fresh": every budget is younger than its period, so all of them raise CarbonBudgetCoverageLow and
    # Prometheus expands 500 alerts' templates at each evaluation; "steady": no alert is active.
    state: str
    rules: int  # in the rendered budgets rules file
    rules_bytes: int
    joined: int  # budgets whose scope is a join against a recorded level (one rule each)
    spec_rules: int  # every rule of prometheus/rules plus these: what the PrometheusRule carries
    spec_bytes: int
    input_series: int
    evaluations: int
    eval_ms: tuple[float, float]  # footprint-budgets group, median / p99 (Prometheus' evaluationTime)
    checkpoint_ms: tuple[float, float]
    # Prometheus' CPU time per evaluation beyond the same Prometheus scraping the same data without the
    # rules: wall time above includes waiting for a core on a busy machine, this does not.
    cpu_ms: float


def synthetic_budgets(n: int, steady: bool = False) -> dict[str, Any]:
    """N budgets of every kind of scope the renderer knows, over every kind of period."""
    out = []
    for i in range(n):
        kind = i % 20
        if i == 0:
            selector = "{}"
        elif kind < 7:
            selector = f'{{namespace="ns-{i % NAMESPACES}"}}'
        elif kind < 9:
            selector = f'{{cluster="c{i % CLUSTERS}", namespace="ns-{i % NAMESPACES}"}}'
        elif kind < 11:
            selector = f'{{label_team="team-{i % TEAMS}"}}'
        elif kind < 13:
            selector = f'{{user="user-{i % USERS}"}}'
        elif kind == 13:
            selector = f'{{slurm_job_id="{i % JOBS}"}}'
        elif kind == 14:
            selector = f'{{node="node-{i % (CLUSTERS * NODES_PER_CLUSTER)}"}}'
        elif kind == 15:
            selector = f'{{cluster="c{i % CLUSTERS}"}}'
        elif kind == 16:
            selector = f'{{namespace="ns-{i % NAMESPACES}", pod="pod-{i % PODS}"}}'
        elif kind < 19:
            selector = f'{{namespace=~"ns-{i % 50}.*"}}'  # a rate rule of its own
        else:
            selector = f'{{gpu="0", node="node-{i % 100}"}}'  # raw counters
        out.append(
            {
                "name": f"budget-{i}",
                "selector": selector,
                "period": PERIODS[i % len(PERIODS)],
                "grams": 1_000_000 + i,
            }
        )
    settings: dict[str, Any] = {"evaluation_interval": "1s"}
    if steady:
        settings["coverage_threshold"] = 1e-9  # no budget is under-covered: no alert instance is active
    return {"settings": settings, "budgets": out}


def exposition() -> tuple[str, int]:
    """The recorded levels and scrape health of a fleet, as one scrape body (honour_labels keeps them)."""
    lines = []
    for c in range(CLUSTERS):
        for n in range(NODES_PER_CLUSTER):
            node = f"node-{c * NODES_PER_CLUSTER + n}"
            lines.append(
                f'instance:footprint_emissions_grams:rate5m{{cluster="c{c}",instance="{node}:9877",'
                f'node="{node}"}} {0.01 + n / 1e4}'
            )
            lines.append(f'up{{job="footprint-exporter",cluster="c{c}",instance="{node}:9877"}} 1')
    for i in range(NAMESPACES):
        c = i % CLUSTERS
        lines.append(
            f'namespace:footprint_process_emissions_grams:rate5m{{cluster="c{c}",namespace="ns-{i}"}} 0.02'
        )
        lines.append(
            f'kube_namespace_labels{{cluster="c{c}",job="kube-state-metrics",namespace="ns-{i}",'
            f'label_team="team-{i % TEAMS}"}} 1'
        )
    for i in range(PODS):
        lines.append(
            f'namespace_pod:footprint_process_emissions_grams:rate5m{{cluster="c{i % CLUSTERS}",'
            f'namespace="ns-{i % NAMESPACES}",pod="pod-{i}"}} 0.01'
        )
    for i in range(USERS):
        lines.append(
            f'user:footprint_process_emissions_grams:rate5m{{cluster="c{i % CLUSTERS}",user="user-{i}"}} 0.05'
        )
    for i in range(JOBS):
        lines.append(
            f'slurm_job_id:footprint_process_emissions_grams:rate5m{{cluster="c{i % CLUSTERS}",'
            f'slurm_job_id="{i}"}} 0.1'
        )
    lines.append("fleet:footprint_emissions_grams:rate5m 30")
    return "\n".join(lines) + "\n", len(lines)


def _serve(body: bytes) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _all_groups(budget_rules: dict[str, Any]) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in sorted((ROOT / "prometheus" / "rules").glob("*.yml")):
        if path.name != "budgets.rules.yml":
            groups += list(yaml.safe_load(path.read_text())["groups"])
    return groups + list(budget_rules["groups"])


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_per_second(work: Path, config: dict[str, Any], seconds: float) -> float:
    """CPU seconds per wall second of a Prometheus with CONFIG, over SECONDS after a warm-up."""
    (work / "idle.yml").write_text(yaml.safe_dump(config))
    with prometheus(work / "idle.yml", work / "idle") as prom:
        time.sleep(10)
        start, cpu = time.monotonic(), _cpu_s(prom.proc.pid)
        time.sleep(seconds)
        return (_cpu_s(prom.proc.pid) - cpu) / (time.monotonic() - start)


def measure(n: int, evaluations: int, steady: bool = False) -> BudgetScaleResult:
    bf = budgets.parse_budgets(synthetic_budgets(n, steady))
    rules_doc = budgets.render_rules(bf)
    rules_text = budgets.dump(rules_doc, "synthetic")
    all_groups = _all_groups(rules_doc)
    spec = yaml.safe_dump({"spec": {"groups": all_groups}}, sort_keys=False, width=110)
    body, series = exposition()
    server = _serve(body.encode())
    try:
        with tempfile.TemporaryDirectory(prefix="budgets-bench-") as tmp:
            work = Path(tmp)
            (work / "budgets.rules.yml").write_text(rules_text)
            config = {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(work / "budgets.rules.yml")],
                "scrape_configs": [
                    {
                        "job_name": "levels",
                        "honor_labels": True,
                        "static_configs": [{"targets": [f"127.0.0.1:{server.server_address[1]}"]}],
                    }
                ],
            }
            # Checkpoints every second here (hourly in production) so that their lookups have samples.
            for group in rules_doc["groups"]:
                group["interval"] = "1s"
            (work / "budgets.rules.yml").write_text(budgets.dump(rules_doc, "synthetic"))
            (work / "prometheus.yml").write_text(yaml.safe_dump(config))
            times: dict[str, dict[str, float]] = {budgets.RULE_GROUP: {}, budgets.CHECKPOINT_GROUP: {}}
            with prometheus(work / "prometheus.yml", work / "prom") as prom:
                deadline = time.monotonic() + evaluations * 3 + 60
                measured_from = time.monotonic() + 10
                cpu_start: tuple[float, float] | None = None
                while time.monotonic() < deadline and len(times[budgets.RULE_GROUP]) < evaluations:
                    if cpu_start is None and time.monotonic() >= measured_from:
                        cpu_start = (time.monotonic(), _cpu_s(prom.proc.pid))
                    answer = requests.get(f"{prom.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
                    for group in answer:
                        if group["name"] in times and group.get("lastEvaluation", "").startswith("2"):
                            times[group["name"]][group["lastEvaluation"]] = group["evaluationTime"] * 1000
                    time.sleep(0.5)
                assert cpu_start is not None, "too few evaluations to measure CPU"
                with_rules = (_cpu_s(prom.proc.pid) - cpu_start[1]) / (time.monotonic() - cpu_start[0])
                health = requests.get(f"{prom.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
                errors = [r["lastError"] for g in health for r in g["rules"] if r.get("lastError")]
                if errors:
                    raise RuntimeError(f"budget rules failed to evaluate: {errors[0]}")
            without_rules = _cpu_per_second(work, {**config, "rule_files": []}, 20)
    finally:
        server.shutdown()
        server.server_close()
    main_ms = list(times[budgets.RULE_GROUP].values())
    cp_ms = list(times[budgets.CHECKPOINT_GROUP].values()) or [0.0]
    # The first evaluations run before the state series exist; keep the settled ones.
    settled = main_ms[len(main_ms) // 4 :] or main_ms
    return BudgetScaleResult(
        budgets=n,
        state="steady" if steady else "fresh",
        rules=sum(len(g["rules"]) for g in rules_doc["groups"]),
        rules_bytes=len(rules_text.encode()),
        joined=sum(1 for b in bf.budgets if b.scope.joined),
        spec_rules=sum(len(g["rules"]) for g in all_groups),
        spec_bytes=len(spec.encode()),
        input_series=series,
        evaluations=len(main_ms),
        eval_ms=(median(settled), percentile(settled, 99)),
        checkpoint_ms=(median(cp_ms), percentile(cp_ms, 99)),
        # Both groups run every second: the extra CPU per second is the CPU of one evaluation of each.
        cpu_ms=max(0.0, with_rules - without_rules) * 1000,
    )


def run(quick: bool) -> list[BudgetScaleResult]:
    evaluations = 20 if quick else 90
    return [
        measure(50, evaluations),
        measure(500, evaluations),
        measure(500, evaluations, steady=True),
    ]
