"""Carbon budgets: validate prometheus/budgets.yml and render it into Prometheus (and Grafana) rules.

Budgets are data. Each budget renders to one constant recording rule (``footprint:budget_grams``, its size
and labels); a selector that cannot be joined against a recorded level adds one rule for its emissions
rate. Everything else (usage over rolling and calendar periods, coverage, burn rates, projections and the
alerts) is a fixed set of rules that works on all budgets at once, keyed by the ``budget`` label, so 500
budgets cost 500 small rules, not 500 copies of the logic. The PromQL is explained in docs/prometheus.md.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from exporter import catalogue
from exporter.durations import parse_duration
from exporter.errors import ConfigError, shown
from exporter.yaml_input import read_yaml

DEFAULT_BUDGETS = Path("prometheus/budgets.yml")
DEFAULT_RULES_OUT = Path("prometheus/rules/budgets.rules.yml")
DEFAULT_GRAFANA_OUT = Path("grafana/provisioning/alerting/budgets.yml")
RUNBOOK_BASE = "https://github.com/ai-footprint/ai-footprint-exporter/blob/main/docs/runbook.md#runbook-"
RULE_GROUP = "footprint-budgets"
CHECKPOINT_GROUP = "footprint-budgets-checkpoint"
CALENDAR_PERIODS = ("month", "quarter", "year")
# The exporters' scrape health, the same job pattern as FootprintExporterDown.
UP = 'up{job=~"footprint.*"}'

# Labels only the per-process series carry: a selector naming one of them scopes a workload, so the budget
# is summed over the attributed process emissions instead of the node totals.
WORKLOAD_LABELS = frozenset(catalogue.WORKLOAD)
GPU_LABELS = frozenset(catalogue.GPU)
CPU_LABELS = frozenset({"package", "method"})
# Labels the rendered series and alerts set themselves; user labels may not shadow them.
RESERVED_LABELS = frozenset({"alertname", "severity", "budget", "period", "scope", "__name__"})
# A selector label starting with this is a Kubernetes namespace label as kube-state-metrics exports it in
# kube_namespace_labels (namespace label `team` -> `label_team`).
NAMESPACE_LABEL_PREFIX = "label_"

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_BUDGET_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_MIN_PERIOD_S = 86400.0
_MAX_GRAMS = 1e15  # a billion tonnes: more than any budget
_MAX_PERIOD_S = 366 * 86400.0
_DAY = 86400.0
# A state series' previous value is read with a plain selector (Prometheus' lookback, 5 minutes by default:
# one sample, where a range would decode an hour of them at every evaluation); after a longer gap, from its
# hourly checkpoint.
CHECKPOINT_INTERVAL = "1h"
CHECKPOINT_LOOKBACK = "7d"

_BUDGET_KEYS = {"name", "selector", "period", "grams", "description", "labels"}


@dataclass(frozen=True, slots=True)
class Level:
    """A recorded emissions rate (g/s) of prometheus/rules/footprint.rules.yml and the labels it keeps."""

    series: str
    labels: tuple[str, ...]


FLEET = Level("fleet:footprint_emissions_grams:rate5m", ())
NODES = Level("instance:footprint_emissions_grams:rate5m", ("cluster", "instance", "node"))
# Workload levels, smallest first: a selector uses the first one that has all its labels.
WORKLOAD_LEVELS = (
    Level("namespace:footprint_process_emissions_grams:rate5m", ("cluster", "namespace")),
    Level("user:footprint_process_emissions_grams:rate5m", ("cluster", "user")),
    Level("slurm_job_id:footprint_process_emissions_grams:rate5m", ("cluster", "slurm_job_id")),
    Level("namespace_pod:footprint_process_emissions_grams:rate5m", ("cluster", "namespace", "pod")),
)
NAMESPACES = WORKLOAD_LEVELS[0]
# Labels a joined budget's definition series carries as data; user labels may not use them.
KEY_LABELS = frozenset(label for level in (NODES, *WORKLOAD_LEVELS) for label in level.labels)


@dataclass(frozen=True, slots=True)
class Matcher:
    label: str
    op: str  # =, !=, =~, !~
    value: str  # unescaped

    def promql(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.label}{self.op}"{escaped}"'


def _braces(matchers: Iterable[Matcher]) -> str:
    return "{" + ", ".join(m.promql() for m in matchers) + "}"


@dataclass(frozen=True, slots=True)
class Scope:
    """How a budget's emissions rate is found.

    ``keys`` set: the budget is *joined*; its definition series carries the matched label values and one
    shared rule per (level, keys) joins every such budget at once. Otherwise ``rate_expr`` is the budget's
    own rate expression (g/s, one series without labels or none), evaluated by one rule of its own.
    """

    level: Level | None
    keys: tuple[str, ...] = ()
    namespace_labels: tuple[str, ...] = ()  # label_* names joined from kube_namespace_labels
    rate_expr: str = ""

    @property
    def joined(self) -> bool:
        return not self.rate_expr


@dataclass(frozen=True, slots=True)
class Budget:
    name: str
    matchers: tuple[Matcher, ...]
    period: str
    period_s: float | None  # None for a calendar period
    grams: float
    scope: Scope
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def selector(self) -> str:
        return _braces(self.matchers)

    @property
    def calendar(self) -> bool:
        return self.period_s is None

    def definition_labels(self) -> dict[str, str]:
        keys = {m.label: m.value for m in self.matchers if m.label in self.scope.keys}
        return {"budget": self.name, "period": self.period, "scope": self.selector, **keys, **self.labels}


@dataclass(frozen=True, slots=True)
class Settings:
    evaluation_interval: str = "1m"
    # Longest gap between two evaluations that the 5-minute scope rate can fill in; a longer one counts only
    # this much and the rest is missing from coverage.
    max_gap: str = "5m"
    alerting: str = "prometheus"
    burn_rate_threshold: float = 2.0
    burn_rate_for: str = "30m"
    projection_for: str = "30m"
    projection_min_data: str = "1d"
    exhausted_for: str = "5m"
    exhausted_keep_firing_for: str = "2h"
    coverage_threshold: float = 0.95
    coverage_for: str = "1h"
    grafana_folder: str = "Carbon budgets"
    grafana_datasource_uid: str = "prometheus"
    grafana_alertmanager_url: str = "http://localhost:9093"

    @property
    def evaluation_interval_s(self) -> float:
        return parse_duration(self.evaluation_interval)

    @property
    def step_cap_s(self) -> float:
        return max(parse_duration(self.max_gap), self.evaluation_interval_s)


_DURATION_SETTINGS = (
    "evaluation_interval",
    "max_gap",
    "burn_rate_for",
    "projection_for",
    "projection_min_data",
    "exhausted_for",
    "exhausted_keep_firing_for",
    "coverage_for",
)
_NUMBER_SETTINGS = ("burn_rate_threshold", "coverage_threshold")
_SETTINGS_DEFAULTS: dict[str, Any] = {
    name: getattr(Settings(), name) for name in Settings.__dataclass_fields__
}


@dataclass(frozen=True, slots=True)
class BudgetFile:
    settings: Settings
    budgets: tuple[Budget, ...]


# ---------------------------------------------------------------------------------------------- parsing


def parse_selector(text: str, key: str = "selector") -> tuple[Matcher, ...]:
    """Parse a PromQL label selector such as ``{namespace="ml-team", user=~"a.*"}``; ``{}`` is the fleet."""
    if not isinstance(text, str):
        raise ConfigError(
            key, f"must be a label selector string like '{{namespace=\"ml-team\"}}', got {text!r}"
        )
    body = text.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise ConfigError(
            key,
            f"must be a label selector in braces, e.g. '{{namespace=\"ml-team\"}}' or '{{}}'; got {text!r}",
        )
    body = body[1:-1].strip()
    matchers: list[Matcher] = []
    pos = 0
    while pos < len(body):
        m = _MATCHER.match(body, pos)
        if m is None:
            raise ConfigError(
                key, f'cannot parse matcher at {body[pos:]!r} (use label="value", !=, =~ or !~)'
            )
        label, op, raw, _sep = m.groups()
        if label == "__name__":
            raise ConfigError(key, "must not match __name__: the budget chooses the emissions metrics itself")
        value = re.sub(r"\\(.)", r"\1", raw)
        if op in ("=~", "!~"):
            try:
                re.compile(value)
            except re.error as exc:
                raise ConfigError(key, f"bad regular expression {value!r} for {label}: {exc}") from None
        matchers.append(Matcher(label, op, value))
        pos = m.end()
    seen = [(mt.label, mt.op) for mt in matchers]
    if len(seen) != len(set(seen)):
        raise ConfigError(key, "repeats a matcher")
    return tuple(matchers)


def emissions_metrics(matchers: tuple[Matcher, ...]) -> tuple[str, ...]:
    """The operational emissions counters a scope sums: workload scopes the process series, else node totals.

    GPU and CPU emissions are added (embodied emissions are not part of a budget), and for node scopes the
    node's unmetered emissions. A selector naming GPU labels scopes the GPU series only; one naming CPU
    package labels, the CPU series only.
    """
    labels = {m.label for m in matchers}
    gpu, cpu = bool(labels & GPU_LABELS), bool(labels & CPU_LABELS)
    if gpu and cpu:
        raise ValueError(
            "no emissions metric has both GPU labels (gpu, uuid) and CPU labels (package, method)"
        )
    if labels & WORKLOAD_LABELS:
        if cpu:
            raise ValueError("process series have no package or method label")
        if gpu:
            return ("footprint_process_gpu_emissions_grams_total",)
        return ("footprint_process_gpu_emissions_grams_total", "footprint_process_cpu_emissions_grams_total")
    if gpu:
        return ("footprint_gpu_emissions_grams_total",)
    if cpu:
        return ("footprint_cpu_emissions_grams_total",)
    # Node scopes add the node's unmetered emissions (absent without a node source): GPU + CPU +
    # unmetered is the whole node as its BMC measures it.
    return (
        "footprint_gpu_emissions_grams_total",
        "footprint_cpu_emissions_grams_total",
        "footprint_node_unmetered_emissions_grams_total",
    )


def _raw_rate_expr(matchers: tuple[Matcher, ...]) -> str:
    sel = _braces(matchers) if matchers else ""
    return " + ".join(
        f"(sum(rate({metric}{sel}[5m])) or vector(0))" for metric in emissions_metrics(matchers)
    )


def _namespace_labels_join(
    label_matchers: Iterable[Matcher], namespace_matchers: Iterable[Matcher], names: tuple[str, ...]
) -> str:
    """Namespace emissions carrying the named kube-state-metrics namespace labels."""
    listed = ", ".join(names)
    ns = _braces(namespace_matchers)
    ksm = _braces(label_matchers)
    return (
        f"{NAMESPACES.series}{ns if ns != '{}' else ''}"
        f" * on (cluster, namespace) group_left ({listed})"
        f" max by (cluster, namespace, {listed}) (kube_namespace_labels{ksm if ksm != '{}' else ''})"
    )


def _matches_empty(m: Matcher) -> bool:
    if m.op in ("=", "!="):
        return (m.value == "") == (m.op == "=")
    full = re.fullmatch(m.value, "") is not None
    return full == (m.op == "=~")


def classify_scope(matchers: tuple[Matcher, ...]) -> Scope:
    """The cheapest way to find a selector's emissions rate; raises ValueError for an impossible selector.

    Equality matchers on the labels of one recorded level are joined as data; other matchers on a level
    read that level's recorded series in a rule of their own; anything else reads the raw counters.
    """
    emissions_metrics(matchers)  # validates GPU/CPU/workload combinations
    labels = {m.label for m in matchers}
    joinable = all(m.op == "=" and m.value != "" for m in matchers)
    ns_labels = tuple(sorted(label for label in labels if label.startswith(NAMESPACE_LABEL_PREFIX)))
    if ns_labels:
        if not labels - set(ns_labels) <= set(NAMESPACES.labels):
            raise ValueError(
                "namespace labels (label_*) from kube_namespace_labels combine only with cluster and "
                "namespace matchers"
            )
        if joinable:
            return Scope(NAMESPACES, tuple(sorted(labels)), ns_labels)
        on_labels = [m for m in matchers if m.label in ns_labels]
        on_ns = [m for m in matchers if m.label not in ns_labels]
        return Scope(NAMESPACES, rate_expr=f"sum({_namespace_labels_join(on_labels, on_ns, ns_labels)})")
    if not labels:
        return Scope(FLEET, ())
    if labels & WORKLOAD_LABELS:
        candidates = [lv for lv in WORKLOAD_LEVELS if labels <= set(lv.labels)]
    elif labels <= set(NODES.labels):
        candidates = [NODES]
    else:
        candidates = []
    # Workload levels leave out processes whose label is empty: a matcher that an empty value passes
    # (`=""`, `!="x"`, a regex matching "") needs the raw series.
    if labels & WORKLOAD_LABELS and any(m.label in WORKLOAD_LABELS and _matches_empty(m) for m in matchers):
        candidates = []
    if not candidates:
        return Scope(None, rate_expr=_raw_rate_expr(matchers))
    level = candidates[0]
    if joinable:
        return Scope(level, tuple(sorted(labels)))
    return Scope(level, rate_expr=f"sum({level.series}{_braces(matchers)})")


def _duration(value: Any, key: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None


def parse_budgets(data: Any) -> BudgetFile:
    """Validate the parsed YAML of a budgets file; raises ConfigError naming the budget and the key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("budgets.yml", "must be a mapping with a 'budgets' list")
    unknown = set(data) - {"settings", "budgets"}
    if unknown:
        raise ConfigError(sorted(unknown)[0], "unknown key (expected 'settings' and 'budgets')")
    settings = _parse_settings(data.get("settings"))
    raw_budgets = data.get("budgets") or []
    if not isinstance(raw_budgets, list):
        raise ConfigError("budgets", "must be a list of budgets")
    budgets: list[Budget] = []
    names: set[str] = set()
    for index, raw in enumerate(raw_budgets):
        budget = _parse_budget(index, raw)
        if budget.name in names:
            raise ConfigError(f"budgets[{index}] ({budget.name}).name", "duplicate budget name")
        names.add(budget.name)
        budgets.append(budget)
    return BudgetFile(settings, tuple(budgets))


