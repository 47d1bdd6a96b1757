"""Asks Prometheus for a period's counter increases, factors and data-quality signals; builds the report."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from exporter import catalogue
from exporter.report.model import Bucket, ChartSeries, Factor, Note, Report
from exporter.report.prometheus_api import PrometheusApi, Sample
from exporter.report.rows import ENERGY_PARTS, Stored, build_rows, total_of

DAY_S = 86400.0
# The carbon alert FootprintCarbonIntensityStale fires above this age; the report uses the same line.
STALE_AFTER_S = 7200.0
# At most this many bars in the energy chart: beyond, a bar covers several days.
MAX_BUCKETS = 92
# Points per line in the intensity and budget charts.
CHART_POINTS = 400

# Part name -> the node-level counter and the per-process counter it is read from ("" where there is none).
PARTS: dict[str, tuple[str, str]] = {
    "energy_gpu": ("footprint_gpu_energy_joules_total", "footprint_process_gpu_energy_joules_total"),
    "energy_cpu": ("footprint_cpu_energy_joules_total", "footprint_process_cpu_energy_joules_total"),
    "energy_unmetered": ("footprint_node_unmetered_energy_joules_total", ""),
    "loc_gpu": ("footprint_gpu_emissions_grams_total", "footprint_process_gpu_emissions_grams_total"),
    "loc_cpu": ("footprint_cpu_emissions_grams_total", "footprint_process_cpu_emissions_grams_total"),
    "loc_unmetered": ("footprint_node_unmetered_emissions_grams_total", ""),
    "mkt_gpu": (
        "footprint_gpu_market_emissions_grams_total",
        "footprint_process_gpu_market_emissions_grams_total",
    ),
    "mkt_cpu": (
        "footprint_cpu_market_emissions_grams_total",
        "footprint_process_cpu_market_emissions_grams_total",
    ),
    "emb_gpu": (
        "footprint_gpu_embodied_emissions_grams_total",
        "footprint_process_gpu_embodied_emissions_grams_total",
    ),
    "emb_node": ("footprint_node_embodied_emissions_grams_total", ""),
    "water": ("footprint_water_litres_total", ""),
}
# Generated-token counters of the inference servers, as prometheus/rules/inference.rules.yml reads them
# (docs/inference.md): vLLM, SGLang, TGI (a histogram's sum), and Triton's TensorRT-LLM backend.
TOKEN_COUNTERS = (
    '{__name__=~"vllm:generation_tokens_total|sglang:generation_tokens_total|tgi_request_generated_tokens_sum"'
    ', pod!=""}',
    'nv_llm_output_token_len_sum{pod!="", response_metric_type="total_output_tokens"}',
)
BUDGET_USAGE = "footprint:budget_usage:ratio"
WORKLOAD_LABELS = frozenset(catalogue.WORKLOAD)


@dataclass
class _Intensity:
    """Sample count, sum, extremes and instances of one (zone, provider, signal, basis) over the period."""

    count: float = 0.0
    sum: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    instances: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class ReportSpec:
    by: str
    start: float
    end: float
    match: str = ""  # extra label matchers for every footprint series, without braces: cluster="eu-1"


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def day_buckets(start: float, end: float) -> list[tuple[float, float]]:
    """UTC days (or runs of days, for long periods) covering [start, end], the first and last clipped."""
    first_midnight = math.floor(start / DAY_S) * DAY_S
    days = math.ceil((end - first_midnight) / DAY_S)
    size = DAY_S * max(1, math.ceil(days / MAX_BUCKETS))
    buckets = []
    edge = first_midnight
    while edge < end:
        lo, hi = max(edge, start), min(edge + size, end)
        if hi > lo:
            buckets.append((lo, hi))
        edge += size
    return buckets


class ReportBuilder:
    """Runs the report's queries against one Prometheus and assembles the report (see docs/report.md)."""

    def __init__(self, api: PrometheusApi, spec: ReportSpec, clock: Callable[[], float] = time.time) -> None:
        self.api = api
        self.spec = spec
        self.clock = clock
        self.workload = spec.by in WORKLOAD_LABELS

    # PromQL building

    def sel(self, metric: str, extra: str = "") -> str:
        matchers = ", ".join(m for m in (self.spec.match, extra) if m)
        return f"{metric}{{{matchers}}}" if matchers else metric

    def _group_labels(self) -> tuple[str, ...]:
        return ("instance",) if self.spec.by == "instance" else (self.spec.by, "instance")

    def _increase(self, metric: str, by: Sequence[str], start: float, end: float) -> list[Sample]:
        return self._increase_each(metric, by, [(start, end)])[0]

    def _increase_each(
        self, metric: str, by: Sequence[str], buckets: Sequence[tuple[float, float]]
    ) -> list[list[Sample]]:
        """The increase by group in each bucket; a run of equal, adjacent buckets (whole days) is one
        range query whose step is the bucket, so a month costs one query per counter, not thirty."""
        results: list[list[Sample]] = [[] for _ in buckets]
        first = 0
        while first < len(buckets):
            length = buckets[first][1] - buckets[first][0]
            last = first
            while (
                last + 1 < len(buckets)
                and abs(buckets[last + 1][1] - buckets[last + 1][0] - length) < 1e-6
                and abs(buckets[last + 1][0] - buckets[last][1]) < 1e-6
            ):
                last += 1
            promql = f"sum by ({', '.join(by)}) (increase({self.sel(metric)}[{_duration(length)}]))"
            if last == first:
                results[first] = self.api.query(promql, buckets[first][1])
            else:
                index = {round(buckets[k][1], 3): k for k in range(first, last + 1)}
                for series in self.api.query_range(promql, buckets[first][1], buckets[last][1], length):
                    for t, value in series.points:
                        k = index.get(round(t, 3))
                        if k is not None:
                            results[k].append(Sample(series.labels, value))
            first = last + 1
        return results

    def _over_time(
        self, func: str, agg: str, metric: str, by: Sequence[str], window: float, extra: str = ""
    ) -> list[Sample]:
        promql = f"{agg} by ({', '.join(by)}) ({func}({self.sel(metric, extra)}[{_duration(window)}]))"
        return self.api.query(promql, self.spec.end)

    # Parts

    def _parts(self, buckets: Sequence[tuple[float, float]], parts: Sequence[str]) -> list[Stored]:
        """For each bucket of time, the increases of the parts' counters (see Stored)."""
        stored = [Stored(workload=self.workload) for _ in buckets]
        by = self._group_labels()

        def keyed(samples: list[Sample]) -> dict[tuple[str, str], float]:
            return {
                (s.labels.get(self.spec.by, ""), s.labels.get("instance", "")): s.value
                for s in samples
                if not math.isnan(s.value)
            }

        for part in parts:
            node_metric, process_metric = PARTS[part]
            if self.workload:
                if process_metric:
                    for target, samples in zip(
                        stored, self._increase_each(process_metric, by, buckets), strict=True
                    ):
                        target.parts[part] = keyed(samples)
                for target, samples in zip(
                    stored, self._increase_each(node_metric, ("instance",), buckets), strict=True
                ):
                    values = {
                        s.labels.get("instance", ""): s.value for s in samples if not math.isnan(s.value)
                    }
                    if values:
                        target.node[part] = values
            else:
                for target, samples in zip(
                    stored, self._increase_each(node_metric, by, buckets), strict=True
                ):
                    grouped = keyed(samples)
                    if grouped:
                        target.parts[part] = grouped
        return stored

    # The whole report

    def build(self, prometheus_url: str) -> Report:
        spec = self.spec
        now = self.clock()
        notes: list[Note] = []
        end = spec.end
        if end > now:
            notes.append(
                Note("future_end", f"--to is in the future; the report ends now ({_when(now)}).", (), "info")
            )
            end = now
            self.spec = spec = ReportSpec(spec.by, spec.start, end, spec.match)
        window = end - spec.start
        stored = self._parts([(spec.start, end)], tuple(PARTS))[0]
        instance_notes: dict[str, set[str]] = defaultdict(set)
        stored.instance_notes = instance_notes

        pue = self._over_time("avg_over_time", "avg", "footprint_pue_ratio", ("instance",), window)
        stored.pue = {s.labels.get("instance", ""): s.value for s in pue if not math.isnan(s.value)}
        coverage_step = self._coverage(stored, window, notes)
        self._restarts(window, notes, instance_notes)
        factors = self._intensity_factors(window, notes, instance_notes)
        factors += self._pue_factors(window)
        factors += self._emission_factors(window)
        self._device_notes(window, notes, instance_notes)
        self._tokens(stored, window)

        rows = build_rows(stored)
        report = Report(
            by=spec.by,
            start=spec.start,
            end=end,
            prometheus_url=prometheus_url,
            generated_at=now,
            match=spec.match,
            rows=rows,
            total=total_of(rows, stored),
            factors=factors,
            coverage=dict(stored.coverage),
            coverage_step_s=coverage_step,
        )
        notes += self._row_notes(report, stored)
        report.notes = _ordered(notes)
        report.daily = self._daily(spec.start, end)
        step = max(60.0, window / CHART_POINTS)
        report.intensity = self._lines(
            f"avg by (zone, provider, signal) ({self.sel('footprint_grid_carbon_intensity_grams_per_kwh')})",
            step,
            lambda labels: " ".join(
                v for v in (labels.get("zone"), labels.get("provider"), labels.get("signal")) if v
            ),
        )
        report.budgets = self._lines(
            f"max by (budget) ({BUDGET_USAGE})", step, lambda labels: labels.get("budget", "")
        )
        return report

    def _coverage(self, stored: Stored, window: float, notes: list[Note]) -> float:
        """Instance -> fraction of the period's steps with at least one stored sample of its exporter."""
        counts = self._over_time("count_over_time", "sum", "footprint_samples_total", ("instance",), window)
        intervals = [window / s.value for s in counts if s.value > 0]
        # Twice the scrape interval at least, so that jitter never makes an empty step out of a regular
        # scrape; five minutes at least (Prometheus' own staleness window); at most 2000 steps.
        step = min(window, max(300.0, window / 2000.0, 2 * min(intervals, default=0.0)))
        steps = max(1, math.floor(window / step))
        promql = (
            f"sum by (instance) (count_over_time({self.sel('footprint_samples_total')}[{_duration(step)}]))"
        )
        series = self.api.query_range(promql, self.spec.start + step, self.spec.start + steps * step, step)
        for s in series:
            present = sum(1 for _, v in s.points if v > 0)
            stored.coverage[s.labels.get("instance", "")] = min(1.0, present / steps)
        gaps = sorted((c, inst) for inst, c in stored.coverage.items() if c < 0.99)
        if gaps:
            for _, inst in gaps:
                stored.instance_notes.setdefault(inst, set()).add("coverage_gap")
            lowest, where = gaps[0]
            notes.append(
                Note(
                    "coverage_gap",
                    f"Prometheus holds samples for less than 99% of the period on {len(gaps)} node(s) "
                    f"(lowest {where}: {_pct(lowest)}, in steps of {step:g} s). Energy across a scrape gap "
                    "is still counted when the exporter kept running; energy used while it was down is not.",
                    tuple(inst for _, inst in gaps),
                )
            )
        return step

    def _restarts(self, window: float, notes: list[Note], instance_notes: dict[str, set[str]]) -> None:
        resets = self._over_time("resets", "max", "footprint_samples_total", ("instance",), window)
        restarted = sorted((s.labels.get("instance", ""), int(s.value)) for s in resets if s.value > 0)
        for inst, _ in restarted:
            instance_notes[inst].add("exporter_restart")
        if restarted:
            listed = ", ".join(f"{inst} ({n}x)" for inst, n in restarted)
            notes.append(
                Note(
                    "exporter_restart",
                    f"The exporter restarted during the period on {listed}. Its counters started again from "
                    "zero, which increase() counts as a reset; energy drawn between the last scrape before "
                    "a restart and the first after it is counted only if the exporter kept its totals (a "
                    "clean shutdown with a state file), else it is missing.",
                    tuple(inst for inst, _ in restarted),
                    "info",
                )
            )

    def _intensity_factors(
        self, window: float, notes: list[Note], instance_notes: dict[str, set[str]]
    ) -> list[Factor]:
        metric = "footprint_grid_carbon_intensity_grams_per_kwh"
        by = ("instance", "zone", "provider", "signal", "basis")
        counts = self._over_time("count_over_time", "sum", metric, by, window)
        sums = {_key(s, by): s.value for s in self._over_time("sum_over_time", "sum", metric, by, window)}
        lows = {_key(s, by): s.value for s in self._over_time("min_over_time", "min", metric, by, window)}
        highs = {_key(s, by): s.value for s in self._over_time("max_over_time", "max", metric, by, window)}
        info_by = ("zone", "provider", "signal", "source", "year")
        info = {
            _key(s, info_by[:3]): (s.labels.get("source", ""), s.labels.get("year", ""))
            for s in self._over_time(
                "max_over_time", "max", "footprint_carbon_intensity_info", info_by, window
            )
        }
        per_signal: dict[str, float] = defaultdict(float)
        grouped: dict[tuple[str, ...], _Intensity] = {}
        world: dict[str, float] = defaultdict(float)
        per_instance: dict[str, float] = defaultdict(float)
        for s in counts:
            key = _key(s, by)
            inst, zone, _, signal, _ = key
            per_signal[signal] += s.value
            if signal == "average":
                per_instance[inst] += s.value
                if zone == "WORLD":
                    world[inst] += s.value
            acc = grouped.setdefault(key[1:], _Intensity())
            acc.count += s.value
            acc.sum += sums.get(key, 0.0)
            acc.low = min(acc.low, lows.get(key, math.inf))
            acc.high = max(acc.high, highs.get(key, -math.inf))
            acc.instances.add(inst)
        factors = []
        for (zone, provider, signal, basis), acc in sorted(grouped.items()):
            source, year = info.get((zone, provider, signal), ("", ""))
            factors.append(
                Factor(
                    kind="grid_intensity",
                    name=zone,
                    value=acc.sum / acc.count if acc.count else None,
                    unit="gCO2e/kWh",
                    minimum=acc.low if math.isfinite(acc.low) else None,
                    maximum=acc.high if math.isfinite(acc.high) else None,
                    provider=provider,
                    signal=signal,
                    basis=basis,
                    source=source,
                    year=year,
                    share=acc.count / per_signal[signal] if per_signal[signal] else None,
                    instances=tuple(sorted(acc.instances)),
                )
            )
        on_world = sorted(inst for inst in world if world[inst] > 0)
        for inst in on_world:
            instance_notes[inst].add("world_average")
        if on_world:
            share = sum(world.values()) / sum(per_instance[i] for i in on_world)
            notes.append(
                Note(
                    "world_average",
                    f"Emissions on {len(on_world)} node(s) used the world-average grid intensity "
                    f"(zone WORLD, a yearly figure) for {_pct(share)} of their samples: set carbon.zone "
                    "to the grid the nodes draw from (docs/carbon.md).",
                    tuple(on_world),
                )
            )
        embedded = [
            f for f in factors if f.provider == "embedded" and f.name != "WORLD" and f.signal == "average"
        ]
        for f in embedded:
            notes.append(
                Note(
                    "embedded_table",
                    f"Zone {f.name} used the embedded table's yearly average ({f.value:.0f} g/kWh, "
                    f"{f.source or 'source not stated'}, {f.year or 'year not stated'}) for "
                    f"{_pct(f.share or 0.0)} of the samples: no hourly data; configure a provider for it.",
                    f.instances,
                    "info",
                )
            )
        stale = self._over_time(
            "max_over_time",
            "max",
            "footprint_carbon_intensity_age_seconds",
            ("instance", "provider"),
            window,
            'provider!~"embedded|static"',
        )
        old = sorted(
            (s.labels.get("instance", ""), s.labels.get("provider", ""), s.value)
            for s in stale
            if s.value > STALE_AFTER_S
        )
        for inst, _, _ in old:
            instance_notes[inst].add("stale_intensity")
        if old:
            worst = max(old, key=lambda x: x[2])
            notes.append(
                Note(
                    "stale_intensity",
                    f"An intensity older than {STALE_AFTER_S / 3600:g} h was in use on "
                    f"{len({o[0] for o in old})} node(s) (oldest: {worst[2] / 3600:.1f} h from {worst[1]} "
                    f"on {worst[0]}): the provider's "
                    "refreshes failed and its last value was kept until carbon.max_age.",
                    tuple(sorted({o[0] for o in old})),
                )
            )
        return factors

    def _pue_factors(self, window: float) -> list[Factor]:
        by = ("instance",)
        means = self._over_time("avg_over_time", "avg", "footprint_pue_ratio", by, window)
        lows = {
            _key(s, by): s.value
            for s in self._over_time("min_over_time", "min", "footprint_pue_ratio", by, window)
        }
        highs = {
            _key(s, by): s.value
            for s in self._over_time("max_over_time", "max", "footprint_pue_ratio", by, window)
        }
        grouped: dict[tuple[float, float, float], list[str]] = defaultdict(list)
        for s in means:
            key = _key(s, by)
            grouped[(round(s.value, 6), lows.get(key, s.value), highs.get(key, s.value))].append(key[0])
        return [
            Factor("pue", "PUE", mean, "ratio", low, high, instances=tuple(sorted(insts)))
            for (mean, low, high), insts in sorted(grouped.items())
        ]

    def _emission_factors(self, window: float) -> list[Factor]:
        by = ("kind", "name", "unit", "basis", "source", "year")
        found = self._over_time("avg_over_time", "avg", "footprint_emission_factor", by, window)
        return [
            Factor(
                kind=s.labels.get("kind", ""),
                name=s.labels.get("name", ""),
                value=s.value,
                unit=s.labels.get("unit", ""),
                basis=s.labels.get("basis", ""),
                source=s.labels.get("source", ""),
                year=s.labels.get("year", ""),
            )
            for s in sorted(found, key=lambda s: _key(s, by))
        ]

    def _device_notes(self, window: float, notes: list[Note], instance_notes: dict[str, set[str]]) -> None:
        def flag(code: str, found: list[Sample], text: str) -> None:
            """A note on the instances of ``found``, each of which carries its code in the rows."""
            for s in found:
                instance_notes[s.labels.get("instance", "")].add(code)
            notes.append(Note(code, text, tuple(sorted({s.labels.get("instance", "") for s in found}))))

        unmeasured = self._over_time(
            "max_over_time",
            "max",
            "footprint_device_energy_method_info",
            ("instance", "kind", "device", "reason"),
            window,
            'method="none"',
        )
        if unmeasured:
            listed = "; ".join(
                f"{s.labels.get('instance', '')} {s.labels.get('kind', '')} {s.labels.get('device', '')} "
                f"({s.labels.get('reason', '') or 'no reason given'})"
                for s in unmeasured[:10]
            )
            more = f" and {len(unmeasured) - 10} more" if len(unmeasured) > 10 else ""
            flag(
                "unmeasured_device",
                unmeasured,
                f"Devices gave no power or energy at some time in the period, so no energy or emissions "
                f"accrued for them then: {listed}{more}.",
            )
        down = self.api.query(
            f"min by (instance, gpu, uuid) "
            f"(min_over_time({self.sel('footprint_gpu_up')}[{_duration(window)}])) == 0",
            self.spec.end,
        )
        if down:
            flag(
                "gpu_down",
                down,
                f"{len(down)} GPU(s) were down (lost or failing reads) at some time in the period; "
                "energy they drew while down is not in the figures: "
                + ", ".join(
                    f"{s.labels.get('instance', '')} gpu {s.labels.get('gpu', '')}" for s in down[:10]
                )
                + ".",
            )
        sources = self.api.query(
            f"min by (instance, source) "
            f"(min_over_time({self.sel('footprint_source_up')}[{_duration(window)}])) == 0",
            self.spec.end,
        )
        if sources:
            flag(
                "source_down",
                sources,
                "Sources failed at some time in the period (their devices' energy is missing while they "
                "were down): "
                + ", ".join(
                    f"{s.labels.get('source', '')} on {s.labels.get('instance', '')}" for s in sources[:10]
                )
                + ".",
            )

    def _tokens(self, stored: Stored, window: float) -> None:
        counted: dict[tuple[str, str], float] = defaultdict(float)
        for counter in TOKEN_COUNTERS:
            promql = f"sum by (namespace, pod) (increase({counter}[{_duration(window)}]))"
            for s in self.api.query(promql, self.spec.end):
                if s.value > 0 and s.labels.get("pod"):
                    counted[(s.labels.get("namespace", ""), s.labels["pod"])] += s.value
        stored.tokens = dict(counted)
        if not stored.tokens:
            return
        labels = tuple(dict.fromkeys((self.spec.by, "namespace", "pod")))
        energy = self._increase(PARTS["energy_gpu"][1], labels, self.spec.start, self.spec.end)
        stored.pod_energy = {
            (s.labels.get(self.spec.by, ""), s.labels.get("namespace", ""), s.labels.get("pod", "")): s.value
            for s in energy
            if not math.isnan(s.value)
        }

    def _row_notes(self, report: Report, stored: Stored) -> list[Note]:
        notes: list[Note] = []
        rows = report.rows
        if not rows:
            return notes
        if all(r.group == "" for r in rows if r.kind == "group"):
            notes.append(
                Note(
                    "label_absent",
                    f"No footprint series in the period carries the label {report.by!r}: every figure is in "
                    "the row with an empty value.",
                )
            )

        def missing_on(part_names: Sequence[str]) -> list[str]:
            instances = sorted({i for r in rows for i in r.instances if not _served(stored, part_names, i)})
            return instances

        checks = (
            (
                "market_missing",
                ("mkt_gpu", "mkt_cpu"),
                "Market-based emissions are empty where a group used nodes "
                "without carbon.market (the market-based counters are served only with it)",
                "info",
            ),
            (
                "no_intensity",
                ("loc_gpu", "loc_cpu"),
                "Location-based emissions are empty where a group used nodes "
                "that served no emissions counters (no carbon accounting)",
                "warning",
            ),
            (
                "water_missing",
                ("water",),
                "Water is empty where a group used nodes without carbon.wue",
                "info",
            ),
            (
                "embodied_missing",
                ("emb_gpu", "emb_node"),
                "Embodied emissions are empty where a group used nodes that served no embodied counters",
                "info",
            ),
        )
        for code, part_names, text, severity in checks:
            missing = missing_on(part_names)
            if missing and any(code in r.notes for r in rows):
                notes.append(Note(code, f"{text}: {', '.join(missing[:10])}.", tuple(missing), severity))
        pue_missing = sorted({i for r in rows for i in r.instances if i not in stored.pue})
        if pue_missing:
            notes.append(
                Note(
                    "pue_missing",
                    f"No footprint_pue_ratio from {', '.join(pue_missing[:10])}: facility energy is "
                    "empty for the groups that used them.",
                    tuple(pue_missing),
                )
            )
        components_only = sorted(
            {i for r in rows for i in r.instances if not _served(stored, ("energy_unmetered",), i)}
        )
        if components_only:
            notes.append(
                Note(
                    "components_only",
                    f"IT energy on {len(components_only)} node(s) is GPU + CPU + DRAM only "
                    "(no BMC node source, --source.node): fans, NICs, storage and power-supply losses "
                    "are not in it.",
                    tuple(components_only),
                    "info",
                )
            )
        both = sorted(
            {
                i
                for r in rows
                for i in r.instances
                if _served(stored, ("energy_unmetered",), i) and _served(stored, ("mkt_gpu", "mkt_cpu"), i)
            }
        )
        if both:
            notes.append(
                Note(
                    "market_excludes_unmetered",
                    "Market-based emissions cover GPU, CPU and DRAM energy: the unmetered node energy a BMC "
                    f"measures has no market-based counter (on {', '.join(both[:10])}); its location-based "
                    "emissions are counted.",
                    tuple(both),
                    "info",
                )
            )
        for r in rows:
            if "attributed_exceeds_measured" in r.notes:
                notes.append(
                    Note(
                        "attributed_exceeds_measured",
                        f"Workloads were charged {-(r.figures.energy_kwh or 0.0):.4f} kWh more than the "
                        "nodes measured (the unattributed row is negative): increase() extrapolates series "
                        "that start or end inside the period by up to half a scrape interval.",
                        r.instances,
                    )
                )
        if stored.tokens and not any(r.figures.tokens for r in rows):
            notes.append(Note("no_tokens", "Token counters exist but match no reported pod.", (), "info"))
        return notes

    def _daily(self, start: float, end: float) -> list[Bucket]:
        buckets = day_buckets(start, end)
        out = []
        for (lo, hi), stored in zip(buckets, self._parts(buckets, ENERGY_PARTS), strict=True):
            energy = {
                r.group: r.figures.energy_kwh for r in build_rows(stored) if r.figures.energy_kwh is not None
            }
            out.append(Bucket(lo, hi, energy))
        return out

    def _lines(self, promql: str, step: float, name: Callable[[dict[str, str]], str]) -> list[ChartSeries]:
        start, end = self.spec.start, self.spec.end
        series = self.api.query_range(promql, start, end, step)
        return [
            ChartSeries(name(s.labels), tuple(p for p in s.points if not math.isnan(p[1])))
            for s in sorted(series, key=lambda s: sorted(s.labels.items()))
        ]


def _served(stored: Stored, parts: Sequence[str], instance: str) -> bool:
    if stored.workload:
        return any(instance in stored.node.get(p, {}) for p in parts)
    return any(inst == instance for p in parts for (_, inst) in stored.parts.get(p, {}))


def _key(sample: Sample, labels: Sequence[str]) -> tuple[str, ...]:
    return tuple(sample.labels.get(label, "") for label in labels)


_ORDER = {"warning": 0, "info": 1}


def _ordered(notes: list[Note]) -> list[Note]:
    return sorted(notes, key=lambda n: _ORDER.get(n.severity, 2))
