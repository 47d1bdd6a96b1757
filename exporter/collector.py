"""Builds fresh metric families from the latest snapshot on every scrape; no I/O happens here."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.catalogue import CATALOGUE, MetricSpec
from exporter.model import NodeState, ProcessState, Snapshot

_GPU_GAUGES = (
    ("footprint_gpu_power_watts", "power_w"),
    ("footprint_gpu_utilization_ratio", "util"),
    ("footprint_gpu_memory_used_bytes", "mem_used_bytes"),
    ("footprint_gpu_memory_total_bytes", "mem_total_bytes"),
    ("footprint_gpu_temperature_celsius", "temp_c"),
    ("footprint_gpu_power_limit_watts", "power_limit_w"),
)


class _Families:
    """Lazily created families keyed by metric name, in catalogue order on output."""

    def __init__(self) -> None:
        self._by_name: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}

    def add(self, name: str, labels: tuple[str, ...] | list[str], value: float) -> None:
        family = self._by_name.get(name)
        if family is None:
            spec: MetricSpec = CATALOGUE[name]
            if spec.type == "counter":
                family = CounterMetricFamily(spec.family, spec.help, labels=spec.labels)
            else:
                family = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
            self._by_name[name] = family
        family.add_metric(labels, value)

    def __iter__(self) -> Iterator[Metric]:
        for name in CATALOGUE:
            if name in self._by_name:
                yield self._by_name[name]


def _workload_labels(p: ProcessState) -> list[str]:
    w = p.workload
    return [p.pid, w.comm, w.user, w.container_id, w.pod, w.namespace, w.slurm_job_id]


def _add_node(f: _Families, node: NodeState) -> None:
    # A BMC without a recent good reading: its power and energy are left out (a stale counter would
    # read as a node drawing nothing); the basis says the node totals rest on the components meanwhile.
    method = [node.method]
    basis = "node" if node.fresh else "components"
    f.add("footprint_node_energy_basis_info", [basis, node.method], 1)
    if node.fresh:
        if node.power_w is not None:
            f.add("footprint_node_power_watts", method, node.power_w)
        f.add("footprint_node_energy_joules_total", method, node.energy_j_total)
        f.add("footprint_node_unmetered_energy_joules_total", [], node.unmetered_energy_j_total)
        if node.unmetered_unattributed_j_total is not None:
            f.add(
                "footprint_node_unmetered_unattributed_energy_joules_total",
                [],
                node.unmetered_unattributed_j_total,
            )
        if node.emissions_g_total is not None and node.unmetered_emissions_g_total is not None:
            f.add("footprint_node_emissions_grams_total", method, node.emissions_g_total)
            f.add("footprint_node_unmetered_emissions_grams_total", [], node.unmetered_emissions_g_total)
        if node.market_emissions_g_total is not None and node.unmetered_market_emissions_g_total is not None:
            f.add("footprint_node_market_emissions_grams_total", method, node.market_emissions_g_total)
            f.add(
                "footprint_node_unmetered_market_emissions_grams_total",
                [],
                node.unmetered_market_emissions_g_total,
            )
        for part in node.parts:
            f.add("footprint_node_reading_info", [node.method, part], 1)
    f.add("footprint_node_data_quality_errors_total", ["below_components"], node.below_components_total)
    f.add("footprint_node_data_quality_errors_total", ["not_compared"], node.gaps_total)


class ConnectionLimitCollector(Collector):
    """Serves the HTTP connection bounds' counts (ConnectionLimiter lives beside the sampler, not in it)."""

    def __init__(self, rejected: Callable[[], dict[str, int]]) -> None:
        self.rejected = rejected

    def collect(self) -> Iterator[Metric]:
        f = _Families()
        for reason, count in sorted(self.rejected().items()):
            f.add("footprint_http_connections_rejected_total", [reason], count)
        yield from f