def _parse_settings(raw: Any) -> Settings:
    if raw is None:
        return Settings()
    if not isinstance(raw, dict):
        raise ConfigError("settings", "must be a mapping")
    values = dict(_SETTINGS_DEFAULTS)
    for key, value in raw.items():
        if key not in _SETTINGS_DEFAULTS:
            raise ConfigError(
                f"settings.{key}", f"unknown key (expected one of {', '.join(_SETTINGS_DEFAULTS)})"
            )
        if key in _NUMBER_SETTINGS:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"settings.{key}", f"must be a number, got {value!r}")
            values[key] = float(value)
            continue
        if not isinstance(value, str) or not value:
            raise ConfigError(f"settings.{key}", f"must be a non-empty string, got {value!r}")
        values[key] = value
    for key in _DURATION_SETTINGS:
        seconds = _duration(values[key], f"settings.{key}")
        if key == "evaluation_interval" and seconds <= 0:
            raise ConfigError("settings.evaluation_interval", "must be longer than 0s")
    if values["alerting"] not in ("prometheus", "grafana"):
        raise ConfigError("settings.alerting", f"must be prometheus or grafana, got {values['alerting']!r}")
    if values["burn_rate_threshold"] <= 1:
        raise ConfigError(
            "settings.burn_rate_threshold", "must be above 1 (a burn rate of 1 spends exactly the budget)"
        )
    if not 0 < values["coverage_threshold"] <= 1:
        raise ConfigError("settings.coverage_threshold", "must be a fraction in (0, 1]")
    return Settings(**values)


