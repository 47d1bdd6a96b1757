"""The Prometheus side as code: configs checked by promtool/amtool, every rule unit-tested by promtool."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
TEST_FILES = sorted((PROM / "tests").glob("*.test.yml"))
# budgets.rules.yml ships empty (no live budgets); the budget rules are tested as rendered from the
# scenario budgets in prometheus/tests/.
BUDGET_RULE_FILES = sorted((PROM / "tests").glob("budgets.*.rules.yml"))
ALL_RULE_FILES = RULE_FILES + BUDGET_RULE_FILES
ALERT_ANNOTATIONS = {"summary", "description", "runbook_url"}
RUNBOOK = "https://github.com/ai-footprint/ai-footprint-exporter/blob/main/docs/runbook.md#runbook-"


def run(*cmd: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=240, check=False)


def rules_of(path: Path) -> list[dict[str, object]]:
    return [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]


def test_the_five_rule_files_exist() -> None:
    assert [p.name for p in RULE_FILES] == [
        "alerts.yml",
        "budgets.rules.yml",
        "deployment.rules.yml",
        "footprint.rules.yml",
        "inference.rules.yml",
    ]


def test_promtool_check_config_resolves_every_rule_file() -> None:
    result = run("promtool", "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in result.stdout + result.stderr
    listed = yaml.safe_load((PROM / "prometheus.yml").read_text())["rule_files"]
    assert sorted(PROM / p for p in listed) == RULE_FILES


@pytest.mark.parametrize("path", ALL_RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path: Path) -> None:
    result = run("promtool", "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules_of(path))} rules found" in result.stdout


def test_amtool_check_config() -> None:
    result = run("amtool", "check-config", "alertmanager.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 inhibit rules" in result.stdout and "3 receivers" in result.stdout


def test_alertmanager_routes_by_severity_and_inhibits_burn_rate_when_exhausted() -> None:
    am = yaml.safe_load((PROM / "alertmanager.yml").read_text())
    assert "budget" in am["route"]["group_by"] and "alertname" in am["route"]["group_by"]
    routes = {tuple(r["matchers"]): r["receiver"] for r in am["route"]["routes"]}
    assert routes[('severity="critical"',)] == "footprint-critical"
    assert routes[('severity="warning"',)] == "footprint-warnings"
    inhibit = am["inhibit_rules"][0]
    assert inhibit["source_matchers"] == ['alertname="CarbonBudgetExhausted"']
    assert inhibit["target_matchers"] == ['alertname="CarbonBudgetBurnRateHigh"']
    assert inhibit["equal"] == ["budget"]
    assert am["inhibit_rules"][1]["source_matchers"] == ['alertname="CarbonBudgetProjectedOverrun"']
    for receiver in am["receivers"]:
        for hook in receiver["webhook_configs"]:
            assert hook["url"].startswith("http://127.0.0.1:")


@pytest.mark.parametrize(
    ("alertname", "receiver"),
    [
        ("CarbonBudgetProjectedOverrun", "footprint-critical"),  # the page
        ("CarbonBudgetExhausted", "footprint-warnings"),  # a ticket
        ("CarbonBudgetBurnRateHigh", "footprint-warnings"),
        ("CarbonBudgetCoverageLow", "footprint-warnings"),
    ],
)
def test_amtool_routes_budget_alerts_by_the_severity_they_are_rendered_with(
    alertname: str, receiver: str
) -> None:
    rules = {r["alert"]: r for r in rules_of(PROM / "tests" / "budgets.scenarios.rules.yml") if "alert" in r}
    severity = rules[alertname]["labels"]["severity"]  # type: ignore[index]
    result = run(
        "amtool",
        "config",
        "routes",
        "test",
        "--config.file=alertmanager.yml",
        f"alertname={alertname}",
        f"severity={severity}",
        "budget=x",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == receiver


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(path: Path) -> None:
    result = run("promtool", "test", "rules", path.name, cwd=path.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_recording_rule_and_alert_has_a_promtool_test() -> None:
    tested = "\n".join(p.read_text() for p in TEST_FILES)
    records = {str(r["record"]) for p in ALL_RULE_FILES for r in rules_of(p) if "record" in r}
    alerts = {str(r["alert"]) for p in ALL_RULE_FILES for r in rules_of(p) if "alert" in r}
    assert len(records) > 80 and len(alerts) == 20
    assert sorted(r for r in records if r not in tested) == []
    fired = set(re.findall(r"alertname: (\w+)", tested))
    assert sorted(alerts - fired) == []


def test_every_alert_has_severity_for_and_annotations_with_a_runbook_anchor() -> None:
    for path in ALL_RULE_FILES:
        for rule in rules_of(path):
            if "alert" not in rule:
                continue
            name = str(rule["alert"])
            labels = rule["labels"]
            annotations = rule["annotations"]
            assert isinstance(labels, dict) and isinstance(annotations, dict)
            assert labels["severity"] in ("critical", "warning", "info"), name
            assert "for" in rule, name
            assert set(annotations) >= ALERT_ANNOTATIONS, name
            assert annotations["runbook_url"] == RUNBOOK + name.lower(), name


def test_recording_rules_follow_level_metric_operation_naming() -> None:
    for path in ALL_RULE_FILES:
        for rule in rules_of(path):
            if "record" in rule:
                level, metric, *ops = str(rule["record"]).split(":")
                assert level and metric.startswith(("footprint_", "budget_")) and len(ops) <= 1, rule[
                    "record"
                ]


def test_integrating_rules_live_in_a_group_pinned_to_the_step_they_multiply_by() -> None:
    groups = yaml.safe_load((PROM / "rules" / "footprint.rules.yml").read_text())["groups"]
    for group in groups:
        for rule in group["rules"]:
            if "sum_over_time" in rule["expr"]:
                assert group["interval"] == "1m" and rule["expr"].endswith("* 60"), rule["record"]


def test_runbook_has_an_entry_for_every_alert() -> None:
    text = (ROOT / "docs" / "runbook.md").read_text()
    alerts = {str(r["alert"]) for p in ALL_RULE_FILES for r in rules_of(p) if "alert" in r}
    for name in alerts:
        assert f"## {name}" in text, name
        assert f'id="runbook-{name.lower()}"' in text, name
