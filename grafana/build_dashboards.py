"""Generates the Grafana dashboards in grafana/dashboards/ from one reviewable description.

Run ``python grafana/build_dashboards.py`` after changing a panel and commit the JSON it writes;
``--check`` exits 1 when the committed JSON is stale (the tests run it too).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

Json = dict[str, Any]


# Recording series of prometheus/rules/budgets.rules.yml (rendered from prometheus/budgets.yml); they
# carry the labels budget, period and scope (and cluster for a budget of one cluster), and no instance.
BUDGET_SEL = 'cluster=~"$cluster"'
BUDGET_USAGE = f"footprint:budget_usage:ratio{{{BUDGET_SEL}}}"
BUDGET_LEGEND = "{{budget}} ({{period}})"
# Our alerts only: kube-prometheus' always-firing Watchdog and other teams' alerts are not counted.
OUR_ALERTS = 'alertname=~"Footprint.+|CarbonBudget.+"'


DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"
SCHEMA_VERSION = 39
DATASOURCE: Json = {"type": "prometheus", "uid": "${datasource}"}
TAGS = ["footprint", "energy", "carbon"]

# Label selectors shared by many queries; a variable set to "All" expands to ".*", which also
# matches series where the label is empty (a process with no pod or Slurm job).
CLUSTER = 'cluster=~"$cluster"'
INST = f'{CLUSTER}, instance=~"$instance"'
GPU_SEL = f'{INST}, gpu=~"$gpu"'
PROC_GPU = f'{GPU_SEL}, namespace=~"$namespace"'
PROC_CPU = f'{INST}, namespace=~"$namespace"'
ZONE = f'{INST}, zone=~"$zone"'

KWH = 3.6e6  # joules per kWh: energy is exported in joules, people read kWh
# The recorded 5m rates of prometheus/rules/footprint.rules.yml are sampled every minute (the
# footprint-rates group's pinned interval): sum_over_time(rate[range]) * 60 is the range's total, reading
# one recorded series per node or workload instead of every raw GPU and process series.
RULE_STEP_S = 60
WORKLOAD_LABELS = "instance, gpu, pid, comm, user, namespace, pod, slurm_job_id"

UNIT_INTENSITY = "suffix: gCO2e/kWh"
UNIT_GRAMS_PER_HOUR = "suffix: gCO2e/h"
UNIT_WH_PER_GPU_HOUR = "suffix: Wh/GPU-h"

UP_MAPPINGS: list[Json] = [
    {
        "type": "value",
        "options": {
            "0": {"text": "down", "color": "red", "index": 0},
            "1": {"text": "up", "color": "green", "index": 1},
        },
    },
]


# Colours from the bottom up: the first step's value is None (everything below the next step).
Steps = list[tuple[float | None, str]]
NEUTRAL: Steps = [(None, "blue")]
USAGE_STEPS: Steps = [(None, "green"), (0.8, "orange"), (1.0, "red")]  # share of a budget
COVERAGE_STEPS: Steps = [(None, "red"), (0.95, "green")]  # CarbonBudgetCoverageLow below 95 %
ALERT_STEPS: Steps = [(None, "green"), (1.0, "red")]
UP_STEPS: Steps = [(None, "red"), (1.0, "green")]
POWER_SHARE_STEPS: Steps = [(None, "green"), (0.9, "orange"), (0.98, "red")]  # near the cap: throttled
IDLE_STEPS: Steps = [(None, "green"), (0.5, "orange"), (0.9, "red")]  # FootprintGpuIdleWaste at 95 %


def thresholds(steps: Steps) -> Json:
    return {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in steps]}


# --------------------------------------------------------------------------- building blocks


def target(expr: str, legend: str = "", *, instant: bool = False, table: bool = False) -> Json:
    """One Prometheus query of a panel; refIds are filled in by the panel."""
    return {
        "datasource": DATASOURCE,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "instant": instant or table,
        "range": not (instant or table),
        "format": "table" if table else "time_series",
        "editorMode": "code",
    }


def _panel(
    kind: str, title: str, description: str, unit: str, targets: list[Json], w: int, h: int, **extra: Any
) -> Json:
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    panel: Json = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": targets,
    }
    panel.update(extra)
    return panel


def timeseries(
    title: str,
    description: str,
    unit: str,
    targets: list[Json],
    *,
    w: int = 12,
    h: int = 8,
    stack: bool = False,
    overrides: list[Json] | None = None,
    maximum: float | None = None,
    steps: Steps | None = None,
) -> Json:
    p = _panel("timeseries", title, description, unit, targets, w, h)
    if steps:
        # Drawn as dashed lines: where a budget's usage turns orange and red.
        p["fieldConfig"]["defaults"]["thresholds"] = thresholds(steps)
    custom: Json = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 30 if stack else 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "thresholdsStyle": {"mode": "dashed" if steps else "off"},
    }
    p["fieldConfig"]["defaults"]["custom"] = custom
    if maximum is not None:
        p["fieldConfig"]["defaults"]["min"] = 0
        p["fieldConfig"]["defaults"]["max"] = maximum
    p["fieldConfig"]["overrides"] = overrides or []
    p["options"] = {
        "legend": {
            "displayMode": "table",
            "placement": "bottom",
            "showLegend": True,
            "calcs": ["lastNotNull", "mean", "max"],
        },
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return p


def stat(
    title: str,
    description: str,
    unit: str,
    targets: list[Json],
    *,
    w: int = 4,
    h: int = 4,
    time_from: str | None = None,
    decimals: int | None = None,
    mappings: list[Json] | None = None,
    color_mode: str = "value",
    steps: Steps = NEUTRAL,
) -> Json:
    for t in targets:
        t["instant"], t["range"] = True, False
    p = _panel("stat", title, description, unit, targets, w, h)
    p["fieldConfig"]["defaults"]["thresholds"] = thresholds(steps)
    if time_from:
        # A panel-level relative time makes $__range "since midnight" (now/d) or "30 days" (30d).
        p["timeFrom"] = time_from
    if decimals is not None:
        p["fieldConfig"]["defaults"]["decimals"] = decimals
    if mappings:
        p["fieldConfig"]["defaults"]["mappings"] = mappings
    p["options"] = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": color_mode,
        "graphMode": "none",
        "textMode": "auto",
        "justifyMode": "auto",
        "orientation": "auto",
    }
    return p


def bargauge(
    title: str,
    description: str,
    unit: str,
    targets: list[Json],
    *,
    w: int = 6,
    h: int = 8,
    maximum: float | None = None,
    time_from: str | None = None,
    steps: Steps = NEUTRAL,
) -> Json:
    for t in targets:
        t["instant"], t["range"] = True, False
    p = _panel("bargauge", title, description, unit, targets, w, h)
    p["fieldConfig"]["defaults"]["thresholds"] = thresholds(steps)
    p["fieldConfig"]["defaults"]["min"] = 0
    if maximum is not None:
        p["fieldConfig"]["defaults"]["max"] = maximum
    if time_from:
        p["timeFrom"] = time_from
    p["options"] = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "orientation": "horizontal",
        "displayMode": "gradient",
        "showUnfilled": True,
        "valueMode": "color",
        "namePlacement": "left",
        "sizing": "auto",
    }
    return p


def table(
    title: str,
    description: str,
    unit: str,
    targets: list[Json],
    *,
    w: int = 24,
    h: int = 10,
    columns: dict[str, tuple[str, str]] | None = None,
    sort_by: str | None = None,
    hide: tuple[str, ...] = ("Time",),
) -> Json:
    """A sortable table joining instant queries on their labels.

    ``columns`` maps a refId to (column title, unit); Grafana names a query's value column
    "Value #<refId>" when several queries are merged.
    """
    p = _panel("table", title, description, unit, targets, w, h)
    columns = columns or {}
    renames = {f"Value #{ref}": name for ref, (name, _unit) in columns.items()}
    if len(targets) == 1 and "A" in columns:
        renames = {"Value": columns["A"][0]}
    p["fieldConfig"]["defaults"]["custom"] = {"filterable": True, "align": "auto"}
    p["fieldConfig"]["overrides"] = [
        {"matcher": {"id": "byName", "options": name}, "properties": [{"id": "unit", "value": col_unit}]}
        for name, col_unit in ((columns[ref][0], columns[ref][1]) for ref in columns)
    ]
    p["transformations"] = [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {"excludeByName": dict.fromkeys(hide, True), "renameByName": renames}},
    ]
    p["options"] = {
        "showHeader": True,
        "cellHeight": "sm",
        "footer": {"show": False, "reducer": ["sum"], "fields": ""},
        "sortBy": [{"displayName": sort_by, "desc": True}] if sort_by else [],
    }
    return p


def alert_list(title: str, description: str, *, w: int = 12, h: int = 8) -> Json:
    """Firing and pending alerts from Grafana and the Prometheus ruler; reads no metric, so no query."""
    return {
        "type": "alertlist",
        "title": title,
        "description": description,
        "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
        "fieldConfig": {"defaults": {"unit": "none"}, "overrides": []},
        "options": {
            "viewMode": "list",
            "groupMode": "default",
            "groupBy": [],
            "maxItems": 20,
            "sortOrder": 1,
            "dashboardAlerts": False,
            "alertName": "",
            "alertInstanceLabelFilter": "{" + OUR_ALERTS + "}",
            "stateFilter": {"firing": True, "pending": True, "noData": False, "normal": False, "error": True},
            "folder": None,
            "datasource": None,
        },
    }


def layout(panels: list[Json]) -> list[Json]:
    """Flows panels left to right on Grafana's 24-column grid and numbers them."""
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["gridPos"].update({"x": x, "y": y})
        p["id"] = i
        x += w
        row_h = max(row_h, h)
    return panels


