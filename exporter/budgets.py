"""Carbon budgets: validate prometheus/budgets.yml and render Prometheus and Grafana alert rules from it."""

from __future__ import annotations

import argparse
import hashlib
import math
import re
import sys
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

# Labels only the per-process series carry: a selector naming one of them scopes a workload, so the budget
# is summed over the attributed process emissions instead of the node totals.
WORKLOAD_LABELS = frozenset(catalogue.WORKLOAD)
GPU_LABELS = frozenset(catalogue.GPU)
CPU_LABELS = frozenset({"package", "method"})
# Labels the rendered series and alerts set themselves; user labels may not shadow them.
RESERVED_LABELS = frozenset({"alertname", "severity", "window", "budget", "period", "scope", "__name__"})

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_BUDGET_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_MIN_PERIOD_S = 86400.0
_MAX_GRAMS = 1e15  # a billion tonnes: more than any budget
_MAX_PERIOD_S = 366 * 86400.0

_BUDGET_KEYS = {"name", "selector", "period", "grams", "description", "labels"}
_SETTINGS_DEFAULTS: dict[str, str] = {
    "evaluation_interval": "1m",
    "exhausted_for": "5m",
    "fast_burn_for": "2m",
    "slow_burn_for": "15m",
    "grafana_folder": "Carbon budgets",
    "grafana_datasource_uid": "prometheus",
}


@dataclass(frozen=True, slots=True)
class Matcher:
    label: str
    op: str  # =, !=, =~, !~
    value: str  # unescaped

    def promql(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.label}{self.op}"{escaped}"'


@dataclass(frozen=True, slots=True)
class BurnTier:
    """One multi-window burn-rate condition: both windows must burn faster than the threshold."""

    name: str
    long_window: str
    short_window: str
    # Share of the whole budget that, spent within the long window, is worth a warning. The threshold is
    # this share expressed as a burn rate, never below 1 (below 1 the budget would not run out).
    budget_share: float
    for_key: str


TIERS = (
    BurnTier("fast", "1h", "5m", 0.02, "fast_burn_for"),
    BurnTier("slow", "6h", "30m", 0.05, "slow_burn_for"),
)
BURN_WINDOWS = ("5m", "30m", "1h", "6h")


@dataclass(frozen=True, slots=True)
class Budget:
    name: str
    matchers: tuple[Matcher, ...]
    period: str
    period_s: float
    grams: float
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def selector(self) -> str:
        return "{" + ", ".join(m.promql() for m in self.matchers) + "}"

    @property
    def metric_selector(self) -> str:
        """The matchers to append to a metric name; nothing for the fleet."""
        return self.selector if self.matchers else ""


@dataclass(frozen=True, slots=True)
class Settings:
    evaluation_interval: str = "1m"
    exhausted_for: str = "5m"
    fast_burn_for: str = "2m"
    slow_burn_for: str = "15m"
    grafana_folder: str = "Carbon budgets"
    grafana_datasource_uid: str = "prometheus"

    @property
    def evaluation_interval_s(self) -> float:
        return parse_duration(self.evaluation_interval)


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
        if not isinstance(value, str) or not value:
            raise ConfigError(f"settings.{key}", f"must be a non-empty string, got {value!r}")
        values[key] = value
    for key in ("evaluation_interval", "exhausted_for", "fast_burn_for", "slow_burn_for"):
        seconds = _duration(values[key], f"settings.{key}")
        if key == "evaluation_interval" and seconds <= 0:
            raise ConfigError("settings.evaluation_interval", "must be longer than 0s")
    return Settings(**values)


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
        emissions_metrics(matchers)
    except ValueError as exc:
        raise ConfigError(f"{where}.selector", str(exc)) from None
    period_s = _duration(raw["period"], f"{where}.period")
    if not _MIN_PERIOD_S <= period_s <= _MAX_PERIOD_S:
        raise ConfigError(f"{where}.period", f"must be between 1d and 366d, got {raw['period']!r}")
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
        if not isinstance(value, str):
            raise ConfigError(f"{where}.labels.{key}", f"must be a string, got {value!r}")
    return Budget(
        name=name,
        matchers=matchers,
        period=raw["period"],
        period_s=period_s,
        grams=float(grams),
        description=description,
        labels=dict(sorted(labels.items())),
    )


