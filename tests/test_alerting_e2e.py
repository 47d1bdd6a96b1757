"""End to end: exporter -> Prometheus (our rules, a tiny budget) -> Alertmanager (our routes) -> webhook."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import yaml

from exporter import budgets
from tests.exporter_proc import start_exporter
from tests.prom_procs import alertmanager, prometheus

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "prometheus"
DEADLINE_S = 90.0
T = TypeVar("T")

pytestmark = pytest.mark.integration


class Webhook:
    """A loopback HTTP server that records every JSON body POSTed to it, with the path."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        lock = threading.Lock()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def alerts(self) -> list[tuple[str, dict[str, Any]]]:
        """(path, alert) for every alert of every notification so far."""
        return [(path, alert) for path, body in list(self.received) for alert in body.get("alerts", [])]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    hook.thread.start()
    try:
        yield hook
    finally:
        hook.server.shutdown()
        hook.server.server_close()


@pytest.fixture
def exporter(tmp_path: Path) -> Iterator[str]:
    """The real exporter with the simulated fleet and the embedded carbon table; yields its host:port."""
    config = tmp_path / "exporter.yml"
    config.write_text("carbon:\n  zone: DE\n")
    proc = start_exporter(["--source.gpu=simulated", "--sample.interval=250ms", "--config.file", str(config)])
    try:
        yield proc.instance
    finally:
        proc.stop()


def wait_for(
    probe: Callable[[], T | None],
    timeout: float,
    why: Callable[[], str],
    proc: subprocess.Popen[bytes] | None = None,
) -> T:
    """Call PROBE until it returns something other than None/False; fail with WHY() after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process exited with {proc.returncode}: {why()}")
        try:
            got = probe()
        except (requests.RequestException, KeyError, IndexError):
            got = None
        if got:
            return got
        time.sleep(0.5)
    pytest.fail(why())


def test_budget_alerts_fire_in_prometheus_and_reach_the_webhook_by_severity(
    tmp_path: Path, exporter: str, webhook: Webhook
) -> None:
    # Four simulated GPUs emit ~0.1 g/s. A 0.5 g calendar-month budget is gone within seconds (a ticket);
    # a 1 kg rolling week is nowhere near used but, at this pace, its window holds ~8 kg a day from now
    # (the page). Evaluated every second, projected after 2 s of data, short pending periods.
    budget_file = {
        "settings": {
            "evaluation_interval": "1s",
            "exhausted_for": "2s",
            "projection_for": "2s",
            "projection_min_data": "2s",
            "burn_rate_for": "2s",
        },
        "budgets": [
            {
                "name": "e2e-tiny",
                "description": "the test fleet",
                "selector": "{}",
                "period": "month",
                "grams": 0.5,
                "labels": {"owner": "e2e"},
            },
            {"name": "e2e-week", "selector": "{}", "period": "7d", "grams": 1000},
        ],
    }
    rules_text, _ = budgets.render_files(budgets.parse_budgets(budget_file), "budgets.yml")
    (tmp_path / "budgets.rules.yml").write_text(rules_text)

    # Alertmanager: the committed routing and inhibition, every receiver pointed at our webhook.
    am_cfg = yaml.safe_load((PROM / "alertmanager.yml").read_text())
    am_cfg["route"]["group_wait"] = "1s"
    am_cfg["route"]["group_interval"] = "2s"
    for receiver in am_cfg["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = webhook.url + "/" + receiver["name"]
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(am_cfg))

    with alertmanager(tmp_path / "alertmanager.yml", tmp_path / "am") as am:
        # Prometheus: the committed config, rule files and relabelling, at 1 s intervals on loopback.
        prom_cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
        prom_cfg["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
        prom_cfg["rule_files"] = [
            str(PROM / "rules" / "footprint.rules.yml"),
            str(PROM / "rules" / "alerts.yml"),
            str(tmp_path / "budgets.rules.yml"),
        ]
        prom_cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{am.port}"]
        job = next(j for j in prom_cfg["scrape_configs"] if j["job_name"] == "footprint")
        job["static_configs"][0]["targets"] = [exporter]
        prom_cfg["scrape_configs"] = [job]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prom_cfg))

        with prometheus(tmp_path / "prometheus.yml", tmp_path / "prom") as prom:
            start = time.monotonic()

            def firing(alertname: str) -> dict[str, Any] | None:
                for alert in prom.alerts():
                    if alert["labels"]["alertname"] == alertname and alert["state"] == "firing":
                        return alert
                return None

            exhausted = wait_for(
                lambda: firing("CarbonBudgetExhausted"),
                DEADLINE_S,
                lambda: f"no CarbonBudgetExhausted in Prometheus: {prom.alerts()}\n{prom.log_tail()}",
            )
            assert exhausted["labels"] == {
                "alertname": "CarbonBudgetExhausted",
                "budget": "e2e-tiny",
                "period": "month",
                "scope": "{}",
                "severity": "warning",
                "owner": "e2e",
            }
            assert float(exhausted["value"]) > 1.0
            assert exhausted["annotations"]["summary"].startswith("Carbon budget e2e-tiny is exhausted: ")
            assert (
                "Scope {} (budget e2e-tiny, period month) has emitted "
                in exhausted["annotations"]["description"]
            )
            projected = wait_for(
                lambda: firing("CarbonBudgetProjectedOverrun"),
                DEADLINE_S,
                lambda: f"no CarbonBudgetProjectedOverrun: {prom.alerts()}",
            )
            assert projected["labels"]["budget"] == "e2e-week"  # the exhausted budget no longer pages
            assert projected["labels"]["severity"] == "critical"
            assert float(projected["value"]) > 1

            def delivered(alertname: str) -> tuple[str, dict[str, Any]] | None:
                for path, alert in webhook.alerts():
                    if alert["labels"].get("alertname") == alertname and alert["status"] == "firing":
                        return path, alert
                return None

            path, alert = wait_for(
                lambda: delivered("CarbonBudgetProjectedOverrun"),
                DEADLINE_S - (time.monotonic() - start),
                lambda: f"webhook got {webhook.received}\n{am.log_tail()}",
            )
            assert path == "/footprint-critical"  # the page
            assert alert["annotations"]["runbook_url"].endswith("#runbook-carbonbudgetprojectedoverrun")
            path, alert = wait_for(
                lambda: delivered("CarbonBudgetExhausted"),
                DEADLINE_S - (time.monotonic() - start),
                lambda: f"webhook got {webhook.received}\n{am.log_tail()}",
            )
            assert path == "/footprint-warnings"  # a ticket
            assert alert["labels"]["budget"] == "e2e-tiny"
            assert time.monotonic() - start < DEADLINE_S

            # The scrape relabelling set node from the address; the power recording rules have data.
            up = prom.query('up{job="footprint"}')
            assert [(r["metric"]["node"], r["value"][1]) for r in up] == [("127.0.0.1", "1")]
            power = prom.query("instance:footprint_gpu_power_watts:sum")
            assert len(power) == 1 and float(power[0]["value"][1]) > 0
            used = prom.query('footprint:budget_usage:ratio{budget="e2e-tiny"}')
            assert float(used[0]["value"][1]) > 1.0