class SnapshotCollector(Collector):
    """A prometheus_client collector serving whatever snapshot ``get_snapshot`` returns now."""

    def __init__(
        self, get_snapshot: Callable[[], Snapshot], wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.get_snapshot = get_snapshot
        self.wall_clock = wall_clock
        self._build = (__version__, platform.python_version())

    def collect(self) -> Iterator[Metric]:
        snap = self.get_snapshot()
        f = _Families()
        for g in snap.gpus:
            r = g.reading
            gl = [str(r.index), r.uuid]
            f.add("footprint_gpu_info", [*gl, r.name, r.driver_version, r.pci_bus_id], 1)
            f.add("footprint_gpu_up", gl, 1 if r.up else 0)
            if r.up:
                for name, attr in _GPU_GAUGES:
                    value = getattr(r, attr)
                    if value is not None:
                        f.add(name, gl, value)
                if g.energy_method:
                    f.add(
                        "footprint_device_energy_method_info",
                        ["gpu", r.uuid or f"index-{r.index}", g.energy_method, g.unmeasured_reason],
                        1,
                    )
            if not g.measured:
                continue  # never measured: no energy or emissions series at all (no silent zeros)
            f.add("footprint_gpu_energy_joules_total", gl, g.energy_j_total)
            f.add("footprint_gpu_unattributed_energy_joules_total", gl, g.unattributed_energy_j_total)
            if snap.intensities:
                f.add("footprint_gpu_emissions_grams_total", gl, g.emissions_g_total)
                f.add("footprint_gpu_embodied_emissions_grams_total", gl, g.embodied_emissions_g_total)
            if g.marginal_emissions_g_total is not None:
                f.add("footprint_gpu_marginal_emissions_grams_total", gl, g.marginal_emissions_g_total)
            if g.market_emissions_g_total is not None:
                f.add("footprint_gpu_market_emissions_grams_total", gl, g.market_emissions_g_total)

        for p in snap.gpu_processes:
            labels = [p.gpu_index, p.gpu_uuid, *_workload_labels(p)]
            f.add("footprint_process_gpu_energy_joules_total", labels, p.energy_j_total)
            f.add("footprint_process_gpu_power_watts", labels, p.power_w)
            if snap.intensities:
                f.add("footprint_process_gpu_emissions_grams_total", labels, p.emissions_g_total)
                f.add(
                    "footprint_process_gpu_embodied_emissions_grams_total",
                    labels,
                    p.embodied_emissions_g_total,
                )
            if p.marginal_emissions_g_total is not None:
                f.add(
                    "footprint_process_gpu_marginal_emissions_grams_total",
                    labels,
                    p.marginal_emissions_g_total,
                )
            if p.market_emissions_g_total is not None:
                f.add(
                    "footprint_process_gpu_market_emissions_grams_total", labels, p.market_emissions_g_total
                )
        for p in snap.cpu_processes:
            labels = _workload_labels(p)
            f.add("footprint_process_cpu_energy_joules_total", labels, p.energy_j_total)
            f.add("footprint_process_cpu_power_watts", labels, p.power_w)
            if snap.intensities:
                f.add("footprint_process_cpu_emissions_grams_total", labels, p.emissions_g_total)
            if p.market_emissions_g_total is not None:
                f.add(
                    "footprint_process_cpu_market_emissions_grams_total", labels, p.market_emissions_g_total
                )

        for p in snap.node_processes:
            labels = _workload_labels(p)
            f.add("footprint_process_node_unmetered_energy_joules_total", labels, p.energy_j_total)
            if snap.intensities:
                f.add("footprint_process_node_unmetered_emissions_grams_total", labels, p.emissions_g_total)
            if p.market_emissions_g_total is not None:
                f.add(
                    "footprint_process_node_unmetered_market_emissions_grams_total",
                    labels,
                    p.market_emissions_g_total,
                )

        for c in snap.cpus:
            cr = c.reading
            if c.energy_method:
                kind = "dram" if cr.package.endswith("-dram") else "cpu"
                f.add(
                    "footprint_device_energy_method_info",
                    [kind, cr.package, c.energy_method, c.unmeasured_reason],
                    1,
                )
            if not c.measured:
                continue
            if cr.power_w is not None and c.energy_method != "none":  # no stale power of a failed read
                f.add("footprint_cpu_power_watts", [cr.package, cr.method], cr.power_w)
            f.add("footprint_cpu_energy_joules_total", [cr.package, cr.method], c.energy_j_total)
            f.add(
                "footprint_cpu_unattributed_energy_joules_total", [cr.package], c.unattributed_energy_j_total
            )
            if snap.intensities:
                f.add("footprint_cpu_emissions_grams_total", [cr.package], c.emissions_g_total)
            if c.marginal_emissions_g_total is not None:
                f.add(
                    "footprint_cpu_marginal_emissions_grams_total", [cr.package], c.marginal_emissions_g_total
                )
            if c.market_emissions_g_total is not None:
                f.add("footprint_cpu_market_emissions_grams_total", [cr.package], c.market_emissions_g_total)

        if snap.node is not None:
            _add_node(f, snap.node)

        for i in snap.intensities:
            il = [i.zone, i.provider, i.signal]
            f.add("footprint_grid_carbon_intensity_grams_per_kwh", [*il, i.basis], i.grams_per_kwh)
            f.add("footprint_carbon_intensity_info", [*il, i.basis, i.source, i.year, i.via], 1)
            if i.observed_at is not None:
                f.add("footprint_carbon_intensity_timestamp_seconds", il, i.observed_at)
            if i.estimated is not None:
                f.add("footprint_carbon_intensity_estimated", il, 1 if i.estimated else 0)
            if i.signal == "average" or not any(
                x.signal == "average" and x.provider == i.provider for x in snap.intensities
            ):
                f.add("footprint_carbon_intensity_age_seconds", [i.zone, i.provider], i.age_s)
        for pr in snap.providers:
            f.add("footprint_carbon_provider_up", [pr.provider], 1 if pr.up else 0)
            for kind, count in sorted(pr.errors_total.items()):
                f.add("footprint_carbon_provider_errors_total", [pr.provider, kind], count)
        for fc in snap.forecasts:
            labels = [fc.zone, fc.provider, fc.signal]
            f.add("footprint_carbon_forecast_min_grams_per_kwh", labels, fc.min_grams_per_kwh)
            f.add("footprint_carbon_forecast_min_timestamp_seconds", labels, fc.min_timestamp_s)
        if snap.intensities:
            f.add("footprint_pue_ratio", [], snap.pue)
        for ef in snap.emission_factors:
            f.add(
                "footprint_emission_factor",
                [ef.kind, ef.name, ef.unit, ef.basis, ef.source, ef.year],
                ef.value,
            )
        if snap.node_embodied_emissions_g_total is not None:
            f.add("footprint_node_embodied_emissions_grams_total", [], snap.node_embodied_emissions_g_total)
        if snap.water_litres_total is not None:
            f.add("footprint_water_litres_total", [], snap.water_litres_total)

        for s in snap.sources:
            f.add("footprint_source_up", [s.name], 1 if s.up else 0)
            f.add("footprint_source_read_duration_seconds", [s.name], s.read_duration_s)
            for kind, count in sorted(s.errors_total.items()):
                f.add("footprint_source_errors_total", [s.name, kind], count)
        f.add("footprint_sample_duration_seconds", [], snap.sample_duration_s)
        f.add("footprint_samples_total", [], snap.samples_total)
        f.add("footprint_snapshot_age_seconds", [], max(0.0, self.wall_clock() - snap.timestamp))
        f.add("footprint_attribution_series_folded_total", [], snap.attributed_series_dropped_total)
        for rej in snap.rejected_readings:
            f.add("footprint_device_readings_rejected_total", [rej.kind, rej.device, rej.reason], rej.count)
        for driver, count in snap.gpu_pci_devices or ():
            f.add("footprint_gpu_pci_devices", [driver], count)
        if snap.state_restore_result:
            f.add("footprint_state_restore_info", [snap.state_restore_result], 1)
        f.add("footprint_state_saves_total", [], snap.state_saves_total)
        f.add("footprint_state_save_errors_total", [], snap.state_save_errors_total)
        if snap.last_state_save_timestamp is not None:
            f.add("footprint_state_last_save_timestamp_seconds", [], snap.last_state_save_timestamp)
        f.add("footprint_build_info", list(self._build), 1)
        yield from f