def load_budgets(path: Path) -> BudgetFile:
    # Bounded like the exporter's own configuration: size, UTF-8, depth, no anchors or aliases.
    return parse_budgets(read_yaml(str(path), str(path)))


# --------------------------------------------------------------------------------------------- the math


def burn_threshold(budget: Budget, tier: BurnTier) -> float:
    """The burn rate above which a tier warns.

    Burn rate = emissions rate / (budget / period): 1 spends exactly the budget over one period, so any
    sustained rate above 1 exhausts it before the period is over. A tier warns when its long window alone
    spends ``budget_share`` of the budget, i.e. burn rate > share * period / window (14.4 for 2% of a 30d
    budget in 1h, the SRE-workbook fast-burn page), and never below 1.
    """
    raw = tier.budget_share * budget.period_s / parse_duration(tier.long_window)
    return round(max(1.0, raw), 4)


def format_grams(grams: float) -> str:
    """Human text for a mass of CO2e: ``850 g``, ``12.5 kg``, ``3 t``."""
    for unit, size in (("t", 1e6), ("kg", 1e3), ("g", 1.0)):
        if grams >= size or unit == "g":
            value = grams / size
            text = f"{value:.3g}" if value < 1000 else f"{value:.0f}"
            return f"{text} {unit}"
    raise AssertionError("unreachable")