def _parse_period(raw: Any, key: str) -> tuple[str, float | None]:
    if raw in CALENDAR_PERIODS:
        return str(raw), None
    period_s = _duration(raw, key)
    if not _MIN_PERIOD_S <= period_s <= _MAX_PERIOD_S:
        raise ConfigError(
            key, f"must be month, quarter, year or a rolling window from 1d to 366d, got {raw!r}"
        )
    return str(raw), period_s


def _parse_budget(index: int, raw: Any) -> Budget:
    where = f"budgets[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(where, "must be a mapping with name, selector, period and grams")
    name = raw.get("name")
    if not isinstance(name, str) or not _BUDGET_NAME.match(name):
        raise ConfigError(f"{where}.name", f"must be letters, digits, '_', '-' or '.', got {name!r}")
    where = f"{where} ({name})"
    unknown = set(raw) - _BUDGET_KEYS
    if unknown:
        raise ConfigError(
            f"{where}.{sorted(unknown)[0]}", f"unknown key (expected {', '.join(sorted(_BUDGET_KEYS))})"
        )
    for required in ("selector", "period", "grams"):
        if required not in raw:
            raise ConfigError(f"{where}.{required}", "is required")
    matchers = parse_selector(raw["selector"], f"{where}.selector")
    try:
        scope = classify_scope(matchers)
    except ValueError as exc:
        raise ConfigError(f"{where}.selector", str(exc)) from None
    period, period_s = _parse_period(raw["period"], f"{where}.period")
    grams = raw["grams"]
    if (
        isinstance(grams, bool)
        or not isinstance(grams, int | float)
        or (isinstance(grams, float) and not math.isfinite(grams))  # an int of 400 digits has no float
        or not 0 < grams <= _MAX_GRAMS
    ):
        raise ConfigError(
            f"{where}.grams", f"must be a positive number of grams CO2e up to 1e15, got {shown(grams)}"
        )
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{where}.description", "must be a string")
    labels = raw.get("labels") or {}
    if not isinstance(labels, dict):
        raise ConfigError(f"{where}.labels", "must be a mapping of label names to strings")
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_NAME.match(key) or key.startswith("__"):
            raise ConfigError(f"{where}.labels", f"{key!r} is not a valid label name")
        if key in RESERVED_LABELS:
            raise ConfigError(
                f"{where}.labels.{key}", "is set by the rendered rules and cannot be overridden"
            )
        if key in KEY_LABELS or key.startswith(NAMESPACE_LABEL_PREFIX):
            raise ConfigError(
                f"{where}.labels.{key}", "is a scope label: put it in the selector, not in labels"
            )
        if not isinstance(value, str):
            raise ConfigError(f"{where}.labels.{key}", f"must be a string, got {value!r}")
    return Budget(
        name=name,
        matchers=matchers,
        period=period,
        period_s=period_s,
        grams=float(grams),
        scope=scope,
        description=description,
        labels=dict(sorted(labels.items())),
    )


