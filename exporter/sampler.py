"""The sampler: reads sources, turns readings into attributed energy and emissions, publishes snapshots."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from exporter.attribution import (
    AttributionPolicy,
    CpuIdleLearner,
    CpuIdlePolicy,
    IdleBaselineLearner,
    attribute_cpu_energy,
    attribute_gpu_energy,
)
from exporter.carbon.accounting import operational_grams, water_litres
from exporter.energy import EnergyTracker
from exporter.model import (
    CpuReading,
    CpuState,
    GpuReading,
    GpuState,
    NodeState,
    ProcessState,
    Snapshot,
    SourceStatus,
)
from exporter.node_power import NodeAccount

if TYPE_CHECKING:
    from exporter.carbon.service import CarbonService
    from exporter.ledger import ProcessLedger
    from exporter.node_power import NodePoller
    from exporter.sources import CpuSource, GpuSource
    from exporter.sources.processes import ProcessCpuTimes
    from exporter.workload import WorkloadResolver

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Totals:
    energy_j: float = 0.0
    unattributed_j: float = 0.0
    grams: float = 0.0
    marginal_grams: float | None = None
    embodied_grams: float = 0.0
    market_grams: float | None = None

    def add_marginal(self, grams: float | None) -> None:
        if grams is not None:
            self.marginal_grams = (self.marginal_grams or 0.0) + grams

    def add_market(self, grams: float | None) -> None:
        if grams is not None:
            self.market_grams = (self.market_grams or 0.0) + grams

    def dump(self) -> dict[str, float | None]:
        return {
            "energy_j": self.energy_j,
            "unattributed_j": self.unattributed_j,
            "grams": self.grams,
            "marginal_grams": self.marginal_grams,
            "embodied_grams": self.embodied_grams,
            "market_grams": self.market_grams,
        }

    @classmethod
    def load(cls, raw: Any) -> _Totals:
        if not isinstance(raw, dict):
            raise ValueError("totals must be an object")
        names = ("energy_j", "unattributed_j", "grams", "marginal_grams", "embodied_grams", "market_grams")
        values = {k: raw.get(k) for k in names}
        for key, value in values.items():
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value < 0
            ):
                raise ValueError(f"{key} must be a non-negative number")
        return cls(
            float(values["energy_j"] or 0.0),
            float(values["unattributed_j"] or 0.0),
            float(values["grams"] or 0.0),
            None if values["marginal_grams"] is None else float(values["marginal_grams"]),
            float(values["embodied_grams"] or 0.0),
            None if values["market_grams"] is None else float(values["market_grams"]),
        )


@dataclass
class Attribution:
    """What per-process attribution needs: the policy, who processes belong to, and where totals go."""

    policy: AttributionPolicy
    resolver: WorkloadResolver
    gpu_ledger: ProcessLedger
    cpu_ledger: ProcessLedger
    cpu_times: ProcessCpuTimes | None = None
    learners: dict[str, IdleBaselineLearner] = field(default_factory=dict)
    cpu_idle: CpuIdlePolicy = field(default_factory=CpuIdlePolicy)
    cpu_learners: dict[str, CpuIdleLearner] = field(default_factory=dict)


@dataclass
class _SourceCounters:
    up: bool = False
    errors: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0

    def fail(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def status(self, name: str) -> SourceStatus:
        return SourceStatus(
            name=name, up=self.up, errors_total=dict(self.errors), read_duration_s=self.duration_s
        )


def _error_kind(exc: BaseException) -> str:
    kind = getattr(exc, "kind", None)
    return kind if isinstance(kind, str) and kind else "read"


class Sampler:
    """Owns all mutable accounting state; only its own thread calls ``tick``.

    Scrapes read ``snapshot``, an immutable object swapped in whole, so they never wait for the
    sampler and never see half an update.
    """

    def __init__(
        self,
        gpu_source: GpuSource | None,
        cpu_source: CpuSource | None,
        carbon: CarbonService | None = None,
        attribution: Attribution | None = None,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        node: NodePoller | None = None,
    ) -> None:
        self.gpu_source = gpu_source
        self.cpu_source = cpu_source
        self.carbon = carbon
        self.attribution = attribution
        self.interval_s = interval_s
        self.clock = clock
        self.wall_clock = wall_clock
        self._gpu_trackers: dict[str, EnergyTracker] = {}
        self._cpu_trackers: dict[str, EnergyTracker] = {}
        self._gpu_totals: dict[str, _Totals] = {}
        self._cpu_totals: dict[str, _Totals] = {}
        self._gpu_last: dict[str, GpuReading] = {}
        self._cpu_last: dict[str, CpuReading] = {}
        self._water_litres: float | None = None
        self._node_embodied: float | None = None
        self._sources: dict[str, _SourceCounters] = {}
        self.node = node
        # The components' ticks are kept long enough to cover a node interval that spans a few failed polls.
        self._node = NodeAccount(keep_s=max(120.0, 5 * node.interval_s)) if node is not None else None
        self._last_now: float | None = None
        self._last_wall: float | None = None
        self._samples = 0
        self.state_saves = 0
        self.state_save_errors = 0
        self.last_state_save: float | None = None
        self.snapshot = Snapshot(timestamp=wall_clock(), gpu_source=gpu_source.name if gpu_source else "none")

    # --- state file ---
    def dump_state(self) -> dict[str, Any]:
        return {
            "gpus": {uuid: t.dump() for uuid, t in self._gpu_totals.items()},
            "cpus": {pkg: t.dump() for pkg, t in self._cpu_totals.items()},
            "water_litres": self._water_litres,
            "node_embodied_grams": self._node_embodied,
            **({"node": self._node.dump()} if self._node is not None else {}),
        }

    def restore_state(self, data: dict[str, Any]) -> None:
        """Continue totals from a saved state; raises ValueError if it is not one of ours."""
        gpus = {str(k): _Totals.load(v) for k, v in dict(data.get("gpus") or {}).items()}
        cpus = {str(k): _Totals.load(v) for k, v in dict(data.get("cpus") or {}).items()}
        water, embodied = data.get("water_litres"), data.get("node_embodied_grams")
        for name, value in (("water_litres", water), ("node_embodied_grams", embodied)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ValueError(f"{name} must be a number")
        self._gpu_totals.update(gpus)
        self._cpu_totals.update(cpus)
        self._water_litres = None if water is None else float(water)
        self._node_embodied = None if embodied is None else float(embodied)
        if self._node is not None and data.get("node") is not None:
            self._node.load(data["node"])

    # --- sampling ---
    def _read(self, name: str, read: Callable[[float], Any], now: float) -> Any:
        counters = self._sources.setdefault(name, _SourceCounters())
        started = time.perf_counter()
        try:
            result = read(now)
            counters.up = True
        except Exception as exc:  # a failing source drops only its own series
            counters.up = False
            counters.fail(_error_kind(exc))
            log.warning("source %s read failed: %s", name, exc)
            result = None
        counters.duration_s = time.perf_counter() - started
        return result

    def _factors(self, wall: float, dt: float) -> tuple[float, float | None, float | None]:
        """Grams per joule during the interval just ended: average, marginal, market (PUE included)."""
        if self.carbon is None or dt <= 0 or self._last_wall is None:
            return 0.0, None, None
        pue = self.carbon.pue
        average = operational_grams(1.0, self.carbon.segments("average", self._last_wall, wall), pue)
        marginal: float | None = None
        if self.carbon.has_marginal:
            segments = self.carbon.segments("marginal", self._last_wall, wall)
            marginal = operational_grams(1.0, segments, pue) if segments else None
        market = self.carbon.market
        return average, marginal, None if market is None else market.grams(1.0, self._last_wall, wall, pue)

    def tick(self) -> Snapshot:
        started = time.perf_counter()
        now, wall = self.clock(), self.wall_clock()
        dt = 0.0 if self._last_now is None else max(0.0, now - self._last_now)
        g_per_j, marginal_per_j, market_per_j = self._factors(wall, dt)
        att = self.attribution
        total_delta = 0.0

        gpu_states: list[GpuState] = []
        if self.gpu_source is not None:
            readings: list[GpuReading] | None = self._read(self.gpu_source.name, self.gpu_source.read, now)
            seen: set[str] = set()
            if readings is not None:
                counters = self._sources[self.gpu_source.name]
                # Field-level permission errors leave only that field out; the source counts them itself.
                source_errors = getattr(self.gpu_source, "errors", None)
                if callable(source_errors):
                    permission = source_errors().get("permission", 0)
                    if permission:
                        counters.errors["field_permission"] = permission
                for reading in readings:
                    if not reading.up:
                        counters.fail(reading.error or "gpu_down")
                    key = _gpu_key(reading)
                    seen.add(key)
                    self._gpu_last[key] = reading
                    total_delta += self._account_gpu(reading, now, dt, g_per_j, marginal_per_j, market_per_j)
            for uuid, last in self._gpu_last.items():
                if uuid not in seen:  # whole source failed: keep counters, mark the GPU down
                    self._gpu_last[uuid] = _down(last, "source failed")
                totals = self._gpu_totals.setdefault(uuid, _Totals())
                gpu_states.append(
                    GpuState(
                        self._gpu_last[uuid],
                        totals.energy_j,
                        totals.unattributed_j,
                        totals.grams,
                        totals.marginal_grams,
                        totals.embodied_grams,
                        totals.market_grams,
                    )
                )

        cpu_states: list[CpuState] = []
        if self.cpu_source is not None:
            cpu_readings: list[CpuReading] | None = self._read(
                self.cpu_source.name, self.cpu_source.read, now
            )
            deltas: dict[str, float] = {}
            for c in cpu_readings or ():
                tracker = self._cpu_trackers.setdefault(c.package, EnergyTracker())
                deltas[c.package] = tracker.update(now, c.energy_j, c.power_w)
                self._cpu_last[c.package] = c
            total_delta += self._account_cpu(deltas, now, dt, g_per_j, marginal_per_j, market_per_j)
            for pkg, cpu_last in self._cpu_last.items():
                t = self._cpu_totals.setdefault(pkg, _Totals())
                cpu_states.append(
                    CpuState(
                        cpu_last, t.energy_j, t.unattributed_j, t.grams, t.marginal_grams, t.market_grams
                    )
                )

        carbon = self.carbon
        node = self._account_node(now, wall, total_delta) if self.node is not None else None
        if carbon is not None and dt > 0:
            if carbon.wue_litres_per_kwh is not None:
                self._water_litres = (self._water_litres or 0.0) + water_litres(
                    total_delta, carbon.wue_litres_per_kwh, carbon.pue
                )
            node_rate = carbon.node_embodied_grams_per_second()
            if node_rate is not None:
                self._node_embodied = (self._node_embodied or 0.0) + node_rate * dt

        gpu_procs: tuple[ProcessState, ...] = ()
        cpu_procs: tuple[ProcessState, ...] = ()
        folded = 0
        if att is not None:
            att.gpu_ledger.end_interval(now)
            att.cpu_ledger.end_interval(now)
            gpu_procs, cpu_procs = att.gpu_ledger.states(now), att.cpu_ledger.states(now)
            folded = att.gpu_ledger.folded_total + att.cpu_ledger.folded_total

        self._last_now, self._last_wall = now, wall
        self._samples += 1
        snapshot = Snapshot(
            timestamp=wall,
            samples_total=self._samples,
            sample_duration_s=time.perf_counter() - started,
            gpu_source=self.gpu_source.name if self.gpu_source else "none",
            gpus=tuple(gpu_states),
            gpu_processes=gpu_procs,
            cpus=tuple(cpu_states),
            cpu_processes=cpu_procs,
            sources=tuple(c.status(n) for n, c in self._sources.items())
            + ((self.node.status(),) if self.node is not None else ()),
            intensities=carbon.intensities() if carbon else (),
            providers=carbon.providers() if carbon else (),
            forecasts=carbon.forecasts() if carbon else (),
            emission_factors=carbon.emission_factors() if carbon else (),
            pue=carbon.pue if carbon else 1.0,
            water_litres_total=self._water_litres,
            node_embodied_emissions_g_total=self._node_embodied,
            attributed_series_dropped_total=folded,
            state_saves_total=self.state_saves,
            state_save_errors_total=self.state_save_errors,
            last_state_save_timestamp=self.last_state_save,
            node=node,
        )
        self.snapshot = snapshot
        return snapshot

    def _account_node(self, now: float, wall: float, component_j: float) -> NodeState:
        """Node energy from the poller's closed intervals, against the components' energy of the same span.

        ``component_j`` is this tick's GPU + CPU + DRAM energy. Emissions and water of the unmetered
        part use the intensity valid during each node interval, so GPU + CPU + unmetered is the node.
        """
        assert self.node is not None and self._node is not None
        account, carbon = self._node, self.carbon
        complete = all(c.up for c in self._sources.values()) and all(r.up for r in self._gpu_last.values())
        account.components(now, component_j, complete)
        for interval in self.node.drain(until=now):
            grams_per_j = 0.0
            if carbon is not None:
                span = carbon.segments("average", wall - (now - interval.t0), wall - (now - interval.t1))
                grams_per_j = operational_grams(1.0, span, carbon.pue)
            unmetered = account.add(interval, grams_per_j)
            if carbon is not None and carbon.wue_litres_per_kwh is not None and unmetered > 0:
                litres = water_litres(unmetered, carbon.wue_litres_per_kwh, carbon.pue)
                self._water_litres = (self._water_litres or 0.0) + litres
        fresh = self.node.fresh(now)
        return NodeState(
            method=self.node.method,
            fresh=fresh,
            power_w=self.node.power_w() if fresh else None,
            energy_j_total=account.energy_j,
            unmetered_energy_j_total=account.unmetered_j,
            emissions_g_total=account.grams if carbon is not None else None,
            unmetered_emissions_g_total=account.unmetered_grams if carbon is not None else None,
            below_components_total=account.below_components,
            gaps_total=account.not_compared,
            parts=self.node.parts(),
        )

    def _account_gpu(
        self,
        reading: GpuReading,
        now: float,
        dt: float,
        g_per_j: float,
        marginal_per_j: float | None,
        market_per_j: float | None = None,
    ) -> float:
        key = _gpu_key(reading)
        totals = self._gpu_totals.setdefault(key, _Totals())
        if not reading.up:
            return 0.0
        tracker = self._gpu_trackers.setdefault(key, EnergyTracker())
        delta = tracker.update(now, reading.energy_j, reading.power_w)
        marginal = None if marginal_per_j is None else delta * marginal_per_j
        embodied = 0.0
        if self.carbon is not None and dt > 0:
            embodied = self.carbon.gpu_embodied_grams_per_second(reading.name) * dt
        totals.energy_j += delta
        totals.grams += delta * g_per_j
        totals.add_marginal(marginal)
        totals.add_market(None if market_per_j is None else delta * market_per_j)
        totals.embodied_grams += embodied

        att = self.attribution
        processes = reading.processes or ()
        if att is None or dt <= 0:
            totals.unattributed_j += delta
            return delta
        learner = att.learners.setdefault(key, IdleBaselineLearner())
        if reading.power_w is not None:
            learner.observe(reading.power_w, bool(processes))
        idle_w = att.policy.idle_watts if att.policy.idle_watts is not None else learner.value
        shares, unattributed = attribute_gpu_energy(delta, dt, processes, att.policy, idle_w)
        totals.unattributed_j += unattributed
        for proc, joules in zip(processes, shares, strict=True):
            workload = att.resolver.resolve(proc.pid, proc.start_time, proc.comm, proc.user, proc.cgroup)
            frac = joules / delta if delta > 0 else 0.0
            att.gpu_ledger.add(
                reading.uuid,
                str(reading.index),
                proc.pid,
                proc.start_time,
                workload,
                joules,
                dt,
                now,
                grams=joules * g_per_j,
                marginal_grams=None if marginal_per_j is None else joules * marginal_per_j,
                embodied_grams=embodied * frac,
                market_grams=None if market_per_j is None else joules * market_per_j,
            )
        return delta

    def _account_cpu(
        self,
        deltas: dict[str, float],
        now: float,
        dt: float,
        g_per_j: float,
        marginal_per_j: float | None,
        market_per_j: float | None = None,
    ) -> float:
        unattributed = dict(deltas)
        att = self.attribution
        if att is not None and att.cpu_times is not None:
            # Read on every tick, the first too: the first read is the baseline of the second interval.
            usage, busy = att.cpu_times.read()
            if dt > 0:
                unattributed = self._attribute_cpu(
                    att, deltas, usage, busy, now, dt, g_per_j, marginal_per_j, market_per_j
                )
        for pkg, delta in deltas.items():
            totals = self._cpu_totals.setdefault(pkg, _Totals())
            totals.energy_j += delta
            totals.unattributed_j += unattributed[pkg]
            totals.grams += delta * g_per_j
            totals.add_marginal(None if marginal_per_j is None else delta * marginal_per_j)
            totals.add_market(None if market_per_j is None else delta * market_per_j)
        return sum(deltas.values())

    def _attribute_cpu(
        self,
        att: Attribution,
        deltas: dict[str, float],
        usage: dict[tuple[int, float], tuple[float, str, str]],
        busy: float,
        now: float,
        dt: float,
        g_per_j: float,
        marginal_per_j: float | None,
        market_per_j: float | None,
    ) -> dict[str, float]:
        """Each domain (package, DRAM) on its own: only its active part is split by CPU time."""
        keys = list(usage)
        cpu_seconds = [usage[k][0] for k in keys]
        cpus = att.cpu_times.cpu_count if att.cpu_times is not None else 0
        utilisation = busy / (dt * cpus) if cpus > 0 else 0.0
        spread = att.cpu_idle.mode == "spread"
        joules = [0.0] * len(keys)
        unattributed: dict[str, float] = {}
        for pkg, delta in deltas.items():
            learner = att.cpu_learners.setdefault(pkg, CpuIdleLearner())
            learner.observe(utilisation, delta / dt)
            idle_w = att.cpu_idle.configured_watts(pkg)
            if idle_w is None:
                idle_w = learner.value
            shares, unattributed[pkg] = attribute_cpu_energy(
                delta, cpu_seconds, busy, (idle_w or 0.0) * dt, spread
            )
            for i, share in enumerate(shares):
                joules[i] += share
        for (pid, start), share in zip(keys, joules, strict=True):
            if share <= 0:
                continue
            _, comm, user = usage[(pid, start)]
            workload = att.resolver.resolve(pid, start, comm, user)
            att.cpu_ledger.add(
                "",
                "",
                pid,
                start,
                workload,
                share,
                dt,
                now,
                grams=share * g_per_j,
                marginal_grams=None if marginal_per_j is None else share * marginal_per_j,
                market_grams=None if market_per_j is None else share * market_per_j,
            )
        return unattributed

    def run(self, stop: threading.Event, on_tick: Callable[[Snapshot], None] | None = None) -> None:
        """Tick at a fixed rate until ``stop`` is set; a tick that fails is logged and the next one runs."""
        next_at = self.clock()
        while not stop.is_set():
            try:
                snapshot = self.tick()
                if on_tick is not None:
                    on_tick(snapshot)
            except Exception:
                log.exception("sampler tick failed")
            next_at += self.interval_s
            delay = next_at - self.clock()
            if delay < 0:  # fell behind (slow source): skip missed ticks rather than bursting
                next_at = self.clock()
                delay = 0
            stop.wait(delay)


def _gpu_key(reading: GpuReading) -> str:
    # A GPU already down when the exporter starts has no UUID yet: key it by index until it answers.
    return reading.uuid or f"index-{reading.index}"


def _down(reading: GpuReading, error: str) -> GpuReading:
    return replace(reading, up=False, error=error) if reading.up else reading
