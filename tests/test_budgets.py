"""Tests of the carbon budget renderer: validation, the burn-rate math, both outputs, staleness, the CLI."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import budgets
from exporter.budgets import (
    Matcher,
    classify_scope,
    dump,
    emissions_metrics,
    format_grams,
    parse_budgets,
    parse_selector,
    render_grafana,
    render_rules,
)
from exporter.errors import ConfigError
from tests.exporter_proc import start_exporter
from tests.prom_procs import prometheus

ROOT = Path(__file__).resolve().parent.parent


def one(**over: Any) -> dict[str, Any]:
    budget = {"name": "ml", "selector": '{namespace="ml-team"}', "period": "30d", "grams": 500000}
    budget.update(over)
    return {"budgets": [budget]}


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
        (one(period="1h"), "budgets[0] (ml).period", "month, quarter, year or a rolling window"),
        (one(period="400d"), "budgets[0] (ml).period", "from 1d to 366d"),
        (one(period="week"), "budgets[0] (ml).period", "not a duration"),
        (one(selector="ml-team"), "budgets[0] (ml).selector", "in braces"),
        (one(selector='{namespace="a", package="p"}'), "budgets[0] (ml).selector", "no package"),
        (one(selector='{label_team="a", user="u"}'), "budgets[0] (ml).selector", "label_*"),
        (one(labels={"severity": "page"}), "budgets[0] (ml).labels.severity", "cannot be overridden"),
        (one(labels={"cluster": "x"}), "budgets[0] (ml).labels.cluster", "scope label"),
        (one(labels={"label_team": "x"}), "budgets[0] (ml).labels.label_team", "scope label"),
        (one(labels={"bad-name": "x"}), "budgets[0] (ml).labels", "not a valid label name"),
        (one(labels={"team": 3}), "budgets[0] (ml).labels.team", "must be a string"),
        (one(owner="me"), "budgets[0] (ml).owner", "unknown key"),
        ({"budgets": [{"name": "ml", "period": "1d", "grams": 1}]}, "budgets[0] (ml).selector", "required"),
        ({"settings": {"evaluation_interval": "often"}}, "settings.evaluation_interval", "not a duration"),
        ({"settings": {"colour": "red"}}, "settings.colour", "unknown key"),
        ({"settings": {"alerting": "both"}}, "settings.alerting", "prometheus or grafana"),
        ({"settings": {"burn_rate_threshold": 1}}, "settings.burn_rate_threshold", "above 1"),
        ({"settings": {"burn_rate_threshold": "2"}}, "settings.burn_rate_threshold", "number"),
        ({"settings": {"coverage_threshold": 1.5}}, "settings.coverage_threshold", "fraction"),
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


def test_an_empty_file_renders_no_rules_and_no_grafana_alerts() -> None:
    assert render_rules(parse_budgets(None)) == {"groups": []}
    assert render_rules(parse_budgets({"budgets": []})) == {"groups": []}
    assert render_grafana(parse_budgets(None)) == {"apiVersion": 1}


# ------------------------------------------------------------------------------------------- scopes


@pytest.mark.parametrize(
    ("selector", "level", "keys"),
    [
        ("{}", "fleet:footprint_emissions_grams:rate5m", ()),
        ('{node="gpu-1"}', "instance:footprint_emissions_grams:rate5m", ("node",)),
        ('{cluster="a"}', "instance:footprint_emissions_grams:rate5m", ("cluster",)),
        ('{namespace="ml"}', "namespace:footprint_process_emissions_grams:rate5m", ("namespace",)),
        (
            '{cluster="a", namespace="ml"}',
            "namespace:footprint_process_emissions_grams:rate5m",
            ("cluster", "namespace"),
        ),
        ('{user="alice"}', "user:footprint_process_emissions_grams:rate5m", ("user",)),
        ('{slurm_job_id="7"}', "slurm_job_id:footprint_process_emissions_grams:rate5m", ("slurm_job_id",)),
        (
            '{namespace="ml", pod="p"}',
            "namespace_pod:footprint_process_emissions_grams:rate5m",
            ("namespace", "pod"),
        ),
        ('{label_team="research"}', "namespace:footprint_process_emissions_grams:rate5m", ("label_team",)),
    ],
)
def test_equality_selectors_on_a_recorded_level_are_joined_as_data(
    selector: str, level: str, keys: tuple[str, ...]
) -> None:
    scope = classify_scope(parse_selector(selector))
    assert scope.joined and scope.level is not None
    assert (scope.level.series, scope.keys) == (level, keys)


@pytest.mark.parametrize(
    ("selector", "expr"),
    [
        (
            '{namespace=~"ml-.*"}',
            'sum(namespace:footprint_process_emissions_grams:rate5m{namespace=~"ml-.*"})',
        ),
        ('{node!="gpu-9"}', 'sum(instance:footprint_emissions_grams:rate5m{node!="gpu-9"})'),
        (
            '{user!="bob"}',
            '(sum(rate(footprint_process_gpu_emissions_grams_total{user!="bob"}[5m])) or vector(0)) + '
            '(sum(rate(footprint_process_cpu_emissions_grams_total{user!="bob"}[5m])) or vector(0))',
        ),
        (
            '{label_team=~"r.*", cluster="a"}',
            'sum(namespace:footprint_process_emissions_grams:rate5m{cluster="a"} * on (cluster, namespace) '
            "group_left (label_team) max by (cluster, namespace, label_team) "
            '(kube_namespace_labels{label_team=~"r.*"}))',
        ),
        # No recorded level has both labels, or they are GPU/CPU labels: the raw counters.
        (
            '{namespace="ml", user="alice"}',
            '(sum(rate(footprint_process_gpu_emissions_grams_total{namespace="ml", user="alice"}[5m])) '
            "or vector(0)) + "
            '(sum(rate(footprint_process_cpu_emissions_grams_total{namespace="ml", user="alice"}[5m])) '
            "or vector(0))",
        ),
        ('{gpu="0"}', '(sum(rate(footprint_gpu_emissions_grams_total{gpu="0"}[5m])) or vector(0))'),
        (
            '{job="gpu"}',
            '(sum(rate(footprint_gpu_emissions_grams_total{job="gpu"}[5m])) or vector(0)) + '
            '(sum(rate(footprint_cpu_emissions_grams_total{job="gpu"}[5m])) or vector(0)) + '
            # Node scopes add the node's unmetered part (absent without a node source).
            '(sum(rate(footprint_node_unmetered_emissions_grams_total{job="gpu"}[5m])) or vector(0))',
        ),
        (
            '{slurm_job_id=""}',
            '(sum(rate(footprint_process_gpu_emissions_grams_total{slurm_job_id=""}[5m])) '
            'or vector(0)) + (sum(rate(footprint_process_cpu_emissions_grams_total{slurm_job_id=""}[5m])) '
            "or vector(0))",
        ),
    ],
)
def test_other_selectors_get_a_rate_of_their_own(selector: str, expr: str) -> None:
    scope = classify_scope(parse_selector(selector))
    assert not scope.joined
    assert scope.rate_expr == expr


def _rules(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for g in doc["groups"] for r in g["rules"]]


def many(n: int, selector: str = '{{namespace="ns-{i}"}}', period: str = "30d") -> dict[str, Any]:
    return {
        "budgets": [
            {"name": f"b{i}", "selector": selector.format(i=i), "period": period, "grams": 1000 + i}
            for i in range(n)
        ]
    }


def test_each_joined_budget_adds_one_constant_rule_and_nothing_else() -> None:
    sizes = {}
    for n in (1, 2, 50):
        rules = _rules(render_rules(parse_budgets(many(n))))
        definitions = [r for r in rules if r.get("record") == "footprint:budget_grams"]
        assert len(definitions) == n
        assert all(r["expr"].startswith("vector(") for r in definitions)
        sizes[n] = (len(rules) - n, len(dump(render_rules(parse_budgets(many(n))), "b.yml")))
    # The shared rules are the same set at any count; the text grows only by the definitions.
    assert sizes[1][0] == sizes[2][0] == sizes[50][0]
    per_budget = (sizes[50][1] - sizes[1][1]) / 49
    assert per_budget < 260, per_budget


def test_unjoinable_selectors_add_a_term_to_one_rate_rule_not_a_rule() -> None:
    rules = _rules(render_rules(parse_budgets(many(3, '{{namespace=~"ns-{i}.*"}}'))))
    rates = [r for r in rules if r.get("record") == "footprint:budget_emissions_grams:rate5m"]
    assert len(rates) == 1
    for i in range(3):
        assert f'"budget", "b{i}", "", "")' in rates[0]["expr"]


def test_definition_series_carry_the_join_keys_and_user_labels() -> None:
    bf = parse_budgets(one(selector='{cluster="a", namespace="ml"}', labels={"team": "ml"}))
    (definition,) = [r for r in _rules(render_rules(bf)) if r.get("record") == "footprint:budget_grams"]
    assert definition == {
        "record": "footprint:budget_grams",
        "expr": "vector(500000)",
        "labels": {
            "budget": "ml",
            "period": "30d",
            "scope": '{cluster="a", namespace="ml"}',
            "cluster": "a",
            "namespace": "ml",
            "team": "ml",
        },
    }


def test_alerts_are_four_shared_rules_with_their_settings() -> None:
    data = many(5, period="month")
    data["settings"] = {
        "burn_rate_threshold": 3,
        "exhausted_keep_firing_for": "6h",
        "coverage_threshold": 0.9,
    }
    rules = {r["alert"]: r for r in _rules(render_rules(parse_budgets(data))) if "alert" in r}
    assert set(rules) == {
        "CarbonBudgetBurnRateHigh",
        "CarbonBudgetProjectedOverrun",
        "CarbonBudgetExhausted",
        "CarbonBudgetCoverageLow",
    }
    assert rules["CarbonBudgetBurnRateHigh"]["expr"] == (
        "footprint:budget_burn_rate:rate1d > 3\nand\nfootprint:budget_burn_rate:rate2h > 3"
    )
    assert rules["CarbonBudgetProjectedOverrun"]["labels"] == {"severity": "critical"}
    exhausted = rules["CarbonBudgetExhausted"]
    assert (exhausted["labels"]["severity"], exhausted["keep_firing_for"]) == ("warning", "6h")
    assert rules["CarbonBudgetCoverageLow"]["expr"] == "footprint:budget_coverage:ratio < 0.9"
    for name, rule in rules.items():
        assert rule["annotations"]["runbook_url"].endswith("#runbook-" + name.lower())


def test_grafana_alerting_replaces_the_prometheus_alerts_and_provisions_a_contact_point() -> None:
    data = many(3)
    data["settings"] = {"alerting": "grafana", "grafana_alertmanager_url": "http://am.example:9093"}
    bf = parse_budgets(data)
    assert not [r for r in _rules(render_rules(bf)) if "alert" in r]  # one alerting path at a time
    doc = render_grafana(bf)
    (group,) = doc["groups"]
    assert (group["folder"], group["interval"]) == ("Carbon budgets", "1m")
    rules = {r["title"]: r for r in group["rules"]}
    assert len(rules) == 4  # multi-dimensional: one rule per alert for every budget
    exhausted = rules["CarbonBudgetExhausted"]
    data_by_ref = {d["refId"]: d for d in exhausted["data"]}
    assert data_by_ref["A"]["model"]["expr"] == "footprint:budget_usage:ratio > 1"
    assert data_by_ref["C"]["model"]["conditions"][0]["evaluator"] == {"type": "gt", "params": [1.0]}
    assert exhausted["keepFiringFor"] == "2h" and exhausted["for"] == "5m"
    coverage = {d["refId"]: d for d in rules["CarbonBudgetCoverageLow"]["data"]}
    assert coverage["C"]["model"]["conditions"][0]["evaluator"] == {"type": "lt", "params": [0.95]}
    for rule in rules.values():
        text = rule["annotations"]["summary"] + rule["annotations"]["description"]
        assert "query" not in text and "$value " not in text  # Grafana templates have neither
    assert "{{ humanize $values.UR.Value }}" in exhausted["annotations"]["description"]
    (contact,) = doc["contactPoints"]
    assert contact["receivers"][0]["type"] == "prometheus-alertmanager"
    assert contact["receivers"][0]["settings"] == {"url": "http://am.example:9093"}
    assert doc["policies"][0]["receiver"] == contact["name"]


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


def test_rendered_examples_pass_promtool(tmp_path: Path) -> None:
    bf = budgets.load_budgets(ROOT / "prometheus" / "budgets.example.yml")
    rules_text, _ = budgets.render_files(bf, "budgets.example.yml")
    (tmp_path / "r.yml").write_text(rules_text)
    result = subprocess.run(
        ["promtool", "check", "rules", str(tmp_path / "r.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules(render_rules(bf)))} rules found" in result.stdout


# ------------------------------------------------------------------------------------- CLI, staleness


def test_no_live_budgets_ship_and_the_committed_outputs_are_current() -> None:
    bf = budgets.load_budgets(ROOT / "prometheus" / "budgets.yml")
    assert bf.budgets == ()
    rules_text, grafana_text = budgets.render_files(bf, "budgets.yml")
    assert (ROOT / "prometheus" / "rules" / "budgets.rules.yml").read_text() == rules_text
    assert (ROOT / "grafana" / "provisioning" / "alerting" / "budgets.yml").read_text() == grafana_text


@pytest.mark.parametrize("name", ["scenarios", "calendar"])
def test_promtool_scenario_rules_are_rendered_from_their_budgets(name: str) -> None:
    tests = ROOT / "prometheus" / "tests"
    bf = budgets.load_budgets(tests / f"budgets.{name}.yml")
    rules_text, _ = budgets.render_files(bf, f"budgets.{name}.yml")
    assert (tests / f"budgets.{name}.rules.yml").read_text() == rules_text, (
        f"run: footprint-exporter budgets render --budgets prometheus/tests/budgets.{name}.yml "
        f"--rules-out prometheus/tests/budgets.{name}.rules.yml --grafana-out /dev/null"
    )


def test_render_then_check_then_stale(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "budgets.yml"
    src.write_text(yaml.safe_dump(one()))
    rules, grafana = tmp_path / "out" / "r.yml", tmp_path / "out" / "g.yml"
    args = ["--budgets", str(src), "--rules-out", str(rules), "--grafana-out", str(grafana)]
    assert budgets.main(["check", *args]) == 1
    assert budgets.main(["render", *args]) == 0
    assert yaml.safe_load(rules.read_text())["groups"][0]["rules"][0]["expr"] == "vector(500000)"
    assert yaml.safe_load(grafana.read_text()) == {"apiVersion": 1}
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


# ------------------------------------------------------------------------ against a real Prometheus


def _utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def _calendar_bounds(ts: float, period: str) -> tuple[float, float]:
    """The UTC calendar period around TS, from Python's calendar: the oracle for the PromQL."""
    now = datetime.fromtimestamp(ts, UTC)
    first = {"month": now.month, "quarter": 3 * ((now.month - 1) // 3) + 1, "year": 1}[period]
    start = datetime(now.year, first, 1, tzinfo=UTC)
    months = {"month": 1, "quarter": 3, "year": 12}[period]
    end_month = first + months
    end = datetime(now.year + (end_month - 1) // 12, (end_month - 1) % 12 + 1, 1, tzinfo=UTC)
    return start.timestamp(), end.timestamp()


@pytest.mark.integration
def test_calendar_period_bounds_match_the_calendar_in_real_prometheus(tmp_path: Path) -> None:
    (tmp_path / "prometheus.yml").write_text("global: {}\n")
    instants = [
        "2024-02-29T12:00:00",  # leap day, first quarter
        "2024-03-31T23:59:59",
        "2024-04-01T00:00:00",
        "2023-12-31T23:59:59",
        "2023-02-28T23:00:00",
        "2025-07-15T08:30:00",
        "2025-10-01T00:00:01",
        "2000-02-29T00:00:00",  # leap century
        "2100-03-01T00:00:00",  # not a leap year
        "1970-01-01T00:00:00",
    ]
    with prometheus(tmp_path / "prometheus.yml", tmp_path / "prom") as prom:
        for text in instants:
            ts = _utc(text)
            for period, (start_expr, end_expr) in budgets.CALENDAR_BOUNDS.items():
                got = [
                    float(prom.get("/api/v1/query", query=f"scalar({expr})", time=ts)["result"][1])
                    for expr in (start_expr, end_expr)
                ]
                assert tuple(got) == _calendar_bounds(ts, period), f"{period} around {text}"


@pytest.mark.integration
def test_a_prometheus_restart_continues_the_count_and_shows_the_gap_in_coverage(tmp_path: Path) -> None:
    """Usage continues across a restart; a gap longer than max_gap counts only max_gap, in usage and in
    coverage alike (here 2 s of a gap of several seconds), instead of guessing or starting from zero."""
    budget_file = {
        "settings": {"evaluation_interval": "1s", "max_gap": "2s"},
        "budgets": [{"name": "fleet", "selector": "{}", "period": "month", "grams": 1000000}],
    }
    (tmp_path / "budgets.rules.yml").write_text(budgets.render_files(parse_budgets(budget_file), "b.yml")[0])
    exporter = start_exporter(["--source.gpu=simulated", "--sample.interval=250ms"])
    try:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [
                str(ROOT / "prometheus/rules/footprint.rules.yml"),
                str(tmp_path / "budgets.rules.yml"),
            ],
            "scrape_configs": [
                {"job_name": "footprint", "static_configs": [{"targets": [exporter.instance]}]}
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        emitted = "footprint:budget_emitted_grams:cumulative"

        def value(prom: Any, expr: str) -> float | None:
            result = prom.query(expr)
            return float(result[0]["value"][1]) if result else None

        with prometheus(tmp_path / "prometheus.yml", tmp_path / "prom") as prom:
            deadline = time.monotonic() + 120
            while (value(prom, emitted) or 0) <= 0 and time.monotonic() < deadline:
                time.sleep(1)
            assert (value(prom, emitted) or 0) > 0, prom.log_tail()
            time.sleep(3)
        stopped = time.time()
        time.sleep(6)  # Prometheus is down: no scrapes, no rule evaluations

        def after_restart(prom: Any) -> dict[str, list[tuple[float, float]]] | None:
            """The four series once the first evaluation after the restart is stored in each of them."""
            series: dict[str, list[tuple[float, float]]] = {}
            for name in (
                emitted,
                "footprint:budget_covered_seconds:cumulative",
                budgets.EVALUATED,
                budgets.GAP,
            ):
                (result,) = prom.query(f"{name}[2m]")
                series[name] = [(float(t), float(v)) for t, v in result["values"]]
            restarted = [t for t, _ in series[budgets.EVALUATED] if t > stopped]
            if restarted and all(restarted[0] in dict(points) for points in series.values()):
                return series
            return None

        with prometheus(tmp_path / "prometheus.yml", tmp_path / "prom") as prom:
            # Rules run on their own schedule once Prometheus is ready: wait for the first evaluation
            # after the restart instead of sleeping a fixed time and hoping one happened.
            deadline = time.monotonic() + 60
            while (series := after_restart(prom)) is None:
                assert time.monotonic() < deadline, prom.log_tail()
                time.sleep(1)
    finally:
        exporter.stop()
    evaluated = series[budgets.EVALUATED]
    gaps = [(b[0] - a[0], i + 1) for i, (a, b) in enumerate(itertools.pairwise(evaluated))]
    gap, after = max(gaps)
    assert gap > 6, gaps  # the restart
    # The first evaluation after the restart measured the gap, and counted 2 s of it, no more.
    restart_t = evaluated[after][0]
    assert dict(series[budgets.GAP])[restart_t] == pytest.approx(gap, abs=0.01)
    covered = dict(series["footprint:budget_covered_seconds:cumulative"])
    before_t = evaluated[after - 1][0]
    assert covered[restart_t] - covered[before_t] == pytest.approx(2.0, abs=1e-6)
    grams = dict(series[emitted])
    assert grams[restart_t] >= grams[before_t] > 0  # continued, not started again from zero
    assert grams[restart_t] - grams[before_t] < grams[before_t]  # 2 s worth, not the whole gap