def load_budgets(path: Path) -> BudgetFile:
    # Bounded like the exporter's own configuration: size, UTF-8, depth, no anchors or aliases.
    return parse_budgets(read_yaml(str(path), str(path)))


# --------------------------------------------------------------------------------------------- the PromQL


def _num(value: float) -> str:
    """A number as PromQL and YAML both read it, without a trailing '.0'."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def format_grams(grams: float) -> str:
    """Human text for a mass of CO2e: ``850 g``, ``12.5 kg``, ``3 t``."""
    for unit, size in (("t", 1e6), ("kg", 1e3), ("g", 1.0)):
        if grams >= size or unit == "g":
            value = grams / size
            text = f"{value:.3g}" if value < 1000 else f"{value:.0f}"
            return f"{text} {unit}"
    raise AssertionError("unreachable")


# Series names. State series are keyed by `budget` alone, so changing a budget's description, labels or
# period keeps its history; the series people read carry every label of the budget's definition.
GRAMS = "footprint:budget_grams"
RATE = "footprint:budget_emissions_grams:rate5m"
TARGETS_UP = "footprint:budget_targets_up:ratio"
START = "footprint:budget_period_start_timestamp_seconds"
END = "footprint:budget_period_end_timestamp_seconds"
PERIOD = "footprint:budget_period_seconds"
GAP = "footprint:budget_evaluation_gap_seconds"
EMITTED = "footprint:budget_emitted_grams:cumulative"
COVERED = "footprint:budget_covered_seconds:cumulative"
PERIOD_EMITTED = "footprint:budget_period_emitted_grams:cumulative"
PERIOD_COVERED = "footprint:budget_period_covered_seconds:cumulative"
EVALUATED = "footprint:budget_evaluation_timestamp_seconds"
STATE = (EVALUATED, EMITTED, COVERED, PERIOD_EMITTED, PERIOD_COVERED)
WINDOW_COVERED = "footprint:budget_window_covered_seconds"
USED = "footprint:budget_used_grams"
USAGE = "footprint:budget_usage:ratio"
REMAINING = "footprint:budget_remaining_grams"
COVERAGE = "footprint:budget_coverage:ratio"
RATE_1D = "footprint:budget_emissions_grams:rate1d"
RATE_2H = "footprint:budget_emissions_grams:rate2h"
BURN_1D = "footprint:budget_burn_rate:rate1d"
BURN_2H = "footprint:budget_burn_rate:rate2h"
PROJECTED = "footprint:budget_projected_usage:ratio"
EXHAUSTION = "footprint:budget_exhaustion_seconds"

# Calendar arithmetic on the evaluation time (UTC). Prometheus' date functions default to vector(time()).
_MIDNIGHT = "floor(vector(time()) / 86400) * 86400"
_MONTH_START = f"({_MIDNIGHT} - (day_of_month() - 1) * 86400)"
_YEAR_START = f"({_MIDNIGHT} - (day_of_year() - 1) * 86400)"
_LEAP = f"(days_in_month({_YEAR_START} + 31 * 86400) - 28)"  # February of this year: 0 or 1 extra day
_QUARTER = "floor((month() - 1) / 3)"  # 0..3
CALENDAR_BOUNDS: dict[str, tuple[str, str]] = {
    "month": (_MONTH_START, f"{_MONTH_START} + days_in_month() * 86400"),
    # Quarters start on days 0, 90+L, 181+L, 273+L of the year and last 90+L, 91, 92, 92 days.
    "quarter": (
        f"({_YEAR_START} + 86400 * (({_QUARTER} >= bool 1) * (90 + {_LEAP})"
        f" + ({_QUARTER} >= bool 2) * 91 + ({_QUARTER} >= bool 3) * 92))",
        f"({_YEAR_START} + 86400 * (({_QUARTER} >= bool 1) * (90 + {_LEAP})"
        f" + ({_QUARTER} >= bool 2) * 91 + ({_QUARTER} >= bool 3) * 92)"
        f" + 86400 * (({_QUARTER} == bool 0) * (90 + {_LEAP}) + ({_QUARTER} == bool 1) * 91"
        f" + ({_QUARTER} >= bool 2) * 92))",
    ),
    "year": (_YEAR_START, f"{_YEAR_START} + (365 + {_LEAP}) * 86400"),
}


def _by_budget(selector: str = "") -> str:
    """One series per budget with the value 0 (a carrier for constants), optionally of a subset."""
    return f"max by (budget) (0 * {GRAMS}{selector})"


def _checkpoint_name(series: str) -> str:
    return series.removesuffix(":cumulative") + ":checkpoint"


def _prev_state(series: str) -> str:
    """A state series' value at the previous evaluation, or at its last hourly checkpoint after a long gap."""
    return f"({series} or last_over_time({_checkpoint_name(series)}[{CHECKPOINT_LOOKBACK}]))"