def datasource_variable() -> Json:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "includeAll": False,
        "multi": False,
        "options": [],
    }


def query_variable(name: str, label: str, query: str) -> Json:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-variable"},
        "refresh": 2,
        "sort": 3,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "hide": 0,
        "regex": "",
        "options": [],
    }


def cluster_variable() -> Json:
    """Clusters writing to this Prometheus (their external or target label); "All" also matches none."""
    return query_variable("cluster", "Cluster", "label_values(footprint_build_info, cluster)")


def instance_variable() -> Json:
    return query_variable(
        "instance", "Node", 'label_values(footprint_build_info{cluster=~"$cluster"}, instance)'
    )


def gpu_variable() -> Json:
    return query_variable("gpu", "GPU", f"label_values(footprint_gpu_info{{{INST}}}, gpu)")


def namespace_variable() -> Json:
    return query_variable(
        "namespace",
        "Namespace",
        f"label_values(footprint_process_gpu_energy_joules_total{{{INST}}}, namespace)",
    )


def zone_variable() -> Json:
    return query_variable(
        "zone",
        "Grid zone",
        f"label_values(footprint_grid_carbon_intensity_grams_per_kwh{{{INST}}}, zone)",
    )


def links() -> list[Json]:
    return [
        {
            "type": "dashboards",
            "tags": ["footprint"],
            "asDropdown": True,
            "title": "Footprint dashboards",
            "includeVars": True,
            "keepTime": True,
            "icon": "external link",
            "targetBlank": False,
            "tooltip": "",
            "url": "",
        }
    ]


def dashboard(
    uid: str,
    title: str,
    description: str,
    tags: list[str],
    variables: list[Json],
    panels: list[Json],
    time_from: str = "now-6h",
) -> Json:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": [*TAGS, *tags],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "refresh": "30s",
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "links": links(),
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {"list": [datasource_variable(), cluster_variable(), *variables]},
        "panels": layout(panels),
    }


# --------------------------------------------------------------------------- the dashboards

