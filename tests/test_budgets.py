"""Tests of the carbon budget renderer: validation, the burn-rate math, both outputs, staleness, the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import budgets
from exporter.budgets import (
    TIERS,
    Matcher,
    burn_threshold,
    emissions_metrics,
    format_grams,
    parse_budgets,
    parse_selector,
    render_grafana,
    render_rules,
)
from exporter.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def one(**over: Any) -> dict[str, Any]:
    budget = {"name": "ml", "selector": '{namespace="ml-team"}', "period": "30d", "grams": 500000}
    budget.update(over)
    return {"budgets": [budget]}


def rules_by(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for rule in doc["groups"][0]["rules"]:
        out.setdefault(rule.get("record") or rule["alert"], []).append(rule)
    return out


# ------------------------------------------------------------------------------------------- selectors


def test_parse_selector_reads_every_operator_and_escapes() -> None:
    got = parse_selector(r'{namespace="ml-team", user!="bob", pod=~"train-.*", comm!~"a\"b"}')
    assert got == (
        Matcher("namespace", "=", "ml-team"),
        Matcher("user", "!=", "bob"),
        Matcher("pod", "=~", "train-.*"),
        Matcher("comm", "!~", 'a"b'),
    )
    assert got[3].promql() == r'comm!~"a\"b"'
    assert parse_selector("{}") == ()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('namespace="x"', "in braces"),
        ("{namespace=x}", "cannot parse"),
        ('{__name__="up"}', "__name__"),
        ('{pod=~"("}', "bad regular expression"),
        ('{a="1", a="2"}', "repeats"),
    ],
)
def test_parse_selector_rejects(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_selector(text, "budgets[0] (x).selector")
    assert err.value.key == "budgets[0] (x).selector"
    assert problem in err.value.problem


def test_scope_picks_the_emissions_metrics() -> None:
    assert emissions_metrics(()) == (
        "footprint_gpu_emissions_grams_total",
        "footprint_cpu_emissions_grams_total",
        "footprint_node_unmetered_emissions_grams_total",
    )
    assert emissions_metrics(parse_selector('{node="a"}')) == emissions_metrics(())
    assert emissions_metrics(parse_selector('{user="alice"}')) == (
        "footprint_process_gpu_emissions_grams_total",
        "footprint_process_cpu_emissions_grams_total",
    )
    assert emissions_metrics(parse_selector('{user="alice", gpu="0"}')) == (
        "footprint_process_gpu_emissions_grams_total",
    )
    assert emissions_metrics(parse_selector('{uuid="GPU-1"}')) == ("footprint_gpu_emissions_grams_total",)
    assert emissions_metrics(parse_selector('{package="package-0"}')) == (
        "footprint_cpu_emissions_grams_total",
    )
    with pytest.raises(ValueError, match="both GPU labels"):
        emissions_metrics(parse_selector('{gpu="0", package="package-0"}'))


# ------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        ([], "budgets.yml", "mapping"),
        ({"budget": []}, "budget", "unknown key"),
        ({"budgets": [{"selector": "{}"}]}, "budgets[0].name", "letters"),
        (one(grams=0), "budgets[0] (ml).grams", "positive"),
        (one(grams="lots"), "budgets[0] (ml).grams", "positive"),
        (one(grams=True), "budgets[0] (ml).grams", "positive"),
        (one(grams=float("inf")), "budgets[0] (ml).grams", "positive"),
        (one(period="30 days"), "budgets[0] (ml).period", "not a duration"),
        (one(period="1h"), "budgets[0] (ml).period", "between 1d and 366d"),
        (one(period="400d"), "budgets[0] (ml).period", "between 1d and 366d"),
        (one(selector="ml-team"), "budgets[0] (ml).selector", "in braces"),
        (one(selector='{namespace="a", package="p"}'), "budgets[0] (ml).selector", "no package"),
        (one(labels={"severity": "page"}), "budgets[0] (ml).labels.severity", "cannot be overridden"),
        (one(labels={"bad-name": "x"}), "budgets[0] (ml).labels", "not a valid label name"),
        (one(labels={"team": 3}), "budgets[0] (ml).labels.team", "must be a string"),
        (one(owner="me"), "budgets[0] (ml).owner", "unknown key"),
        ({"budgets": [{"name": "ml", "period": "1d", "grams": 1}]}, "budgets[0] (ml).selector", "required"),
        ({"settings": {"evaluation_interval": "often"}}, "settings.evaluation_interval", "not a duration"),
        ({"settings": {"colour": "red"}}, "settings.colour", "unknown key"),
    ],
)
def test_validation_names_the_budget_and_key(data: Any, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_budgets(data)
    assert err.value.key == key
    assert problem in err.value.problem


def test_duplicate_names_are_rejected() -> None:
    data = {"budgets": one()["budgets"] * 2}
    with pytest.raises(ConfigError) as err:
        parse_budgets(data)
    assert err.value.key == "budgets[1] (ml).name" and "duplicate" in err.value.problem


def test_an_empty_file_renders_no_rules() -> None:
    doc = render_rules(parse_budgets(None))
    assert doc["groups"][0]["rules"] == []


# -------------------------------------------------------------------------------------------- the math


@pytest.mark.parametrize(
    ("period", "fast", "slow"), [("30d", 14.4, 6.0), ("7d", 3.36, 1.4), ("1d", 1.0, 1.0)]
)
def test_burn_thresholds_spend_a_share_of_the_budget_and_never_go_below_one(
    period: str, fast: float, slow: float
) -> None:
    budget = parse_budgets(one(period=period)).budgets[0]
    assert [burn_threshold(budget, tier) for tier in TIERS] == [fast, slow]


@pytest.mark.parametrize(
    ("grams", "text"),
    [
        (50, "50 g"),
        (999, "999 g"),
        (1500, "1.5 kg"),
        (500000, "500 kg"),
        (2e6, "2 t"),
        (12345678, "12.3 t"),
        (0.5, "0.5 g"),
    ],
)
def test_format_grams(grams: float, text: str) -> None:
    assert format_grams(grams) == text


# ------------------------------------------------------------------------------------------- rendering


def test_rules_record_budget_usage_and_burn_rates() -> None:
    bf = parse_budgets(one(labels={"team": "ml"}, description="the ML team"))
    by = rules_by(render_rules(bf))
    labels = {"budget": "ml", "period": "30d", "scope": '{namespace="ml-team"}'}
    assert by["footprint:budget_grams"][0] == {
        "record": "footprint:budget_grams",
        "expr": "vector(500000)",
        "labels": labels,
    }
    assert by["footprint:budget_period_seconds"][0]["expr"] == "vector(2592000)"
    rate = by["footprint:budget_emissions_grams:rate5m"][0]["expr"]
    assert rate == (
        '(sum(rate(footprint_process_gpu_emissions_grams_total{namespace="ml-team"}[5m])) or vector(0))'
        '\n+\n(sum(rate(footprint_process_cpu_emissions_grams_total{namespace="ml-team"}[5m])) '
        "or vector(0))"
    )
    assert by["footprint:budget_used_grams"][0]["expr"] == (
        'sum_over_time(footprint:budget_emissions_grams:rate5m{budget="ml"}[30d]) * 60'
    )
    assert by["footprint:budget_burn_rate:rate1h"][0]["expr"] == (
        'avg_over_time(footprint:budget_emissions_grams:rate5m{budget="ml"}[1h]) / (500000 / 2592000)'
    )
    fast, slow = by["CarbonBudgetBurnRateHigh"]
    assert fast["expr"] == (
        'footprint:budget_burn_rate:rate1h{budget="ml"} > 14.4\nand\n'
        'footprint:budget_burn_rate:rate5m{budget="ml"} > 14.4'
    )
    assert (fast["for"], slow["for"]) == ("2m", "15m")
    assert fast["labels"] == {"severity": "warning", "window": "fast", "budget": "ml", "team": "ml"}
    assert "> 6\nand\n" in slow["expr"] and "rate6h" in slow["expr"] and "rate30m" in slow["expr"]
    exhausted = by["CarbonBudgetExhausted"][0]
    assert exhausted["expr"] == 'footprint:budget_usage:ratio{budget="ml"} > 1'
    assert exhausted["labels"]["severity"] == "critical"
    assert "the ML team" in exhausted["annotations"]["description"]
    assert "500 kg" in exhausted["annotations"]["description"]
    assert exhausted["annotations"]["runbook_url"].endswith("#runbook-carbonbudgetexhausted")


def test_the_fleet_budget_sums_node_totals_without_an_empty_selector() -> None:
    by = rules_by(render_rules(parse_budgets(one(selector="{}"))))
    assert by["footprint:budget_emissions_grams:rate5m"][0]["expr"] == (
        "(sum(rate(footprint_gpu_emissions_grams_total[5m])) or vector(0))\n+\n"
        "(sum(rate(footprint_cpu_emissions_grams_total[5m])) or vector(0))\n+\n"
        "(sum(rate(footprint_node_unmetered_emissions_grams_total[5m])) or vector(0))"
    )


def test_settings_change_interval_step_and_pending_periods() -> None:
    data = one()
    data["settings"] = {"evaluation_interval": "15s", "exhausted_for": "0s", "fast_burn_for": "1m"}
    doc = render_rules(parse_budgets(data))
    assert doc["groups"][0]["interval"] == "15s"
    by = rules_by(doc)
    assert by["footprint:budget_used_grams"][0]["expr"].endswith("* 15")
    assert by["CarbonBudgetExhausted"][0]["for"] == "0s"
    assert [r["for"] for r in by["CarbonBudgetBurnRateHigh"]] == ["1m", "15m"]


def test_grafana_rules_use_the_same_series_and_thresholds() -> None:
    doc = render_grafana(parse_budgets(one(period="7d")))
    assert doc["apiVersion"] == 1
    group = doc["groups"][0]
    assert (group["orgId"], group["folder"], group["interval"]) == (1, "Carbon budgets", "1m")
    fast, slow, exhausted = group["rules"]
    assert [r["uid"] for r in group["rules"]] == ["fp-burn-fast-ml", "fp-burn-slow-ml", "fp-exhausted-ml"]
    data = {d["refId"]: d for d in fast["data"]}
    assert data["A"]["datasourceUid"] == "prometheus"
    assert data["A"]["model"]["expr"] == 'footprint:budget_burn_rate:rate1h{budget="ml"}'
    assert data["B"]["model"]["expr"] == 'footprint:budget_burn_rate:rate5m{budget="ml"}'
    assert data["C"]["model"] == {
        "refId": "C",
        "datasource": {"type": "__expr__", "uid": "__expr__"},
        "type": "reduce",
        "expression": "A",
        "reducer": "last",
    }
    assert fast["condition"] == "E" and data["E"]["model"]["expression"] == "$C > 3.36 && $D > 3.36"
    assert {d["refId"]: d for d in slow["data"]}["E"]["model"]["expression"] == "$C > 1.4 && $D > 1.4"
    assert (fast["for"], slow["for"], exhausted["for"]) == ("2m", "15m", "5m")
    threshold = {d["refId"]: d for d in exhausted["data"]}["T"]["model"]
    assert exhausted["condition"] == "T"
    assert threshold["type"] == "threshold" and threshold["conditions"][0]["evaluator"] == {
        "type": "gt",
        "params": [1],
    }
    assert exhausted["labels"] == {
        "budget": "ml",
        "period": "7d",
        "scope": '{namespace="ml-team"}',
        "severity": "critical",
    }
    for rule in group["rules"]:
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}
        assert len(rule["uid"]) <= 40


def test_long_names_get_short_stable_grafana_uids() -> None:
    name = "a-very-long-budget-name-for-the-whole-research-division"
    rules = render_grafana(parse_budgets(one(name=name)))["groups"][0]["rules"]
    uids = [r["uid"] for r in rules]
    assert all(len(u) <= 40 for u in uids) and len(set(uids)) == 3
    assert uids == [r["uid"] for r in render_grafana(parse_budgets(one(name=name)))["groups"][0]["rules"]]


def test_rendered_rules_pass_promtool(tmp_path: Path) -> None:
    data = one(labels={"team": "ml"})
    data["budgets"].append({"name": "fleet", "selector": "{}", "period": "1d", "grams": 1000})
    rules_text, _ = budgets.render_files(parse_budgets(data), "budgets.yml")
    (tmp_path / "r.yml").write_text(rules_text)
    result = subprocess.run(
        ["promtool", "check", "rules", str(tmp_path / "r.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 28 rules found" in result.stdout  # 11 series + 3 alerts per budget


# ------------------------------------------------------------------------------------- CLI, staleness


def test_committed_outputs_are_what_the_committed_budgets_render_to() -> None:
    bf = budgets.load_budgets(ROOT / "prometheus" / "budgets.yml")
    rules_text, grafana_text = budgets.render_files(bf, "budgets.yml")
    assert (ROOT / "prometheus" / "rules" / "budgets.rules.yml").read_text() == rules_text
    assert (ROOT / "grafana" / "provisioning" / "alerting" / "budgets.yml").read_text() == grafana_text
    assert len(bf.budgets) == 5


def test_render_then_check_then_stale(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "budgets.yml"
    src.write_text(yaml.safe_dump(one()))
    rules, grafana = tmp_path / "out" / "r.yml", tmp_path / "out" / "g.yml"
    args = ["--budgets", str(src), "--rules-out", str(rules), "--grafana-out", str(grafana)]
    assert budgets.main(["check", *args]) == 1
    assert budgets.main(["render", *args]) == 0
    assert yaml.safe_load(rules.read_text())["groups"][0]["rules"][0]["expr"] == "vector(500000)"
    assert yaml.safe_load(grafana.read_text())["apiVersion"] == 1
    assert budgets.main(["check", *args]) == 0
    src.write_text(yaml.safe_dump(one(grams=600000)))
    capsys.readouterr()
    assert budgets.main(["check", *args]) == 1
    assert f"{rules} is stale" in capsys.readouterr().err


def test_bad_budget_file_exits_2_naming_budget_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "budgets.yml"
    src.write_text(yaml.safe_dump(one(grams=-5)))
    rules = tmp_path / "r.yml"
    assert (
        budgets.main(
            [
                "render",
                "--budgets",
                str(src),
                "--rules-out",
                str(rules),
                "--grafana-out",
                str(tmp_path / "g.yml"),
            ]
        )
        == 2
    )
    assert "budgets[0] (ml).grams: must be a positive number" in capsys.readouterr().err
    assert not rules.exists()
    assert budgets.main(["render", "--budgets", str(tmp_path / "missing.yml")]) == 2
    assert "cannot read" in capsys.readouterr().err
    src.write_text("budgets: [")
    assert budgets.main(["check", "--budgets", str(src)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert budgets.main(["frobnicate"]) == 2


def test_the_console_script_runs_check_on_the_committed_files() -> None:
    result = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "footprint-exporter"), "budgets", "check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_defaults_work_from_any_folder(tmp_path: Path) -> None:
    """Outside the checkout, `budgets check` finds the checkout's files; an error names a path once."""
    script = Path(sys.executable).parent / "footprint-exporter"
    outside = subprocess.run(
        [str(script), "budgets", "check"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert outside.returncode == 0, outside.stderr
    missing = subprocess.run(
        [str(script), "budgets", "check", "--budgets", "nope.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (
        missing.returncode == 2
        and missing.stderr.strip() == "cannot read nope.yml: No such file or directory"
    )
    # A folder with its own prometheus/budgets.yml is used as it is: render writes beside it.
    (tmp_path / "prometheus").mkdir()
    (tmp_path / "prometheus" / "budgets.yml").write_text("budgets: []\n")
    assert budgets.default_root(tmp_path) == tmp_path
    assert budgets.default_root(tmp_path / "prometheus") == ROOT