def _at(series: str, offset: str, checkpoint: bool = False) -> str:
    """A cumulative state series as it was OFFSET ago (its last value within the lookback before then).

    With CHECKPOINT, its hourly checkpoint stands in when the evaluator had a gap back then: a window's
    start must not be unknown merely because of an old outage. Rates over a window do without it (they
    fall back to the average since the state began), which saves a range lookup each.
    """
    lookup = f"{series} offset {offset}"
    if not checkpoint:
        return f"({lookup})"
    return f"({lookup} or last_over_time({_checkpoint_name(series)}[1d] offset {offset}))"


def _since(series: str, offset: str) -> str:
    """How much a cumulative series grew over the last OFFSET; all of it for a younger series."""
    return f"(clamp_min({series} - {_at(series, offset)}, 0) or {series})"


def _window_rate(window: str) -> str:
    """The scope's average emissions rate (g/s) over the last WINDOW, per second of coverage in it.

    Dividing by the covered seconds rather than the window's length gives a young budget (or one with a
    gap) its true pace instead of a ramp, and extrapolates over exporters that were down the same way the
    coverage ratio reports them.
    """
    return f"({_since(EMITTED, window)} / clamp_min({_since(COVERED, window)}, 60))"


def _labelled(expr: str, label_names: tuple[str, ...]) -> str:
    """EXPR (keyed by budget) with every label of the budget's definition series."""
    listed = ", ".join(label_names)
    return f"(({expr}) + on (budget) group_left ({listed}) (0 * {GRAMS}))"


def _record(name: str, expr: str) -> dict[str, Any]:
    return {"record": name, "expr": expr}


def _definition_rule(b: Budget) -> dict[str, Any]:
    return {"record": GRAMS, "expr": f"vector({_num(b.grams)})", "labels": b.definition_labels()}


def _either(parts: list[str]) -> str:
    """Alternatives for one recorded series joined with ``or`` (one rule per name: promtool flags repeats).

    Nested as a balanced tree: each ``or`` copies its left side, so a chain of k alternatives costs k times
    the series of all of them, a tree only log k times.
    """
    if len(parts) == 1:
        return parts[0]
    half = len(parts) // 2
    return f"(\n{_either(parts[:half])}\n)\nor\n(\n{_either(parts[half:])}\n)"


def _rate_expr(budgets: tuple[Budget, ...]) -> str:
    """The scope rate of every budget: one shared join per (level, keys), one term per other selector."""
    parts: list[str] = []
    joins: dict[tuple[str, tuple[str, ...], tuple[str, ...]], None] = {}
    for b in budgets:
        if b.scope.joined:
            assert b.scope.level is not None
            joins.setdefault((b.scope.level.series, b.scope.keys, b.scope.namespace_labels), None)
    for series, keys, ns_labels in joins:
        if not keys:
            sel = '{scope="{}"}'
            scope_rate = series
        else:
            others = sorted((KEY_LABELS | _namespace_label_names(budgets)) - set(keys))
            sel = "{" + ", ".join([*(f'{k}!=""' for k in keys), *(f'{o}=""' for o in others)]) + "}"
            source = _namespace_labels_join((), (), ns_labels) if ns_labels else series
            scope_rate = f"sum by ({', '.join(keys)}) ({source})"
        on = ", ".join(keys)
        parts.append(
            f"sum by (budget) (\n  0 * {GRAMS}{sel}\n  + on ({on}) group_left\n  {scope_rate}\n"
            f"  or\n  0 * {GRAMS}{sel}\n)"
        )
    for b in budgets:
        if not b.scope.joined:
            parts.append(f'label_replace({b.scope.rate_expr} or vector(0), "budget", "{b.name}", "", "")')
    return _either(parts)


def _namespace_label_names(budgets: tuple[Budget, ...]) -> set[str]:
    return {name for b in budgets for name in b.scope.namespace_labels}


