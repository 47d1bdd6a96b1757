"""Static checks of the Grafana dashboards: generated JSON is current, valid and follows our panel rules."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from exporter.catalogue import CATALOGUE

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "grafana" / "dashboards"
DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources" / "footprint.yml"


def load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_dashboards", ROOT / "grafana" / "build_dashboards.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels_of(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows carry their panels inside
    return out


# ----------------------------------------------------------------------------- expression checks

_COUNTER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*_total\b")
_FUNC_OPEN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)?\s*\($")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def counters_outside_rate(expr: str) -> list[str]:
    """Counter names (``*_total``, also inside a ``__name__`` regex) not directly inside rate()/increase()."""
    bad = []
    for m in _COUNTER.finditer(expr):
        stack: list[str] = []
        in_string = False
        for i, ch in enumerate(expr[: m.start()]):
            if ch == '"' and (i == 0 or expr[i - 1] != "\\"):
                in_string = not in_string
            if in_string:
                continue
            if ch == "(":
                fm = _FUNC_OPEN.search(expr[: i + 1])
                stack.append(fm.group(1) or "" if fm else "")
            elif ch == ")" and stack:
                stack.pop()
        if not stack or stack[-1] not in ("rate", "increase"):
            bad.append(m.group(0))
    return bad


def metric_names(expr: str) -> set[str]:
    """Metric names a query selects: bare identifiers before a selector or range, and __name__ regexes."""
    names = set()
    for regex in re.findall(r'__name__=~"([^"]+)"', expr):
        for name in CATALOGUE:
            if re.fullmatch(regex, name):
                names.add(name)
    without_strings = _STRING.sub('""', expr)
    for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{|\[)", without_strings):
        names.add(m.group(1))
    return names


def test_counter_check_finds_bare_counters_and_accepts_rates() -> None:
    assert counters_outside_rate('rate(footprint_gpu_energy_joules_total{a="b"}[$__rate_interval])') == []
    assert counters_outside_rate("sum by (gpu) (increase(footprint_x_total[$__range]))") == []
    assert (
        counters_outside_rate('sum(increase({__name__=~"footprint_(gpu|cpu)_energy_joules_total"}[1h]))')
        == []
    )
    assert counters_outside_rate("sum(footprint_gpu_energy_joules_total)") == [
        "footprint_gpu_energy_joules_total"
    ]
    assert counters_outside_rate("deriv(footprint_a_total[5m])") == ["footprint_a_total"]
    assert counters_outside_rate('sum({__name__=~"footprint_(gpu|cpu)_energy_joules_total"})') == [
        "_energy_joules_total"
    ]
    # A counter divided by a rate is still bare, even though a rate( appears earlier in the text.
    assert counters_outside_rate("rate(a_total[1m]) / b_total") == ["b_total"]


def test_metric_names_reads_selectors_and_name_regexes() -> None:
    names = metric_names('sum(increase({__name__=~"footprint_(gpu|cpu)_emissions_grams_total", x="y"}[1h]))')
    assert names == {"footprint_gpu_emissions_grams_total", "footprint_cpu_emissions_grams_total"}
    assert metric_names(
        'footprint_gpu_power_watts{instance=~"$instance"} / footprint_gpu_power_limit_watts{a="b"}'
    ) == {
        "footprint_gpu_power_watts",
        "footprint_gpu_power_limit_watts",
    }


# ----------------------------------------------------------------------------- the dashboards


def test_committed_dashboards_match_the_generator(tmp_path: Path) -> None:
    builder = load_builder()
    assert builder.main(["--out", str(tmp_path)]) == 0
    generated = sorted(p.name for p in tmp_path.glob("*.json"))
    assert generated == sorted(load_dashboards()), "a dashboard JSON exists that the generator does not write"
    for name in generated:
        assert (tmp_path / name).read_text() == (DASHBOARDS / name).read_text(), (
            f"{name} is stale: run .venv/bin/python grafana/build_dashboards.py"
        )
    assert builder.main(["--check"]) == 0


def test_generator_check_reports_a_stale_file(tmp_path: Path) -> None:
    builder = load_builder()
    builder.main(["--out", str(tmp_path)])
    (tmp_path / "carbon.json").write_text("{}\n")
    assert builder.main(["--check", "--out", str(tmp_path)]) == 1


def test_four_dashboards_with_unique_uids_and_titles() -> None:
    dashes = load_dashboards()
    assert set(dashes) == {"fleet-overview.json", "node-gpu.json", "workloads.json", "carbon.json"}
    uids = [d["uid"] for d in dashes.values()]
    titles = [d["title"] for d in dashes.values()]
    assert len(set(uids)) == len(uids) == 4
    assert len(set(titles)) == 4
    for uid in uids:
        assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", uid), uid  # Grafana's uid limit is 40 characters


@pytest.mark.parametrize("name", ["fleet-overview.json", "node-gpu.json", "workloads.json", "carbon.json"])
def test_dashboard_has_fields_provisioning_needs(name: str) -> None:
    dash = load_dashboards()[name]
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    assert dash["title"].startswith("Footprint / ")
    assert "footprint" in dash["tags"] and len(dash["tags"]) >= 2
    assert dash["description"]
    assert "id" not in dash or dash["id"] is None  # a provisioned dashboard must not carry a database id
    assert dash["time"]["from"].startswith("now-")
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["type"] == "query"
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert var["includeAll"] and var["allValue"] == ".*"
            for name_used in metric_names(var["definition"]):
                assert name_used in CATALOGUE, name_used


@pytest.mark.parametrize("name", ["fleet-overview.json", "node-gpu.json", "workloads.json", "carbon.json"])
def test_panels_have_title_unit_description_and_a_known_datasource(name: str) -> None:
    provisioned = {d["uid"] for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    assert provisioned == {"prometheus", "alertmanager"}
    allowed = {"${datasource}"} | provisioned
    panels = panels_of(load_dashboards()[name])
    assert len(panels) >= 8
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids)
    for p in panels:
        where = f"{name}: panel {p.get('title')!r}"
        assert p["title"], where
        assert p.get("description", "").strip(), f"{where} has no description"
        assert p["fieldConfig"]["defaults"].get("unit"), f"{where} has no unit"
        if p["type"] == "alertlist":
            assert "targets" not in p, where
            continue
        assert p["targets"], f"{where} has no query"
        assert p["datasource"]["uid"] in allowed, where
        for t in p["targets"]:
            assert t["datasource"]["uid"] in allowed, where
            assert t["expr"].strip(), where
        refs = [t["refId"] for t in p["targets"]]
        assert len(set(refs)) == len(refs), where


@pytest.mark.parametrize("name", ["fleet-overview.json", "node-gpu.json", "workloads.json", "carbon.json"])
def test_panels_fit_the_grid_without_overlap(name: str) -> None:
    taken: set[tuple[int, int]] = set()
    for p in panels_of(load_dashboards()[name]):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, f"{p['title']} overlaps another panel"
        taken |= cells


def all_targets() -> list[tuple[str, str, str]]:
    return [
        (name, p["title"], t["expr"])
        for name, dash in load_dashboards().items()
        for p in panels_of(dash)
        for t in p.get("targets", [])
    ]


def test_counters_only_inside_rate_or_increase() -> None:
    offenders = [(n, title, c) for n, title, expr in all_targets() for c in counters_outside_rate(expr)]
    assert offenders == []


def test_ranges_are_grafana_variables_not_fixed_windows() -> None:
    for name, title, expr in all_targets():
        for window in re.findall(r"\[([^\]]+)\]", expr):
            assert window in ("$__rate_interval", "$__range"), f"{name}: {title}: [{window}]"
        for m in re.finditer(r"\brate\([^\[]*\[([^\]]+)\]", expr):
            assert m.group(1) == "$__rate_interval", f"{name}: {title}"


def test_every_metric_a_query_reads_exists() -> None:
    recorded = set()
    # Budget series come from the rendered budget rules (budgets.rules.yml ships empty).
    rule_files = [
        *(ROOT / "prometheus" / "rules").glob("*.yml"),
        *(ROOT / "prometheus/tests").glob("*.rules.yml"),
    ]
    for rules in rule_files:
        for group in (yaml.safe_load(rules.read_text()) or {}).get("groups", []):
            recorded |= {r["record"] for r in group["rules"] if "record" in r}
    known = set(CATALOGUE) | recorded | {"ALERTS"}
    used = set()
    for name, title, expr in all_targets():
        for metric in metric_names(expr):
            assert metric in known, f"{name}: {title}: unknown metric {metric}"
            used.add(metric)
    # The dashboards should show most of what the exporter measures (self metrics aside).
    measured = {n for n, s in CATALOGUE.items() if s.area != "self"}
    assert len(used & measured) >= 0.8 * len(measured), sorted(measured - used)


def inference_records() -> set[str]:
    groups = yaml.safe_load((ROOT / "prometheus" / "rules" / "inference.rules.yml").read_text())["groups"]
    return {r["record"] for g in groups for r in g["rules"]}


# Recorded workload levels are kept per cluster, not per node.
WORKLOAD_LEVELS = ("namespace:", "slurm_job_id:", "user:", "namespace_pod:")


def test_queries_filter_by_the_cluster_and_instance_variables() -> None:
    inference = inference_records()
    for name, title, expr in all_targets():
        if "ALERTS" in expr:
            assert 'alertname=~"Footprint.+|CarbonBudget.+"' in expr, f"{name}: {title}"
            continue  # alerts carry whatever labels their rule gave them
        assert 'cluster=~"$cluster"' in expr, f"{name}: {title}"
        if "footprint:budget" in expr or any(level in expr for level in WORKLOAD_LEVELS):
            continue  # budgets and workload levels carry no instance label
        if metric_names(expr) <= inference:
            # Per pod and per model: the server's pod joined with the exporter's, no instance label left.
            assert 'namespace=~"$namespace"' in expr or expr.startswith("1000 * model_name:"), title
            continue
        assert 'instance=~"$instance"' in expr, f"{name}: {title}"


def test_every_dashboard_has_a_cluster_variable_that_narrows_the_nodes() -> None:
    for name, dash in load_dashboards().items():
        variables = {v["name"]: v for v in dash["templating"]["list"]}
        assert variables["cluster"]["definition"] == "label_values(footprint_build_info, cluster)", name
        assert 'cluster=~"$cluster"' in variables["instance"]["definition"], name


@pytest.mark.parametrize("name", ["fleet-overview.json", "node-gpu.json", "workloads.json", "carbon.json"])
def test_every_gauge_has_explicit_thresholds(name: str) -> None:
    for p in panels_of(load_dashboards()[name]):
        if p["type"] not in ("stat", "bargauge", "gauge"):
            continue
        steps = p["fieldConfig"]["defaults"].get("thresholds", {}).get("steps")
        assert steps and steps[0]["value"] is None, f"{name}: {p['title']} has no thresholds"
        values = [s["value"] for s in steps[1:]]
        assert values == sorted(values), f"{name}: {p['title']}"


def test_budget_usage_turns_red_at_100_percent_and_coverage_below_95() -> None:
    panels = {p["title"]: p for d in load_dashboards().values() for p in panels_of(d)}
    for title in ("Carbon budget usage", "Carbon budget projection"):
        steps = panels[title]["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert steps[-1] == {"value": 1.0, "color": "red"}, title
    coverage = panels["Carbon budget coverage"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert coverage == [{"value": None, "color": "red"}, {"value": 0.95, "color": "green"}]


def test_long_ranges_read_recording_rules_not_raw_series() -> None:
    fleet = {p["title"]: p for p in panels_of(load_dashboards()["fleet-overview.json"])}
    for title in (
        "Energy today",
        "CO2e today",
        "Energy, 30 days",
        "CO2e, 30 days",
        "Top nodes by CO2e",
        "Top namespaces by CO2e",
        "Top Slurm jobs by CO2e",
        "Top users by CO2e",
    ):
        (t,) = fleet[title]["targets"]
        assert "_total" not in t["expr"] and ":" in t["expr"], f"{title}: {t['expr']}"


def test_alert_list_shows_only_our_alerts() -> None:
    fleet = {p["title"]: p for p in panels_of(load_dashboards()["fleet-overview.json"])}
    options = fleet["Firing alerts"]["options"]
    assert options["alertInstanceLabelFilter"] == '{alertname=~"Footprint.+|CarbonBudget.+"}'


def test_workloads_show_inference_efficiency_beside_tokens_per_second() -> None:
    panels = panels_of(load_dashboards()["workloads.json"])
    by_title = {p["title"]: p for p in panels}
    energy = by_title["Inference: energy per 1,000 generated tokens"]
    tokens = by_title["Inference: generated tokens per second"]
    # Side by side on one row, energy per 1,000 tokens from the recorded per-model rule.
    assert energy["gridPos"]["y"] == tokens["gridPos"]["y"]
    assert energy["gridPos"]["x"] + energy["gridPos"]["w"] == tokens["gridPos"]["x"]
    assert energy["targets"][0]["expr"].startswith(
        "1000 * namespace_pod_model_name:footprint_joules_per_token:"
    )
    assert "{{pod}}" in energy["targets"][0]["legendFormat"]
    assert "{{model_name}}" in energy["targets"][0]["legendFormat"]
    assert "namespace_pod_model_name:footprint_grams_per_token:rate5m" in str(
        by_title["Inference: CO2e per 1,000 generated tokens"]["targets"]
    )


def test_fleet_overview_answers_the_headline_questions() -> None:
    titles = {p["title"] for p in panels_of(load_dashboards()["fleet-overview.json"])}
    for wanted in (
        "Power now",
        "Energy today",
        "CO2e today",
        "Energy, 30 days",
        "CO2e, 30 days",
        "Grid carbon intensity by zone",
        "Top nodes by CO2e",
        "Top namespaces by CO2e",
        "Top Slurm jobs by CO2e",
        "Top users by CO2e",
        "Firing alerts",
    ):
        assert wanted in titles
    today = next(
        p for p in panels_of(load_dashboards()["fleet-overview.json"]) if p["title"] == "Energy today"
    )
    assert today["timeFrom"] == "now/d"


def test_provisioning_files_are_valid() -> None:
    ds = yaml.safe_load(DATASOURCES.read_text())
    assert ds["apiVersion"] == 1
    by_uid = {d["uid"]: d for d in ds["datasources"]}
    assert by_uid["prometheus"]["type"] == "prometheus" and by_uid["prometheus"]["isDefault"] is True
    assert by_uid["prometheus"]["jsonData"]["timeInterval"] == "15s"
    assert by_uid["alertmanager"]["type"] == "alertmanager"
    assert by_uid["alertmanager"]["jsonData"]["implementation"] == "prometheus"
    assert by_uid["prometheus"]["jsonData"]["alertmanagerUid"] == "alertmanager"
    providers = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/footprint.yml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