# Node totals: GPU + CPU, plus the node's unmetered part where a BMC is read (absent elsewhere).
ENERGY_ALL = '{__name__=~"footprint_(gpu|cpu|node_unmetered)_energy_joules_total", %s}'
EMISSIONS_ALL = '{__name__=~"footprint_(gpu|cpu|node_unmetered)_emissions_grams_total", %s}'
PROCESS_ENERGY = '{__name__=~"footprint_process_(gpu|cpu)_energy_joules_total", %s}'
PROCESS_EMISSIONS = '{__name__=~"footprint_process_(gpu|cpu)_emissions_grams_total", %s}'


def _recorded_total(series: str, sel: str, by: str = "") -> str:
    """The total of a recorded 5m rate over the dashboard's range (see RULE_STEP_S)."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (sum_over_time({series}{{{sel}}}[$__range])) * {RULE_STEP_S}"


def headline_stats() -> list[Json]:
    """Power now, today's and the last 30 days' energy and CO2e, and our firing alerts."""
    return [
        stat(
            "Power now",
            "Whole-node input power from the BMC where a node source is configured, else GPU board "
            "power plus CPU package power, of the selected nodes.",
            "watt",
            [target(f"sum(instance:footprint_power_watts:sum{{{INST}}})")],
        ),
        stat(
            "Energy today",
            "GPU and CPU energy, plus the unmetered rest of the node where a BMC is read, since midnight "
            "(browser time zone), kWh, from the recorded 5m rates.",
            "kwatth",
            [target(f"{_recorded_total('instance:footprint_energy_joules:rate5m', INST)} / {KWH:g}")],
            time_from="now/d",
            decimals=2,
        ),
        stat(
            "CO2e today",
            "Operational emissions (average grid signal, PUE included) of GPUs and CPUs "
            "since midnight, kg CO2e, from the recorded 5m rates.",
            "masskg",
            [target(f"{_recorded_total('instance:footprint_emissions_grams:rate5m', INST)} / 1000")],
            time_from="now/d",
            decimals=3,
        ),
        stat(
            "Energy, 30 days",
            "GPU and CPU energy, plus the unmetered rest of the node where a BMC is read, over the last "
            "30 days, kWh (recording rule instance:footprint_energy_joules:increase30d).",
            "kwatth",
            [target(f"sum(instance:footprint_energy_joules:increase30d{{{INST}}}) / {KWH:g}")],
            decimals=1,
        ),
        stat(
            "CO2e, 30 days",
            "Operational emissions of GPUs and CPUs over the last 30 days, kg CO2e (recording rule "
            "instance:footprint_emissions_grams:increase30d).",
            "masskg",
            [target(f"sum(instance:footprint_emissions_grams:increase30d{{{INST}}}) / 1000")],
            decimals=2,
        ),
        stat(
            "Alerts firing",
            "Footprint and carbon-budget alerts firing now in Prometheus (not Watchdog, not other "
            "teams' alerts); 0 when none.",
            "none",
            [target(f'count(ALERTS{{alertstate="firing", {OUR_ALERTS}}}) or vector(0)')],
            color_mode="background",
            steps=ALERT_STEPS,
        ),
    ]


def top_emitters() -> list[Json]:
    """The ten nodes, namespaces, Slurm jobs and users with the most CO2e over the range (recorded rates).

    The workload levels are recorded per cluster, not per node: the Node variable does not narrow them.
    """
    panels = [
        bargauge(
            "Top nodes by CO2e",
            "The ten nodes with the most operational GPU and CPU emissions over the "
            "dashboard's time range, grams CO2e.",
            "massg",
            [
                target(
                    "topk(10, "
                    + _recorded_total("instance:footprint_emissions_grams:rate5m", INST, "cluster, instance")
                    + ")",
                    "{{instance}}",
                )
            ],
        )
    ]
    for title, level, by, legend in (
        ("namespaces", "namespace", "cluster, namespace", "{{namespace}}"),
        ("Slurm jobs", "slurm_job_id", "cluster, slurm_job_id", "job {{slurm_job_id}}"),
        ("users", "user", "cluster, user", "{{user}}"),
    ):
        panels.append(
            bargauge(
                f"Top {title} by CO2e",
                f"The ten {title} whose processes emitted the most over the time range (GPU and CPU, "
                "attributed), grams CO2e, in the selected clusters (the Node variable does not apply).",
                "massg",
                [
                    target(
                        "topk(10, "
                        + _recorded_total(f"{level}:footprint_process_emissions_grams:rate5m", CLUSTER, by)
                        + ")",
                        legend,
                    )
                ],
            )
        )
    return panels


def budget_overview() -> list[Json]:
    """Budget usage against thresholds and our alerts, for the fleet overview."""
    return [
        bargauge(
            "Carbon budget usage",
            "Share of each carbon budget (prometheus/budgets.yml) used in its current calendar period or "
            "rolling window; orange from 80%, red at 100% (exhausted).",
            "percentunit",
            [target(BUDGET_USAGE, BUDGET_LEGEND)],
            w=12,
            maximum=1,
            steps=USAGE_STEPS,
        ),
        alert_list(
            "Firing alerts",
            "Footprint and carbon-budget alerts firing or pending now, from the Prometheus data "
            "source's rules (and Grafana-managed budget rules where those are used).",
            w=12,
        ),
    ]


def fleet_overview() -> Json:
    emissions = EMISSIONS_ALL % INST
    panels = [
        *headline_stats(),
        timeseries(
            "Power by node",
            "GPU and CPU power of each node, stacked: where the fleet's power goes.",
            "watt",
            [
                target(f"sum by (instance) (footprint_gpu_power_watts{{{INST}}})", "{{instance}} GPUs"),
                target(f"sum by (instance) (footprint_cpu_power_watts{{{INST}}})", "{{instance}} CPUs"),
            ],
            stack=True,
        ),
        timeseries(
            "Grid carbon intensity by zone",
            "Carbon intensity of the grid each zone's nodes draw "
            "from, as used for the emissions (average and, where configured, marginal signal).",
            UNIT_INTENSITY,
            [
                target(
                    f"avg by (zone, signal) (footprint_grid_carbon_intensity_grams_per_kwh{{{INST}}})",
                    "{{zone}} {{signal}}",
                )
            ],
        ),
        timeseries(
            "Emission rate by node",
            "Operational CO2e per hour of GPUs and CPUs on each node.",
            UNIT_GRAMS_PER_HOUR,
            [target(f"sum by (instance) (rate({emissions}[$__rate_interval])) * 3600", "{{instance}}")],
            w=24,
            stack=True,
        ),
        *top_emitters(),
        *budget_overview(),
    ]
    return dashboard(
        "footprint-fleet",
        "Footprint / Fleet overview",
        "How much power, energy and CO2e the fleet uses, where, by whom, against which budget.",
        ["fleet"],
        [instance_variable()],
        panels,
        time_from="now-24h",
    )


def node_gpu() -> Json:
    legend = "{{instance}} GPU {{gpu}}"
    panels = [
        timeseries(
            "GPU power against limit",
            "Board power of each GPU (solid) and its enforced power limit (dashed).",
            "watt",
            [
                target(f"footprint_gpu_power_watts{{{GPU_SEL}}}", legend),
                target(f"footprint_gpu_power_limit_watts{{{GPU_SEL}}}", legend + " limit"),
            ],
            overrides=[
                {
                    "matcher": {"id": "byRegexp", "options": ".* limit$"},
                    "properties": [
                        {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                        {"id": "custom.fillOpacity", "value": 0},
                    ],
                }
            ],
        ),
        bargauge(
            "Power as share of limit",
            "Latest board power divided by the enforced power limit; near 100% the GPU is power-capped.",
            "percentunit",
            [
                target(
                    f"footprint_gpu_power_watts{{{GPU_SEL}}} / footprint_gpu_power_limit_watts{{{GPU_SEL}}}",
                    legend,
                )
            ],
            w=12,
            maximum=1,
            steps=POWER_SHARE_STEPS,
        ),
        timeseries(
            "GPU utilisation",
            "Fraction of time the SMs were busy.",
            "percentunit",
            [target(f"footprint_gpu_utilization_ratio{{{GPU_SEL}}}", legend)],
            w=8,
            maximum=1,
        ),
        timeseries(
            "GPU temperature",
            "GPU core temperature.",
            "celsius",
            [target(f"footprint_gpu_temperature_celsius{{{GPU_SEL}}}", legend)],
            w=8,
        ),
        timeseries(
            "GPU memory in use",
            "Memory in use as a share of the GPU's installed memory.",
            "percentunit",
            [
                target(
                    f"footprint_gpu_memory_used_bytes{{{GPU_SEL}}} / "
                    f"footprint_gpu_memory_total_bytes{{{GPU_SEL}}}",
                    legend,
                )
            ],
            w=8,
            maximum=1,
        ),
        timeseries(
            "Attributed and idle GPU power",
            "GPU power charged to processes (attributed) and to no "
            "process (idle, unattributed), stacked per GPU: their sum is the GPU's power.",
            "watt",
            [
                target(
                    "sum by (instance, gpu) (rate(footprint_process_gpu_energy_joules_total"
                    f"{{{GPU_SEL}}}[$__rate_interval]))",
                    legend + " attributed",
                ),
                target(
                    "sum by (instance, gpu) (rate(footprint_gpu_unattributed_energy_joules_total"
                    f"{{{GPU_SEL}}}[$__rate_interval]))",
                    legend + " idle",
                ),
            ],
            stack=True,
        ),
        bargauge(
            "GPU energy",
            "Energy of each GPU over the dashboard's time range, kWh.",
            "kwatth",
            [target(f"increase(footprint_gpu_energy_joules_total{{{GPU_SEL}}}[$__range]) / {KWH:g}", legend)],
        ),
        bargauge(
            "Idle share of GPU energy",
            "Share of each GPU's energy over the time range that no process "
            "used (idle power): high values are GPUs burning power for nothing.",
            "percentunit",
            [
                target(
                    "sum by (instance, gpu) (increase(footprint_gpu_unattributed_energy_joules_total"
                    f"{{{GPU_SEL}}}[$__range])) / sum by (instance, gpu) (increase("
                    f"footprint_gpu_energy_joules_total{{{GPU_SEL}}}[$__range]))",
                    legend,
                )
            ],
            maximum=1,
            steps=IDLE_STEPS,
        ),
        table(
            "GPUs",
            "Every GPU with its model, driver, PCI bus id and whether it answers (up = 1).",
            "none",
            [
                target(f"footprint_gpu_info{{{GPU_SEL}}}", table=True),
                target(f"footprint_gpu_up{{{GPU_SEL}}}", table=True),
            ],
            columns={"A": ("info", "none"), "B": ("up", "none")},
            hide=("Time", "__name__", "job", "Value #A"),
            w=24,
            h=6,
        ),
        timeseries(
            "CPU power by package and method",
            "CPU package (and DRAM) power; method rapl is measured "
            "by the RAPL counters, estimated is a model of CPU time used when RAPL is unreadable.",
            "watt",
            [target(f"footprint_cpu_power_watts{{{INST}}}", "{{instance}} {{package}} ({{method}})")],
            stack=True,
        ),
        stat(
            "CPU power method",
            "Number of CPU packages measured by RAPL and estimated from CPU time.",
            "none",
            [target(f"count by (method) (footprint_cpu_power_watts{{{INST}}})", "{{method}}")],
            w=6,
            h=8,
        ),
        bargauge(
            "CPU energy",
            "CPU package energy over the time range, kWh.",
            "kwatth",
            [
                target(
                    f"sum by (instance, package) (increase(footprint_cpu_energy_joules_total{{{INST}}}"
                    f"[$__range])) / {KWH:g}",
                    "{{instance}} {{package}}",
                )
            ],
        ),
        *node_power_panels(),
        timeseries(
            "Sources up",
            "1 when a source's last read worked (nvml, simulated, replay, rapl, ...); "
            "0 means its series are missing and errors are counted.",
            "none",
            [target(f"footprint_source_up{{{INST}}}", "{{instance}} {{source}}")],
            w=8,
            maximum=1,
        ),
        timeseries(
            "Sampler tick duration",
            "Time the exporter's last sampler tick took, hardware reads included.",
            "s",
            [target(f"footprint_sample_duration_seconds{{{INST}}}", "{{instance}}")],
            w=8,
        ),
        timeseries(
            "Snapshot age",
            "Seconds since the snapshot being served was published; growing values "
            "mean the sampler is stuck.",
            "s",
            [target(f"footprint_snapshot_age_seconds{{{INST}}}", "{{instance}}")],
            w=8,
        ),
    ]
    return dashboard(
        "footprint-node-gpu",
        "Footprint / Node and GPU",
        "Per-GPU power against limit, utilisation, temperature, energy, attributed versus idle "
        "energy, and CPU power with how it was measured.",
        ["node", "gpu"],
        [instance_variable(), gpu_variable()],
        panels,
        time_from="now-1h",
    )


def node_power_panels() -> list[Json]:
    """The node (BMC) row of the node dashboard: what the node draws, and what the components cover."""
    # One query for CPU and DRAM: every CPU domain is "CPU" unless its package label ends in -dram.
    part = (
        f'label_replace(label_replace(footprint_cpu_power_watts{{{INST}}}, "part", "CPU", "package", ".*"), '
        '"part", "DRAM", "package", ".*-dram")'
    )
    return [
        timeseries(
            "Node power: GPU, CPU, DRAM and unmetered",
            "Stacked: GPU board power, CPU package and DRAM power, and the unmetered rest of the node "
            "(fans, NICs, storage, power supply losses) from the BMC; the dashed line is the node's input "
            "power as the BMC reads it. Without a node source only GPU and CPU show.",
            "watt",
            [
                target(f"sum by (instance) (footprint_gpu_power_watts{{{INST}}})", "{{instance}} GPU"),
                target(f"sum by (instance, part) ({part})", "{{instance}} {{part}}"),
                target(
                    "sum by (instance) (rate(footprint_node_unmetered_energy_joules_total"
                    f"{{{INST}}}[$__rate_interval]))",
                    "{{instance}} unmetered",
                ),
                target(f"footprint_node_power_watts{{{INST}}}", "{{instance}} node input ({{method}})"),
            ],
            w=16,
            stack=True,
            overrides=[
                {
                    "matcher": {"id": "byRegexp", "options": ".* node input .*"},
                    "properties": [
                        {"id": "custom.stacking", "value": {"mode": "none", "group": "A"}},
                        {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                        {"id": "custom.fillOpacity", "value": 0},
                    ],
                }
            ],
        ),
        bargauge(
            "Unmetered share of node energy",
            "Share of the node's energy over the time range that no GPU, CPU or DRAM reading covers; "
            "it is node-level and charged to no workload.",
            "percentunit",
            [
                target(
                    f"sum by (instance) (increase(footprint_node_unmetered_energy_joules_total{{{INST}}}"
                    f"[$__range])) / sum by (instance) (increase(footprint_node_energy_joules_total{{{INST}}}"
                    "[$__range]))",
                    "{{instance}}",
                )
            ],
            w=8,
            maximum=1,
        ),
        table(
            "Node power source",
            "Where the BMC's figures come from (chassis, resource) and what node totals rest on now: "
            "basis node (the BMC's reading) or components (GPU + CPU + DRAM only, the BMC is failing).",
            "none",
            [
                target(f"footprint_node_reading_info{{{INST}}}", table=True),
                target(f"footprint_node_energy_basis_info{{{INST}}}", table=True),
            ],
            columns={"A": ("reading", "none"), "B": ("basis", "none")},
            hide=("Time", "__name__", "job", "Value #A", "Value #B"),
            w=24,
            h=5,
        ),
    ]


def _workload_table(title: str, description: str, by: str, filter_label: str, sort: str) -> Json:
    # GPU and CPU series in one selector: CPU series have no gpu label, which "All" (.*) matches.
    sel = f'{PROC_GPU}, {filter_label}!=""'
    return table(
        title,
        description,
        "kwatth",
        [
            target(
                f"sum by ({by}) (increase(" + PROCESS_ENERGY % sel + f"[$__range])) / {KWH:g}", table=True
            ),
            target(
                f"sum by ({by}) (increase(footprint_process_gpu_energy_joules_total{{{sel}}}[$__range]))"
                f" / {KWH:g}",
                table=True,
            ),
            target(f"sum by ({by}) (increase(" + PROCESS_EMISSIONS % sel + "[$__range]))", table=True),
            target(
                f"sum by ({by}) (increase(footprint_process_gpu_embodied_emissions_grams_total{{{sel}}}"
                "[$__range]))",
                table=True,
            ),
        ],
        columns={
            "A": ("Energy", "kwatth"),
            "B": ("GPU energy", "kwatth"),
            "C": ("Operational CO2e", "massg"),
            "D": ("Embodied CO2e", "massg"),
        },
        sort_by=sort,
        w=12,
        h=9,
    )


# Recording series of prometheus/rules/inference.rules.yml. They join the exporter's per-pod energy with
# the inference servers' token counters on (cluster, namespace, pod), so they carry no instance label.
INFERENCE_SEL = f'{CLUSTER}, namespace=~"$namespace"'
INFERENCE_LEGEND = "{{namespace}}/{{pod}} {{model_name}}"
UNIT_TOKENS_PER_S = "suffix: tokens/s"


def inference_efficiency_panels() -> list[Json]:
    """The "Inference efficiency" panel set: energy and carbon per 1,000 generated tokens beside tokens/s.

    Figures per 1,000 tokens read better than per token (400 J rather than 0.4 J). A pod shows up only while
    its server generated tokens in the last 5 minutes (no tokens, no series: never 0 or Inf). The
    full-width table comes first so the set starts on its own row and the pairs beside each other stay
    paired whatever panels come before it.
    """
    per_model = "namespace_pod_model_name:footprint_%s:rate5m{" + INFERENCE_SEL + "}"
    per_pod = "namespace_pod:footprint_%s:rate5m{" + INFERENCE_SEL + "}"
    return [
        table(
            "Inference efficiency by pod",
            "Each inference pod now (5-minute windows): energy, location-based CO2e and SCI per 1,000 "
            "generated tokens, energy per answered request and tokens per second.",
            "joule",
            [
                target("1000 * " + per_pod % "joules_per_token", table=True),
                target("1000 * " + per_pod % "grams_per_token", table=True),
                target("1000 * " + per_pod % "sci_grams_per_token", table=True),
                target(per_pod % "joules_per_request", table=True),
                target(per_pod % "inference_generation_tokens", table=True),
            ],
            columns={
                "A": ("J / 1k tokens", "joule"),
                "B": ("CO2e / 1k tokens", "massg"),
                "C": ("SCI / 1k tokens", "massg"),
                "D": ("J / request", "joule"),
                "E": ("Tokens/s", UNIT_TOKENS_PER_S),
            },
            sort_by="J / 1k tokens",
            w=24,
            h=8,
        ),
        timeseries(
            "Inference: energy per 1,000 generated tokens",
            "GPU energy attributed to each inference pod per 1,000 tokens it generated, by model (a pod "
            "serving several models splits its energy by their share of its tokens). 5-minute windows.",
            "joule",
            [target("1000 * " + per_model % "joules_per_token", INFERENCE_LEGEND)],
        ),
        timeseries(
            "Inference: generated tokens per second",
            "Tokens each pod generated per second (5-minute rate), from the server's own counter (vLLM, "
            "SGLang, TGI, Triton with TensorRT-LLM): the denominator of the energy per token beside it, "
            "over the same window.",
            UNIT_TOKENS_PER_S,
            [target(per_model % "inference_generation_tokens", INFERENCE_LEGEND)],
        ),
        timeseries(
            "Inference: CO2e per 1,000 generated tokens",
            "Location-based operational CO2e (grid average intensity, PUE included) of the pod's GPU "
            "energy per 1,000 generated tokens, by model.",
            "massg",
            [target("1000 * " + per_model % "grams_per_token", INFERENCE_LEGEND)],
        ),
        timeseries(
            "Inference: SCI per 1,000 tokens",
            "Green Software Foundation SCI with R = 1,000 generated tokens: (operational CO2e of the pod's "
            "GPU and CPU energy + embodied CO2e of the GPUs it holds) per 1,000 tokens, by model.",
            "massg",
            [target("1000 * " + per_model % "sci_grams_per_token", INFERENCE_LEGEND)],
        ),
        bargauge(
            "Inference: energy per 1,000 tokens by model, all pods",
            "Each model across every pod serving it: their GPU energy over their generated tokens, idle "
            "serving pods included (their energy is part of what the model's tokens cost).",
            "joule",
            [target(f"1000 * model_name:footprint_joules_per_token:rate5m{{{CLUSTER}}}", "{{model_name}}")],
            w=24,
            h=6,
        ),
    ]


def workloads() -> Json:
    proc_by = WORKLOAD_LABELS
    panels = [
        table(
            "Processes",
            "GPU energy, operational CO2e and attributed power of every process over the "
            "dashboard's time range; click a column header to sort.",
            "kwatth",
            [
                target(
                    f"sum by ({proc_by}) (increase(footprint_process_gpu_energy_joules_total{{{PROC_GPU}}}"
                    f"[$__range])) / {KWH:g}",
                    table=True,
                ),
                target(
                    f"sum by ({proc_by}) (increase(footprint_process_gpu_emissions_grams_total{{{PROC_GPU}}}"
                    "[$__range]))",
                    table=True,
                ),
                target(f"sum by ({proc_by}) (footprint_process_gpu_power_watts{{{PROC_GPU}}})", table=True),
            ],
            columns={"A": ("GPU energy", "kwatth"), "B": ("CO2e", "massg"), "C": ("Power now", "watt")},
            sort_by="GPU energy",
            h=10,
        ),
        _workload_table(
            "Pods",
            "Energy (GPU and CPU) and emissions of each Kubernetes pod over the time range.",
            "namespace, pod",
            "pod",
            "Operational CO2e",
        ),
        _workload_table(
            "Slurm jobs",
            "Energy (GPU and CPU) and emissions of each Slurm job over the time range.",
            "slurm_job_id, user",
            "slurm_job_id",
            "Operational CO2e",
        ),
        _workload_table(
            "Users",
            "Energy (GPU and CPU) and emissions of each user's processes over the time range.",
            "user",
            "user",
            "Operational CO2e",
        ),
        bargauge(
            "Energy per GPU-hour by user",
            "Attributed GPU energy per hour a user's processes held a GPU "
            "(the average attributed power while running): compares how hard workloads drive the GPUs "
            "they hold.",
            UNIT_WH_PER_GPU_HOUR,
            [
                target(
                    f"sum by (user) (sum_over_time(footprint_process_gpu_power_watts{{{PROC_GPU}}}"
                    "[$__range]))"
                    f" / sum by (user) (count_over_time(footprint_process_gpu_power_watts{{{PROC_GPU}}}"
                    "[$__range]))",
                    "{{user}}",
                )
            ],
            w=12,
            h=9,
        ),
        timeseries(
            "Share of each GPU by process",
            "Each process's share of its GPU's energy (stacked per GPU); "
            "the gap to 100% is idle power no process used.",
            "percentunit",
            [
                target(
                    "sum by (instance, gpu, pid, comm) (rate(footprint_process_gpu_energy_joules_total"
                    f"{{{PROC_GPU}}}[$__rate_interval])) / on (instance, gpu) group_left sum by "
                    "(instance, gpu) (rate(footprint_gpu_energy_joules_total"
                    f"{{{GPU_SEL}}}[$__rate_interval]))",
                    "{{instance}} GPU {{gpu}} {{comm}} ({{pid}})",
                )
            ],
            stack=True,
            maximum=1,
        ),
        timeseries(
            "Attributed GPU power by user",
            "GPU power attributed to each user's processes, stacked.",
            "watt",
            [target(f"sum by (user) (footprint_process_gpu_power_watts{{{PROC_GPU}}})", "{{user}}")],
            stack=True,
        ),
        timeseries(
            "Attributed CPU power by user",
            "CPU power attributed to each user's processes by their CPU time, stacked.",
            "watt",
            [target(f"sum by (user) (footprint_process_cpu_power_watts{{{PROC_CPU}}})", "{{user}}")],
            stack=True,
        ),
        *inference_efficiency_panels(),
    ]
    return dashboard(
        "footprint-workloads",
        "Footprint / Workloads",
        "Energy and emissions per process, pod, Slurm job and user; each process's share of its "
        "GPU and energy per GPU-hour; inference efficiency (energy and CO2e per 1,000 tokens).",
        ["workloads"],
        [instance_variable(), gpu_variable(), namespace_variable()],
        panels,
        time_from="now-6h",
    )


def budget_panels() -> list[Json]:
    """Every budget: usage over time, the table of its figures, coverage and projection against thresholds."""
    return [
        timeseries(
            "Carbon budget usage",
            "Share of each carbon budget used in its current calendar period (it starts again from 0 "
            "when the period starts) or rolling window; dashed lines at 80% and 100%.",
            "percentunit",
            [target(BUDGET_USAGE, BUDGET_LEGEND)],
            steps=USAGE_STEPS,
        ),
        bargauge(
            "Carbon budget projection",
            "Each budget's usage at the end of its period, projected from the period so far and from the "
            "last day (the lower of the two); empty before a day of data. Red: CarbonBudgetProjectedOverrun.",
            "percentunit",
            [target(f"footprint:budget_projected_usage:ratio{{{BUDGET_SEL}}}", BUDGET_LEGEND)],
            w=6,
            steps=USAGE_STEPS,
        ),
        bargauge(
            "Carbon budget coverage",
            "Share of each budget's period for which the rules ran with the exporters up: below 95% "
            "the usage undercounts (CarbonBudgetCoverageLow).",
            "percentunit",
            [target(f"footprint:budget_coverage:ratio{{{BUDGET_SEL}}}", BUDGET_LEGEND)],
            w=6,
            maximum=1,
            steps=COVERAGE_STEPS,
        ),
        table(
            "Carbon budgets",
            "Every budget of prometheus/budgets.yml: scope and period, emissions in the current period "
            "against the budget, usage, coverage, burn rate over the last day (1 = would use exactly "
            "the budget in one period) and the time left at the last day's pace.",
            "massg",
            [
                target(f"footprint:budget_used_grams{{{BUDGET_SEL}}}", table=True),
                target(f"footprint:budget_grams{{{BUDGET_SEL}}}", table=True),
                target(BUDGET_USAGE, table=True),
                target(f"footprint:budget_coverage:ratio{{{BUDGET_SEL}}}", table=True),
                target(f"footprint:budget_burn_rate:rate1d{{{BUDGET_SEL}}}", table=True),
                target(f"footprint:budget_exhaustion_seconds{{{BUDGET_SEL}}}", table=True),
            ],
            columns={
                "A": ("Used", "massg"),
                "B": ("Budget", "massg"),
                "C": ("Usage", "percentunit"),
                "D": ("Coverage", "percentunit"),
                "E": ("Burn rate 1d", "none"),
                "F": ("Exhausted in", "s"),
            },
            hide=("Time", "__name__"),
            sort_by="Usage",
            h=8,
        ),
    ]


def carbon() -> Json:
    op = EMISSIONS_ALL % INST
    panels = [
        timeseries(
            "Grid carbon intensity",
            "Carbon intensity in use over time per zone, average and (with a "
            "marginal provider such as WattTime) marginal signal.",
            UNIT_INTENSITY,
            [
                target(
                    f"avg by (zone, signal) (footprint_grid_carbon_intensity_grams_per_kwh{{{ZONE}}})",
                    "{{zone}} {{signal}}",
                )
            ],
            w=16,
        ),
        stat(
            "Intensity now",
            "Latest carbon intensity per zone and signal.",
            UNIT_INTENSITY,
            [
                target(
                    f"avg by (zone, signal) (footprint_grid_carbon_intensity_grams_per_kwh{{{ZONE}}})",
                    "{{zone}} {{signal}}",
                )
            ],
            w=8,
            h=8,
        ),
        stat(
            "Forecast minimum, next 24 h",
            "Lowest forecast intensity of the next 24 hours per zone (only with a provider that forecasts).",
            UNIT_INTENSITY,
            [
                target(
                    f"min by (zone, signal) (footprint_carbon_forecast_min_grams_per_kwh{{{ZONE}}})",
                    "{{zone}} {{signal}}",
                )
            ],
            w=6,
        ),
        stat(
            "Forecast minimum begins",
            "When the lowest forecast intensity of the next 24 hours begins: the "
            "greenest time to start deferrable work.",
            "dateTimeFromNow",
            [
                target(
                    "min by (zone, signal) "
                    f"(footprint_carbon_forecast_min_timestamp_seconds{{{ZONE}}}) * 1000",
                    "{{zone}} {{signal}}",
                )
            ],
            w=6,
        ),
        stat(
            "Providers up",
            "1 if the carbon provider's last refresh worked; a down provider falls through to "
            "the next in the chain, ending at the embedded table.",
            "none",
            [target(f"min by (provider) (footprint_carbon_provider_up{{{INST}}})", "{{provider}}")],
            w=6,
            mappings=UP_MAPPINGS,
            color_mode="background",
            steps=UP_STEPS,
        ),
        stat(
            "PUE",
            "Power usage effectiveness applied to every emission.",
            "none",
            [target(f"avg(footprint_pue_ratio{{{INST}}})")],
            w=6,
            decimals=2,
        ),
        timeseries(
            "Intensity age",
            "Age of the carbon intensity in use per zone and provider; a growing age "
            "means the provider is stale and the value is held.",
            "s",
            [
                target(
                    f"max by (zone, provider) (footprint_carbon_intensity_age_seconds{{{ZONE}}})",
                    "{{zone}} {{provider}}",
                )
            ],
        ),
        table(
            "Intensity sources",
            "Where the intensity in use comes from per node: zone, provider, signal, "
            "data source and year (for the embedded table).",
            "none",
            [target(f"footprint_carbon_intensity_info{{{ZONE}}}", table=True)],
            hide=("Time", "__name__", "job", "Value"),
            w=12,
            h=8,
        ),
        table(
            "Intensity data time",
            "The data's own time of the intensity in use (the start of the period it describes; for the "
            "embedded table the end of its year) and whether the provider marks it an estimate or forecast.",
            "none",
            [
                target(f"footprint_carbon_intensity_timestamp_seconds{{{ZONE}}} * 1000", table=True),
                target(f"footprint_carbon_intensity_estimated{{{ZONE}}}", table=True),
            ],
            columns={"A": ("Data time", "dateTimeAsIso"), "B": ("Estimated", "none")},
            hide=("Time", "__name__", "job"),
            w=12,
            h=8,
        ),
        table(
            "Provider errors",
            "Failed refreshes and refused values per provider and kind over the time range: timeout, "
            "http_*, malformed, auth, implausible (outside carbon.plausible), basis (another "
            "emission-factor basis than the chain's).",
            "none",
            [
                target(
                    "sum by (provider, kind) "
                    f"(increase(footprint_carbon_provider_errors_total{{{INST}}}[$__range]))",
                    table=True,
                )
            ],
            columns={"A": ("Errors", "none")},
            sort_by="Errors",
            w=12,
            h=8,
        ),
        stat(
            "Operational CO2e",
            "GPU and CPU emissions over the time range from the average grid signal, PUE included.",
            "masskg",
            [target(f"{_recorded_total('instance:footprint_emissions_grams:rate5m', INST)} / 1000")],
            w=6,
            decimals=3,
        ),
        stat(
            "Marginal CO2e",
            "The same energy weighted with the marginal signal (only with a marginal "
            "provider): the emissions the load caused at the margin.",
            "masskg",
            [
                target(
                    'sum(increase({__name__=~"footprint_(gpu|cpu)_marginal_emissions_grams_total", '
                    f"{INST}}}[$__range])) / 1000"
                )
            ],
            w=6,
            decimals=3,
        ),
        stat(
            "Embodied CO2e",
            "Manufacturing emissions of GPUs and nodes amortised over their service life, "
            "for the time range.",
            "masskg",
            [target(f"{_recorded_total('instance:footprint_embodied_emissions_grams:rate5m', INST)} / 1000")],
            w=6,
            decimals=3,
        ),
        stat(
            "Water",
            "Site water use for the energy over the time range (energy x WUE; only with carbon.wue set).",
            "litre",
            [target(f"sum(increase(footprint_water_litres_total{{{INST}}}[$__range]))")],
            w=6,
            decimals=2,
        ),
        stat(
            "Market-based CO2e",
            "GHG Protocol Scope 2 market-based emissions over the time range (carbon.market: "
            "contractual instruments, then the supplier factor or residual mix; only with carbon.market). "
            "Report it beside the location-based figure, never instead of it.",
            "masskg",
            [
                target(
                    'sum(increase({__name__=~"footprint_(gpu|cpu)_market_emissions_grams_total", '
                    f"{INST}}}[$__range])) / 1000"
                )
            ],
            w=6,
            decimals=3,
        ),
        timeseries(
            "Location- and market-based emission rate",
            "Scope 2 emissions per hour by both methods side by side: location-based (grid average "
            "signal) and market-based (carbon.market).",
            UNIT_GRAMS_PER_HOUR,
            [
                target(
                    'sum(rate({__name__=~"footprint_(gpu|cpu)_emissions_grams_total", '
                    f"{INST}}}[$__rate_interval])) * 3600",
                    "location-based",
                ),
                target(
                    'sum(rate({__name__=~"footprint_(gpu|cpu)_market_emissions_grams_total", '
                    f"{INST}}}[$__rate_interval])) * 3600",
                    "market-based",
                ),
            ],
            w=18,
        ),
        table(
            "Emission factors",
            "Every fixed factor the figures use, with its source and the year it describes: PUE, WUE, "
            "the embedded grid fallback, market instruments, supplier and residual factors, embodied "
            "figures of the GPU models present.",
            "none",
            [target(f"footprint_emission_factor{{{INST}}}", table=True)],
            columns={"A": ("Value", "none")},
            hide=("Time", "__name__", "job"),
            h=8,
        ),
        timeseries(
            "Operational and embodied emission rate",
            "Operational (average signal) and embodied CO2e per hour, stacked.",
            UNIT_GRAMS_PER_HOUR,
            [
                target(f"sum(rate({op}[$__rate_interval])) * 3600", "operational"),
                target(
                    'sum(rate({__name__=~"footprint_(gpu|node)_embodied_emissions_grams_total", '
                    f"{INST}}}[$__rate_interval])) * 3600",
                    "embodied",
                ),
            ],
            stack=True,
        ),
        *budget_panels(),
    ]
    return dashboard(
        "footprint-carbon",
        "Footprint / Carbon",
        "Grid carbon intensity over time (average and marginal), the forecast minimum and when it "
        "comes, provider health and staleness, operational versus embodied emissions and water.",
        ["carbon"],
        [instance_variable(), zone_variable()],
        panels,
        time_from="now-24h",
    )


# --------------------------------------------------------------------------- output


def build() -> dict[str, Json]:
    """Every dashboard, keyed by its file name in grafana/dashboards/."""
    return {
        "fleet-overview.json": fleet_overview(),
        "node-gpu.json": node_gpu(),
        "workloads.json": workloads(),
        "carbon.json": carbon(),
    }


def render(dash: Json) -> str:
    return json.dumps(dash, indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON is stale")
    parser.add_argument("--out", type=Path, default=DASHBOARD_DIR)
    args = parser.parse_args(argv)
    stale = []
    for name, dash in build().items():
        path = args.out / name
        text = render(dash)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(
            f"stale dashboards (run python grafana/build_dashboards.py): {', '.join(stale)}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