def render_rules(bf: BudgetFile) -> dict[str, Any]:
    """The Prometheus rules file (as data): definitions, scope rates, state, derived series, alerts."""
    if not bf.budgets:
        return {"groups": []}
    s = bf.settings
    cap = _num(s.step_cap_s)
    label_names = tuple(sorted({k for b in bf.budgets for k in b.definition_labels()} - {"budget"}))
    calendar_kinds = sorted({b.period for b in bf.budgets if b.calendar}, key=CALENDAR_PERIODS.index)
    rolling = sorted({(b.period_s, b.period) for b in bf.budgets if b.period_s is not None})
    rules: list[dict[str, Any]] = [_definition_rule(b) for b in bf.budgets]
    rules.append(_record(RATE, _rate_expr(bf.budgets)))
    rules.append(
        _record(
            TARGETS_UP,
            # A budget of one cluster counts that cluster's exporters; any other budget the whole store's.
            f'sum by (budget) (\n  0 * {GRAMS}{{cluster!=""}}'
            f"\n  + on (cluster) group_left avg by (cluster) ({UP})"
            f'\n  or\n  0 * {GRAMS}{{cluster!=""}}\n  or\n  0 * {GRAMS} + on () group_left avg({UP})'
            f"\n  or\n  0 * {GRAMS}\n)",
        )
    )
    starts, ends = [], []
    for kind in calendar_kinds:
        start, end = CALENDAR_BOUNDS[kind]
        sel = f'{{period="{kind}"}}'
        starts.append(f"{_by_budget(sel)} + scalar({start})")
        ends.append(f"{_by_budget(sel)} + scalar({end})")
    for period_s, period in rolling:
        sel = f'{{period="{period}"}}'
        starts.append(f"{_by_budget(sel)} + time() - {_num(period_s)}")
        ends.append(f"{_by_budget(sel)} + time()")
    rules += [_record(START, _either(starts)), _record(END, _either(ends))]
    rules.append(_record(PERIOD, f"{END} - {START}"))
    # State: read the previous evaluation's values before this evaluation overwrites them (rules of a group
    # run in order, and a later rule sees what an earlier one recorded at the same timestamp).
    rules.append(_record(GAP, f"time() - {_prev_state(EVALUATED)}"))
    step = f"clamp_max({GAP}, {cap})"
    rules.append(_record(EMITTED, f"({_prev_state(EMITTED)} + {RATE} * {step})\nor\n{_by_budget()}"))
    rules.append(_record(COVERED, f"({_prev_state(COVERED)} + {TARGETS_UP} * {step})\nor\n{_by_budget()}"))
    if calendar_kinds:
        calendar = '{period=~"' + "|".join(calendar_kinds) + '"}'
        in_period = f"(time() - {START})"
        # The share of this step that lies in the current period; the previous total only counts when the
        # previous evaluation was in this period too.
        period_step = f"(({step} <= {in_period}) or {in_period})"
        same_period = f"({GAP} <= bool {in_period})"
        for state, per_second in ((PERIOD_EMITTED, RATE), (PERIOD_COVERED, TARGETS_UP)):
            rules.append(
                _record(
                    state,
                    f"({_prev_state(state)} * {same_period} + {per_second} * {period_step})"
                    f"\nor\n{_by_budget(calendar)}",
                )
            )
    rules.append(_record(EVALUATED, f"{_by_budget()} + time()"))
    # What people read: usage over the period or window, coverage, burn rates, the projection.
    used: list[str] = [PERIOD_EMITTED] if calendar_kinds else []
    covered: list[str] = [PERIOD_COVERED] if calendar_kinds else []
    for period_s, period in rolling:
        sel = f'{{period="{period}"}}'
        young = f"{COVERED} <= {_num(period_s * 1.01)}"
        for name, state in ((USED, EMITTED), (WINDOW_COVERED, COVERED)):
            # The growth since the window's start; everything for a budget younger than the window. A
            # state that restarted inside the window counts from 0 (coverage shows the loss); retention
            # shorter than the window leaves it unknown.
            window = (
                f"(\n  clamp_min({state} - {_at(state, period, checkpoint=True)}, 0)\n"
                f"  or\n  ({state} and {young})\n) and on (budget) {GRAMS}{sel}"
            )
            (used if name == USED else covered).append(window)
    rules.append(_record(USED, _labelled(_either(used), label_names)))
    rules.append(_record(WINDOW_COVERED, _labelled(_either(covered), label_names)))
    rules.append(_record(USAGE, f"{USED} / {GRAMS}"))
    rules.append(_record(REMAINING, f"clamp_min({GRAMS} - {USED}, 0)"))
    # The rest is computed keyed by budget and given the definition's labels once, at the end.
    grams, used_k, covered_k = (f"max by (budget) ({x})" for x in (GRAMS, USED, WINDOW_COVERED))
    rules.append(
        _record(
            COVERAGE,
            _labelled(f"clamp_max({covered_k} / clamp_min(time() - {START}, 60), 1)", label_names),
        )
    )
    rules.append(_record(RATE_1D, _window_rate("1d")))
    rules.append(_record(RATE_2H, _window_rate("2h")))
    for name, rate in ((BURN_1D, RATE_1D), (BURN_2H, RATE_2H)):
        rules.append(_record(name, _labelled(f"{rate} / ({grams} / {PERIOD})", label_names)))
    enough = f"and on (budget) ({covered_k} >= {_num(parse_duration(s.projection_min_data))})"
    projected: list[str] = []
    if calendar_kinds:
        left = f"clamp_min({END} - time(), 0)"
        so_far = f"({used_k} + {used_k} / clamp_min({covered_k}, 60) * {left})"
        recent = f"({used_k} + {RATE_1D} * {left})"
        projected.append(
            f"((\n  ({so_far} <= {recent})\n  or\n  {recent}\n) / {grams}\n"
            f"{enough}\nand on (budget) {GRAMS}{calendar})"
        )
    if rolling:
        # The window H = min(1 day, a quarter of the window) from now: H more at the last day's pace,
        # while its oldest emissions leave at the window's average pace - none while the budget's data
        # is younger than the window less H.
        horizon = f"clamp_max({PERIOD} / 4, 86400)"
        average = f"{used_k} / clamp_min({covered_k}, 60)"
        leaving_s = f"clamp_min({horizon} - {PERIOD} + {covered_k}, 0)"
        periods = "|".join(CALENDAR_PERIODS)
        projected.append(
            f"(({used_k} + {RATE_1D} * {horizon} - {average} * {leaving_s}) / {grams}\n{enough}"
            f'\nand on (budget) {GRAMS}{{period!~"{periods}"}})'
        )
    rules.append(_record(PROJECTED, _labelled(_either(projected), label_names)))
    rules.append(
        _record(EXHAUSTION, _labelled(f"clamp_min({grams} - {used_k}, 0) / ({RATE_1D} > 0)", label_names))
    )
    groups: list[dict[str, Any]] = [{"name": RULE_GROUP, "interval": s.evaluation_interval, "rules": rules}]
    if s.alerting == "prometheus":
        groups[0]["rules"] += [_prometheus_alert(a, s) for a in alerts(s)]
    groups.append(
        {
            "name": CHECKPOINT_GROUP,
            "interval": CHECKPOINT_INTERVAL,
            "rules": [_record(_checkpoint_name(x), x) for x in STATE if calendar_kinds or "period_" not in x],
        }
    )
    return {"groups": groups}