def _num(value: float) -> str:
    """A number as PromQL and YAML both read it, without a trailing '.0'."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _bsel(budget: Budget) -> str:
    return '{budget="' + budget.name + '"}'


def emissions_rate_expr(budget: Budget) -> str:
    parts = [
        f"(sum(rate({metric}{budget.metric_selector}[5m])) or vector(0))"
        for metric in emissions_metrics(budget.matchers)
    ]
    return "\n+\n".join(parts)


def _per_budget_rate(budget: Budget) -> str:
    return f"({_num(budget.grams)} / {_num(budget.period_s)})"


def _scope_text(budget: Budget) -> str:
    return f"{budget.selector} ({budget.description})" if budget.description else budget.selector


def _runbook(alertname: str) -> str:
    return RUNBOOK_BASE + alertname.lower()


def _query_value(series: str, fmt: str) -> str:
    """A Prometheus alert template fragment printing the value of a per-budget recorded series."""
    return (
        f'{{{{ with printf "{series}{{budget=%q}}" $labels.budget | query }}}}'
        f"{{{{ . | first | value | {fmt} }}}}{{{{ end }}}}"
    )


def render_rules(bf: BudgetFile) -> dict[str, Any]:
    """The Prometheus rules file (as data) for every budget: recorded series first, then the alerts."""
    settings = bf.settings
    step = settings.evaluation_interval_s
    rules: list[dict[str, Any]] = []
    for b in bf.budgets:
        labels = {"budget": b.name, "period": b.period, "scope": b.selector}
        sel = _bsel(b)

        def record(name: str, expr: str, labels: dict[str, str] = labels) -> None:
            rules.append({"record": name, "expr": expr, "labels": dict(labels)})

        record("footprint:budget_grams", f"vector({_num(b.grams)})")
        record("footprint:budget_period_seconds", f"vector({_num(b.period_s)})")
        record("footprint:budget_emissions_grams:rate5m", emissions_rate_expr(b))
        # Integrating the recorded rate over the period (sum of samples x step) costs one series per budget
        # instead of re-reading every raw series of the scope over 30 days at each evaluation.
        record(
            "footprint:budget_used_grams",
            f"sum_over_time(footprint:budget_emissions_grams:rate5m{sel}[{b.period}]) * {_num(step)}",
        )
        record(
            "footprint:budget_remaining_grams",
            f"clamp_min(footprint:budget_grams{sel} - footprint:budget_used_grams{sel}, 0)",
        )
        record(
            "footprint:budget_usage:ratio", f"footprint:budget_used_grams{sel} / footprint:budget_grams{sel}"
        )
        for window in BURN_WINDOWS:
            rate = (
                f"footprint:budget_emissions_grams:rate5m{sel}"
                if window == "5m"
                else f"avg_over_time(footprint:budget_emissions_grams:rate5m{sel}[{window}])"
            )
            record(f"footprint:budget_burn_rate:rate{window}", f"{rate} / {_per_budget_rate(b)}")
        record(
            "footprint:budget_exhaustion_seconds",
            f"footprint:budget_remaining_grams{sel}"
            f" / avg_over_time(footprint:budget_emissions_grams:rate5m{sel}[1h])",
        )

    for b in bf.budgets:
        sel = _bsel(b)
        used = _query_value("footprint:budget_used_grams", "humanize") + "g"
        pct = _query_value("footprint:budget_usage:ratio", "humanizePercentage")
        left = _query_value("footprint:budget_exhaustion_seconds", "humanizeDuration")
        for tier in TIERS:
            threshold = _num(burn_threshold(b, tier))
            rules.append(
                {
                    "alert": "CarbonBudgetBurnRateHigh",
                    "expr": (
                        f"footprint:budget_burn_rate:rate{tier.long_window}{sel} > {threshold}\n"
                        f"and\nfootprint:budget_burn_rate:rate{tier.short_window}{sel} > {threshold}"
                    ),
                    "for": getattr(settings, tier.for_key),
                    "labels": {"severity": "warning", "window": tier.name, "budget": b.name, **b.labels},
                    "annotations": {
                        "summary": (
                            f"Carbon budget {b.name} is burning "
                            f'{{{{ $value | printf "%.1f" }}}}x faster than it can last {b.period}.'
                        ),
                        "description": (
                            f"Scope {_scope_text(b)} emitted over the last {tier.long_window} at "
                            f'{{{{ $value | printf "%.1f" }}}}x the rate that spends exactly its '
                            f"{format_grams(b.grams)} "
                            f"budget in {b.period} (threshold {threshold}x over {tier.long_window} and "
                            f"{tier.short_window}). Used {used} of {format_grams(b.grams)} ({pct}) "
                            "in the rolling "
                            f"{b.period}; at the last hour's pace the rest is gone in {left}."
                        ),
                        "runbook_url": _runbook("CarbonBudgetBurnRateHigh"),
                    },
                }
            )
        rules.append(
            {
                "alert": "CarbonBudgetExhausted",
                "expr": f"footprint:budget_usage:ratio{sel} > 1",
                "for": settings.exhausted_for,
                "labels": {"severity": "critical", "budget": b.name, **b.labels},
                "annotations": {
                    "summary": f"Carbon budget {b.name} is exhausted: "
                    "{{ $value | humanizePercentage }} used.",
                    "description": (
                        f"Scope {_scope_text(b)} emitted {used} CO2e in the last {b.period}, "
                        f"{{{{ $value | humanizePercentage }}}} of its {format_grams(b.grams)} budget."
                    ),
                    "runbook_url": _runbook("CarbonBudgetExhausted"),
                },
            }
        )
    return {"groups": [{"name": RULE_GROUP, "interval": settings.evaluation_interval, "rules": rules}]}


def _uid(kind: str, name: str) -> str:
    """A Grafana rule uid: readable, stable, at most 40 characters of [a-zA-Z0-9_-]."""
    base = re.sub(r"[^a-zA-Z0-9_-]", "-", f"fp-{kind}-{name}")
    if len(base) <= 40:
        return base
    return base[:31] + "-" + hashlib.sha256(base.encode()).hexdigest()[:8]


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


def _reduce(ref: str, of: str) -> dict[str, Any]:
    return _grafana_expr(ref, {"type": "reduce", "expression": of, "reducer": "last"})


def render_grafana(bf: BudgetFile) -> dict[str, Any]:
    """The same budget alerts as Grafana-managed rules (file provisioning format, apiVersion 1).

    They query the budget series recorded by the Prometheus rules file, so both outputs alert on the very
    same numbers with the same thresholds and pending periods.
    """
    s = bf.settings
    uid, step = s.grafana_datasource_uid, s.evaluation_interval_s
    rules: list[dict[str, Any]] = []
    for b in bf.budgets:
        sel = _bsel(b)
        facts = [
            _grafana_query("U", f"footprint:budget_used_grams{sel}", uid, step),
            _reduce("V", "U"),
            _grafana_query("P", f"footprint:budget_usage:ratio{sel}", uid, step),
            _reduce("Q", "P"),
        ]
        used, pct = "{{ humanize $values.V.Value }}g", "{{ humanizePercentage $values.Q.Value }}"
        labels = {"budget": b.name, "period": b.period, "scope": b.selector}
        for tier in TIERS:
            threshold = _num(burn_threshold(b, tier))
            rules.append(
                {
                    "uid": _uid(f"burn-{tier.name}", b.name),
                    "title": f"CarbonBudgetBurnRateHigh {b.name} {tier.name}",
                    "condition": "E",
                    "data": [
                        _grafana_query(
                            "A", f"footprint:budget_burn_rate:rate{tier.long_window}{sel}", uid, step
                        ),
                        _grafana_query(
                            "B", f"footprint:budget_burn_rate:rate{tier.short_window}{sel}", uid, step
                        ),
                        _reduce("C", "A"),
                        _reduce("D", "B"),
                        *facts,
                        _grafana_expr(
                            "E", {"type": "math", "expression": f"$C > {threshold} && $D > {threshold}"}
                        ),
                    ],
                    "noDataState": "OK",
                    "execErrState": "Error",
                    "for": getattr(s, tier.for_key),
                    "isPaused": False,
                    "labels": {**labels, "severity": "warning", "window": tier.name, **b.labels},
                    "annotations": {
                        "summary": (
                            f"Carbon budget {b.name} is burning "
                            f'{{{{ printf "%.1f" $values.C.Value }}}}x faster than it can last {b.period}.'
                        ),
                        "description": (
                            f"Scope {_scope_text(b)} emitted over the last {tier.long_window} at "
                            f'{{{{ printf "%.1f" $values.C.Value }}}}x the rate that spends exactly its '
                            f"{format_grams(b.grams)} budget in {b.period} (threshold {threshold}x over "
                            f"{tier.long_window} and {tier.short_window}). "
                            f"Used {used} of {format_grams(b.grams)} "
                            f"({pct}) in the rolling {b.period}."
                        ),
                        "runbook_url": _runbook("CarbonBudgetBurnRateHigh"),
                    },
                }
            )
        rules.append(
            {
                "uid": _uid("exhausted", b.name),
                "title": f"CarbonBudgetExhausted {b.name}",
                "condition": "T",
                "data": [
                    *facts,
                    _grafana_expr(
                        "T",
                        {
                            "type": "threshold",
                            "expression": "Q",
                            "conditions": [{"evaluator": {"type": "gt", "params": [1]}}],
                        },
                    ),
                ],
                "noDataState": "OK",
                "execErrState": "Error",
                "for": s.exhausted_for,
                "isPaused": False,
                "labels": {**labels, "severity": "critical", **b.labels},
                "annotations": {
                    "summary": f"Carbon budget {b.name} is exhausted: {pct} used.",
                    "description": (
                        f"Scope {_scope_text(b)} emitted {used} CO2e in the last {b.period}, {pct} of its "
                        f"{format_grams(b.grams)} budget."
                    ),
                    "runbook_url": _runbook("CarbonBudgetExhausted"),
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
    }


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
    """The text of the Prometheus rules file and of the Grafana alert rules file."""
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
        description="Render carbon budgets into Prometheus and Grafana alert rules.",
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
            help="Grafana alert rules file",
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