# ------------------------------------------------------------------------------------------------ alerts


@dataclass(frozen=True, slots=True)
class Alert:
    """One budget alert, rendered for Prometheus or as a Grafana-managed rule from the same data."""

    name: str
    expr: str  # returns, per budget, the value compared
    op: str  # the comparison in expr: gt or lt
    threshold: float
    pending: str
    severity: str
    summary: str
    description: str
    keep_firing_for: str = ""


def _q(series: str, fmt: str) -> str:
    """A Prometheus alert template printing a per-budget series' value."""
    return (
        f'{{{{ with printf "{series}{{budget=%q}}" $labels.budget | query }}}}'
        f"{{{{ . | first | value | {fmt} }}}}{{{{ end }}}}"
    )


def alerts(s: Settings) -> tuple[Alert, ...]:
    t = _num(s.burn_rate_threshold)
    scope = "Scope {{ $labels.scope }} (budget {{ $labels.budget }}, period {{ $labels.period }})"
    used = f"{_q(USED, 'humanize')}g of {_q(GRAMS, 'humanize')}g"
    return (
        Alert(
            "CarbonBudgetBurnRateHigh",
            f"{BURN_1D} > {t}\nand\n{BURN_2H} > {t}",
            "gt",
            s.burn_rate_threshold,
            s.burn_rate_for,
            "warning",
            'Carbon budget {{ $labels.budget }} burned {{ $value | printf "%.1f" }}x its sustainable '
            "pace over the last day.",
            f"{scope} emitted over the last day and the last 2 hours at more than {t}x the pace that "
            'spends exactly its budget in one period ({{ $value | printf "%.1f" }}x over the day). '
            f"Used {used} so far.",
        ),
        Alert(
            "CarbonBudgetProjectedOverrun",
            f"{PROJECTED} > 1\nand\n{USAGE} < 1",
            "gt",
            1.0,
            s.projection_for,
            "critical",
            "Carbon budget {{ $labels.budget }} is projected to run out: "
            "{{ $value | humanizePercentage }} by the end of the period.",
            f"{scope} has used {used}. Projected linearly, both from the pace of the period so far and "
            "from the last day's pace, it reaches {{ $value | humanizePercentage }} of the budget "
            "before the period ends (a rolling window: within the next day, or a quarter of a shorter "
            "window).",
        ),
        Alert(
            "CarbonBudgetExhausted",
            f"{USAGE} > 1",
            "gt",
            1.0,
            s.exhausted_for,
            "warning",
            "Carbon budget {{ $labels.budget }} is exhausted: {{ $value | humanizePercentage }} used.",
            f"{scope} has emitted {used}, {{{{ $value | humanizePercentage }}}} of its budget. The alert "
            f"keeps firing for {s.exhausted_keep_firing_for} after usage drops back under 100%.",
            keep_firing_for=s.exhausted_keep_firing_for,
        ),
        Alert(
            "CarbonBudgetCoverageLow",
            f"{COVERAGE} < {_num(s.coverage_threshold)}",
            "lt",
            s.coverage_threshold,
            s.coverage_for,
            "warning",
            "Carbon budget {{ $labels.budget }} has data for only {{ $value | humanizePercentage }} "
            "of its period.",
            f"{scope} counts emissions for only {{{{ $value | humanizePercentage }}}} of its period so "
            "far (rules not evaluated, or exporters down); its usage undercounts by the rest.",
        ),
    )


def _runbook(alertname: str) -> str:
    return RUNBOOK_BASE + alertname.lower()


def _prometheus_alert(a: Alert, s: Settings) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": a.name, "expr": a.expr, "for": a.pending}
    if a.keep_firing_for:
        rule["keep_firing_for"] = a.keep_firing_for
    rule["labels"] = {"severity": a.severity}
    rule["annotations"] = {
        "summary": a.summary,
        "description": a.description,
        "runbook_url": _runbook(a.name),
    }
    return rule


def _grafana_query(ref: str, expr: str, uid: str, step_s: float) -> dict[str, Any]:
    return {
        "refId": ref,
        "relativeTimeRange": {"from": 600, "to": 0},
        "datasourceUid": uid,
        "model": {
            "refId": ref,
            "expr": expr,
            "instant": True,
            "range": False,
            "intervalMs": int(step_s * 1000),
            "maxDataPoints": 43200,
            "datasource": {"type": "prometheus", "uid": uid},
        },
    }


def _grafana_expr(ref: str, model: dict[str, Any]) -> dict[str, Any]:
    return {
        "refId": ref,
        "relativeTimeRange": {"from": 0, "to": 0},
        "datasourceUid": "__expr__",
        "model": {"refId": ref, "datasource": {"type": "__expr__", "uid": "__expr__"}, **model},
    }


def _grafana_text(text: str) -> str:
    """A Prometheus alert template as Grafana's: $value is the reduced query B; no query function."""
    values = {USED: "{{ humanize $values.UR.Value }}", GRAMS: "{{ humanize $values.GR.Value }}"}
    text = re.sub(
        r'\{\{ with printf "([^"]+)\{budget=%q\}" \$labels\.budget \| query \}\}.*?\{\{ end \}\}',
        lambda m: values[m.group(1)],
        text,
    )
    text = text.replace('{{ $value | printf "%.1f" }}', '{{ printf "%.1f" $values.B.Value }}')
    return text.replace("{{ $value | humanizePercentage }}", "{{ humanizePercentage $values.B.Value }}")


GRAFANA_CONTACT_POINT = "footprint-alertmanager"


def render_grafana(bf: BudgetFile) -> dict[str, Any]:
    """Grafana alerting provisioning (apiVersion 1): empty unless ``settings.alerting`` is ``grafana``.

    Then it holds one Grafana-managed rule per budget alert (each a multi-dimensional rule over every
    budget, reading the series the Prometheus rules record), a contact point sending to the Alertmanager
    and the notification policy that routes them there, so Alertmanager's routes apply either way.
    """
    s = bf.settings
    if s.alerting != "grafana" or not bf.budgets:
        return {"apiVersion": 1}
    uid, step = s.grafana_datasource_uid, s.evaluation_interval_s
    rules = []
    for a in alerts(s):
        rules.append(
            {
                "uid": "fp-" + a.name.lower().removeprefix("carbonbudget"),
                "title": a.name,
                "condition": "C",
                "data": [
                    _grafana_query("A", a.expr, uid, step),
                    _grafana_expr("B", {"type": "reduce", "expression": "A", "reducer": "last"}),
                    _grafana_expr(
                        "C",
                        {
                            "type": "threshold",
                            "expression": "B",
                            "conditions": [{"evaluator": {"type": a.op, "params": [a.threshold]}}],
                        },
                    ),
                    _grafana_query("U", USED, uid, step),
                    _grafana_expr("UR", {"type": "reduce", "expression": "U", "reducer": "last"}),
                    _grafana_query("G", GRAMS, uid, step),
                    _grafana_expr("GR", {"type": "reduce", "expression": "G", "reducer": "last"}),
                ],
                "noDataState": "OK",
                "execErrState": "Error",
                "for": a.pending,
                **({"keepFiringFor": a.keep_firing_for} if a.keep_firing_for else {}),
                "isPaused": False,
                "labels": {"severity": a.severity},
                "annotations": {
                    "summary": _grafana_text(a.summary),
                    "description": _grafana_text(a.description),
                    "runbook_url": _runbook(a.name),
                },
            }
        )
    return {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": RULE_GROUP,
                "folder": s.grafana_folder,
                "interval": s.evaluation_interval,
                "rules": rules,
            }
        ],
        "contactPoints": [
            {
                "orgId": 1,
                "name": GRAFANA_CONTACT_POINT,
                "receivers": [
                    {
                        "uid": GRAFANA_CONTACT_POINT,
                        "type": "prometheus-alertmanager",
                        "settings": {"url": s.grafana_alertmanager_url},
                        "disableResolveMessage": False,
                    }
                ],
            }
        ],
        "policies": [
            {
                "orgId": 1,
                "receiver": GRAFANA_CONTACT_POINT,
                "group_by": ["alertname", "budget"],
            }
        ],
    }


# ------------------------------------------------------------------------------------------------ output


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL expressions) as literal blocks: the output reads like hand-written rules."""


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def dump(data: dict[str, Any], source: str) -> str:
    header = (
        f"# Generated by `footprint-exporter budgets render` from {source}. Do not edit by hand:\n"
        "# change the budgets file and render again (`footprint-exporter budgets check` tells when stale).\n"
    )
    body = yaml.dump(
        data, Dumper=_Dumper, sort_keys=False, width=100000, allow_unicode=True, default_flow_style=False
    )
    return header + body


def render_files(bf: BudgetFile, source: str) -> tuple[str, str]:
    """The text of the Prometheus rules file and of the Grafana alerting provisioning file."""
    return dump(render_rules(bf), source), dump(render_grafana(bf), source)


# ------------------------------------------------------------------------------------------------- CLI


def default_root(cwd: Path | None = None) -> Path:
    """Where the default files are: the working folder when it holds prometheus/budgets.yml, else the
    source checkout this package runs from (so ``budgets check`` works from any folder), else the
    working folder (and the error names the path tried)."""
    here = Path.cwd() if cwd is None else cwd
    if (here / DEFAULT_BUDGETS).is_file():
        return here
    checkout = Path(__file__).resolve().parent.parent
    return checkout if (checkout / DEFAULT_BUDGETS).is_file() else here


def _parser() -> argparse.ArgumentParser:
    root = default_root()
    parser = argparse.ArgumentParser(
        prog="footprint-exporter budgets",
        description="Render carbon budgets into Prometheus rules (and optionally Grafana-managed alerts).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("render", "write the rules files"),
        ("check", "exit 1 if the committed rules are stale"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument(
            "--budgets", type=Path, default=_default_path(root, DEFAULT_BUDGETS), help="budgets file (YAML)"
        )
        p.add_argument(
            "--rules-out",
            type=Path,
            default=_default_path(root, DEFAULT_RULES_OUT),
            help="Prometheus rules file",
        )
        p.add_argument(
            "--grafana-out",
            type=Path,
            default=_default_path(root, DEFAULT_GRAFANA_OUT),
            help="Grafana alerting provisioning file",
        )
    return parser


def _default_path(root: Path, relative: Path) -> Path:
    """The default path, relative when it is under the working folder (shorter messages), else absolute."""
    path = root / relative
    return relative if root == Path.cwd() else path


def main(argv: list[str]) -> int:
    """``render`` writes both outputs; ``check`` exits 1 if they differ from a fresh render; 2: bad input."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) else 2
    try:
        bf = load_budgets(args.budgets)
    except ConfigError as exc:
        # A file that cannot be read (or parsed) is named in the problem itself: say it once.
        print(exc.problem if exc.key == str(args.budgets) else f"{args.budgets}: {exc}", file=sys.stderr)
        return 2
    rules_text, grafana_text = render_files(bf, args.budgets.name)
    outputs = ((args.rules_out, rules_text), (args.grafana_out, grafana_text))
    if args.command == "check":
        stale = [
            path for path, text in outputs if not path.is_file() or path.read_text(encoding="utf-8") != text
        ]
        for path in stale:
            print(f"{path} is stale: run `footprint-exporter budgets render`", file=sys.stderr)
        return 1 if stale else 0
    for path, text in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        print(f"wrote {path} ({len(bf.budgets)} budgets)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
