"""The sampler: reads sources, turns readings into attributed energy and emissions, publishes snapshots."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from exporter.attribution import (
    AttributionPolicy,
    CpuIdleLearner,
    CpuIdlePolicy,
    CpuTimeSince,
    IdleBaselineLearner,
    attribute_cpu_energy,
    attribute_gpu_energy,
)
from exporter.carbon.accounting import operational_grams, water_litres
from exporter.energy import NONE, EnergyTracker
from exporter.migallocation import MigOwner, held_idle_instances
from exporter.model import (
    CpuReading,
    CpuState,
    GpuProcessSample,
    GpuReading,
    GpuState,
    NodeState,
    ProcessState,
    RejectedReadings,
    Snapshot,
    SourceStatus,
    Workload,
)
from exporter.node_power import NodeAccount, NodeInterval
from exporter.plausibility import MAX_DEVICE_WATTS, max_power_w, screen_cpu_reading, screen_gpu_reading

if TYPE_CHECKING:
    from exporter.carbon.service import CarbonService
    from exporter.ledger import ProcessLedger
    from exporter.node_power import NodePoller
    from exporter.podlookup import PodRef
    from exporter.sources import CpuSource, GpuSource
    from exporter.sources.processes import ProcessCpuTimes
    from exporter.workload import WorkloadResolver

log = logging.getLogger(__name__)

# Grams per joule over an interval: average signal, marginal signal, market-based (PUE included).
Factors = tuple[float, float | None, float | None]

# Where dump_state() puts the per-process ledgers (the bulk of a state file).
PROCESS_STATE_KEYS = ("gpu_processes", "cpu_processes", "node_processes")

# A process as the unmetered node energy is spread over it: pid, start time and its workload.
SpreadKey = tuple[int, float | None, Workload]


@dataclass(slots=True)
class _Totals:
    """One device's running totals. Every field is saved in the state file under its own name, so a
    new total is one more field here (None-able fields are served only once they are set)."""

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

    def merge(self, other: _Totals) -> None:
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if theirs is not None:
                setattr(self, f.name, theirs if mine is None else mine + theirs)

    def dump(self) -> dict[str, float | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def load(cls, raw: Any) -> _Totals:
        """Totals from ``dump()``; raises ValueError on anything but finite non-negative numbers."""
        if not isinstance(raw, dict):
            raise ValueError("totals must be an object")
        values: dict[str, float] = {}
        for f in fields(cls):
            value = raw.get(f.name)
            if value is not None:
                values[f.name] = total_value(f.name, value)
        return cls(**values)


def total_value(name: str, value: Any) -> float:
    """A saved total as a float; ValueError unless it is a finite, non-negative number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and non-negative, got {value!r}")
    return float(value)


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
    # --attribution.node-unmetered=spread: where each process's share of the unmetered node energy
    # goes (None: it stays at node level).
    node_ledger: ProcessLedger | None = None
    # The processes' CPU time since each CPU domain's last good reading (made by the sampler).
    cpu_since: CpuTimeSince | None = None
    # The pod a GPU is allocated to alone (kubelet pod-resources), by (uuid, index); None if not known.
    gpu_owner: Callable[[str, int], PodRef | None] | None = None
    # The same for MIG devices, by (MIG device UUID, GPU UUID, GPU instance id).
    mig_owner: MigOwner | None = None


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

    Every device keeps its own last-read time (in its EnergyTracker): what is derived from a
    device's energy delta (emissions, idle baseline, per-process power, embodied carbon) uses the span
    that delta covers, which is longer than one interval after reads failed. A device that gives
    neither power nor energy accrues nothing and has no energy or emissions series; an impossible
    reading is dropped for its device only and counted; a device whose accounting fails does not stop
    the others or the CPU.
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
        pci_gpus: Callable[[], dict[str, int] | None] | None = None,
        pci_interval_s: float = 60.0,
        node: NodePoller | None = None,
    ) -> None:
        self.gpu_source = gpu_source
        self.cpu_source = cpu_source
        self.carbon = carbon
        self.attribution = attribution
        self.interval_s = interval_s
        self.clock = clock
        self.wall_clock = wall_clock
        # Power integrated across a longer gap than this would be a guess (a counter covers any gap).
        self.max_gap_s = max(30.0, 5 * interval_s)
        self._gpu_trackers: dict[str, EnergyTracker] = {}
        self._cpu_trackers: dict[str, EnergyTracker] = {}
        self._gpu_totals: dict[str, _Totals] = {}
        self._cpu_totals: dict[str, _Totals] = {}
        self._gpu_last: dict[str, GpuReading] = {}
        self._cpu_last: dict[str, CpuReading] = {}
        # Devices whose energy was measured at least once (or continued from the state file): only
        # these have energy and emissions series. Then how the latest read was measured, and why not.
        self._gpu_measured: set[str] = set()
        self._cpu_measured: set[str] = set()
        self._gpu_method: dict[str, tuple[str, str]] = {}
        self._cpu_method: dict[str, tuple[str, str]] = {}
        self._rejected: dict[tuple[str, str, str], int] = {}
        self._rejected_states: tuple[RejectedReadings, ...] = ()
        self._water_litres: float | None = None
        self._node_embodied: float | None = None
        self._sources: dict[str, _SourceCounters] = {}
        self.node = node
        # The components' ticks are kept long enough to cover a node interval that spans a few failed polls.
        spread = attribution is not None and attribution.node_ledger is not None
        self._node: NodeAccount[SpreadKey] | None = (
            NodeAccount(keep_s=max(120.0, 5 * node.interval_s), spread=spread) if node is not None else None
        )
        # With the unmetered energy spread: what each process was charged during the current tick.
        self._tick_charges: dict[SpreadKey, float] | None = None
        # Whether the current tick's GPU + CPU energy is that of this tick exactly (see tick()).
        self._tick_complete = True
        self._last_now: float | None = None
        self._last_wall: float | None = None
        self._samples = 0
        self._pci_gpus = pci_gpus
        self._pci_interval_s = pci_interval_s
        self._pci_next: float | None = None
        self._pci: tuple[tuple[str, int], ...] | None = None
        self.state_saves = 0
        self.state_save_errors = 0
        self.last_state_save: float | None = None
        self.state_restore_result = ""
        self.snapshot = Snapshot(timestamp=wall_clock(), gpu_source=gpu_source.name if gpu_source else "none")

    # --- state file ---
    def dump_state(self) -> dict[str, Any]:
        """Everything the state file keeps: device totals (measured devices only), water, node
        embodied carbon and the per-process ledgers."""
        data: dict[str, Any] = {
            "gpus": {k: t.dump() for k, t in self._gpu_totals.items() if k in self._gpu_measured},
            "cpus": {k: t.dump() for k, t in self._cpu_totals.items() if k in self._cpu_measured},
            "water_litres": self._water_litres,
            "node_embodied_grams": self._node_embodied,
            **({"node": self._node.dump()} if self._node is not None else {}),
        }
        att = self.attribution
        if att is not None:
            for name, ledger in zip(PROCESS_STATE_KEYS, _ledgers(att), strict=True):
                if ledger is not None:
                    data[name] = ledger.dump()
        return data

    def restore_state(self, data: Any) -> None:
        """Continue totals from a saved state; raises ValueError, changing nothing, if any of it is
        not one of ours or holds a value no total can have (negative, not finite)."""
        if not isinstance(data, dict):
            raise ValueError("state must be an object")
        gpus = {str(k): _Totals.load(v) for k, v in _mapping(data, "gpus").items()}
        cpus = {str(k): _Totals.load(v) for k, v in _mapping(data, "cpus").items()}
        water, embodied = data.get("water_litres"), data.get("node_embodied_grams")
        water = None if water is None else total_value("water_litres", water)
        embodied = None if embodied is None else total_value("node_embodied_grams", embodied)
        ledgers: list[tuple[ProcessLedger, Any]] = []
        att = self.attribution
        if att is not None:
            for name, ledger in zip(PROCESS_STATE_KEYS, _ledgers(att), strict=True):
                if ledger is not None and data.get(name) is not None:
                    ledger.check(data[name])
                    ledgers.append((ledger, data[name]))
        if self._node is not None and data.get("node") is not None:
            self._node.load(data["node"])  # checks everything before it changes anything
        self._gpu_totals.update(gpus)
        self._cpu_totals.update(cpus)
        self._gpu_measured.update(gpus)
        self._cpu_measured.update(cpus)
        self._water_litres = water
        self._node_embodied = embodied
        now = self.clock()
        for ledger, raw in ledgers:
            ledger.restore(raw, now)

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

    def _factors(self, wall: float, dt: float) -> Factors:
        """Grams per joule during the interval just ended: average, marginal, market (PUE included)."""
        if self._last_wall is None:
            return 0.0, None, None
        return self._factors_over(self._last_wall, wall, dt)

    def _span_factors(self, span: float, dt: float, wall: float, factors: Factors) -> Factors:
        """Grams per joule over a device's own span ending now: the tick's ``factors`` unless the span
        is longer than the tick (its reads failed in between) or shorter (its first reading). Either
        way the tick's energy is not this tick's exactly, so the node does not compare across it."""
        if abs(span - dt) <= 1e-9:
            return factors
        self._tick_complete = False  # this tick carries energy of earlier ticks (see _account_node)
        return self._factors_over(wall - span, wall, span)

    def _factors_over(self, start: float, end: float, dt: float) -> Factors:
        """Grams per joule from wall time ``start`` to ``end``: average, marginal, market (PUE included)."""
        if self.carbon is None or dt <= 0:
            return 0.0, None, None
        pue = self.carbon.pue
        average = operational_grams(1.0, self.carbon.segments("average", start, end), pue)
        marginal: float | None = None
        if self.carbon.has_marginal:
            segments = self.carbon.segments("marginal", start, end)
            marginal = operational_grams(1.0, segments, pue) if segments else None
        market = self.carbon.market
        return average, marginal, None if market is None else market.grams(1.0, start, end, pue)

    def _reject(self, kind: str, device: str, reason: str, detail: str) -> None:
        key = (kind, device, reason)
        count = self._rejected.get(key, 0)
        # The first of each kind at warning level, the rest at debug: a broken sensor repeats every tick.
        log.log(
            logging.DEBUG if count else logging.WARNING,
            "%s %s: impossible reading dropped (%s: %s)",
            kind.upper(),
            device,
            reason,
            detail,
        )
        self._rejected[key] = count + 1
        self._rejected_states = ()

    def tick(self) -> Snapshot:
        started = time.perf_counter()
        now, wall = self.clock(), self.wall_clock()
        dt = 0.0 if self._last_now is None else max(0.0, now - self._last_now)
        factors = self._factors(wall, dt)
        att = self.attribution
        total_delta = 0.0
        self._tick_charges = {} if self._node is not None and self._node.spread else None
        # False when some device's energy is missing from this tick, or this tick carries some of an
        # earlier one's: the node then does not compare the span (see _account_node).
        self._tick_complete = True

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
                    key = self._gpu_key(reading)
                    seen.add(key)
                    total_delta += self._account_gpu_isolated(key, reading, now, wall, dt, factors)
            for key, last in self._gpu_last.items():
                if key not in seen:  # whole source failed: keep counters, mark the GPU down
                    self._gpu_last[key] = _down(last, "source failed")
                gpu_states.append(self._gpu_state(key))

        cpu_states: list[CpuState] = []
        if self.cpu_source is not None:
            cpu_readings: list[CpuReading] | None = self._read(
                self.cpu_source.name, self.cpu_source.read, now
            )
            deltas: dict[str, float] = {}
            for c in cpu_readings or ():
                delta = self._measure_cpu(c, now)
                if delta is not None:
                    deltas[c.package] = delta
            for pkg in self._cpu_last:
                if cpu_readings is None or not any(c.package == pkg for c in cpu_readings):
                    self._cpu_method[pkg] = (NONE, "read_failed")
            if any(pkg not in deltas for pkg in self._cpu_measured):
                self._tick_complete = False  # a measured domain's energy is missing from this tick
            try:
                total_delta += self._account_cpu(deltas, now, wall, dt, factors)
            except Exception as exc:  # the GPUs' accounting already happened; keep the tick alive
                log.warning("CPU accounting failed; this interval's CPU energy is dropped", exc_info=True)
                for pkg in deltas:
                    self._reject(_cpu_kind(pkg), pkg, "error", f"{type(exc).__name__}: {exc}")
            for pkg, cpu_last in self._cpu_last.items():
                t = self._cpu_totals.setdefault(pkg, _Totals())
                method, why = self._cpu_method.get(pkg, ("", ""))
                cpu_states.append(
                    CpuState(
                        cpu_last,
                        t.energy_j,
                        t.unattributed_j,
                        t.grams,
                        t.marginal_grams,
                        t.market_grams,
                        measured=pkg in self._cpu_measured,
                        energy_method=method,
                        unmeasured_reason=why,
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
        node_procs: tuple[ProcessState, ...] = ()
        if att is not None:
            att.gpu_ledger.end_interval(now)
            att.cpu_ledger.end_interval(now)
            gpu_procs, cpu_procs = att.gpu_ledger.states(now), att.cpu_ledger.states(now)
            folded = att.gpu_ledger.folded_total + att.cpu_ledger.folded_total
            if att.node_ledger is not None:
                att.node_ledger.end_interval(now)
                node_procs = att.node_ledger.states(now)
                folded += att.node_ledger.folded_total

        self._refresh_pci(now)
        if self._rejected and not self._rejected_states:
            self._rejected_states = tuple(
                RejectedReadings(kind, device, reason, count)
                for (kind, device, reason), count in sorted(self._rejected.items())
            )
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
            node_processes=node_procs,
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
            state_restore_result=self.state_restore_result,
            rejected_readings=self._rejected_states,
            gpu_pci_devices=self._pci,
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
        complete = (
            self._tick_complete
            and all(c.up for c in self._sources.values())
            and all(r.up for r in self._gpu_last.values())
        )
        account.components(now, component_j, complete, self._tick_charges)
        for interval in self.node.drain(until=now):
            start, end = wall - (now - interval.t0), wall - (now - interval.t1)
            grams_per_j, _, market_per_j = self._factors_over(start, end, end - start)
            unmetered = account.add(interval, grams_per_j, market_per_j)
            if account.spread:
                self._spread_unmetered(interval, unmetered, now, grams_per_j, market_per_j)
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
            unmetered_unattributed_j_total=account.unmetered_unattributed_j if account.spread else None,
            market_emissions_g_total=account.market_grams,
            unmetered_market_emissions_g_total=account.unmetered_market_grams,
            below_components_total=account.below_components,
            gaps_total=account.not_compared,
            parts=self.node.parts(),
        )

    def _spread_unmetered(
        self,
        interval: NodeInterval,
        unmetered: float,
        now: float,
        grams_per_j: float,
        market_per_j: float | None,
    ) -> None:
        """--attribution.node-unmetered=spread: charge the processes their share of an interval's
        unmetered energy, and of its emissions (the interval's own intensity)."""
        assert self._node is not None and self.attribution is not None
        ledger = self.attribution.node_ledger
        assert ledger is not None
        parts, _ = self._node.split(interval, unmetered)
        for (pid, start, workload), joules in parts:
            ledger.add(
                "",
                "",
                pid,
                start,
                workload,
                joules,
                interval.t1 - interval.t0,
                now,
                grams=joules * grams_per_j,
                market_grams=None if market_per_j is None else joules * market_per_j,
            )

    def _charged(self, pid: int, start: float | None, workload: Workload, joules: float) -> None:
        """With the unmetered energy spread: what a process was charged this tick (GPU and CPU alike)."""
        charges = self._tick_charges
        if charges is not None and joules > 0:
            key = (pid, start, workload)
            charges[key] = charges.get(key, 0.0) + joules

    def _refresh_pci(self, now: float) -> None:
        """Count the NVIDIA GPUs on the PCI bus now and then (GPUs are rarely hot-plugged)."""
        if self._pci_gpus is None or (self._pci_next is not None and now < self._pci_next):
            return
        self._pci_next = now + self._pci_interval_s
        try:
            counts = self._pci_gpus()
        except Exception:
            log.warning("counting NVIDIA GPUs on the PCI bus failed", exc_info=True)
            counts = None
        self._pci = None if counts is None else tuple(sorted(counts.items()))

    # --- GPUs ---
    def _gpu_key(self, reading: GpuReading) -> str:
        """The GPU's key in every per-device map; a GPU known by index only moves to its UUID here."""
        key = _gpu_key(reading)
        provisional = f"index-{reading.index}"
        if key != provisional:
            last = self._gpu_last.get(provisional)
            if last is not None and not last.uuid:
                self._adopt(provisional, key)
        return key

    def _adopt(self, old: str, new: str) -> None:
        """A GPU that was down since start (keyed by its index) answered with its UUID: everything known
        under the index moves to the UUID, so no series with an empty uuid stays behind."""
        del self._gpu_last[old]
        totals = self._gpu_totals.pop(old, None)
        if totals is not None:
            self._gpu_totals.setdefault(new, _Totals()).merge(totals)
        for per_device in (self._gpu_trackers, self._gpu_method):
            moved = per_device.pop(old, None)
            if moved is not None:
                per_device.setdefault(new, moved)  # type: ignore[arg-type]
        if old in self._gpu_measured:
            self._gpu_measured.discard(old)
            self._gpu_measured.add(new)
        if self.attribution is not None and old in self.attribution.learners:
            self.attribution.learners.setdefault(new, self.attribution.learners.pop(old))
        for kind, device, reason in [k for k in self._rejected if k[1] == old]:
            count = self._rejected.pop((kind, device, reason))
            self._rejected[(kind, new, reason)] = self._rejected.get((kind, new, reason), 0) + count
            self._rejected_states = ()
        log.info("GPU %s answers again, now with UUID %s", old, new)

    def _gpu_state(self, key: str) -> GpuState:
        totals = self._gpu_totals.setdefault(key, _Totals())
        reading = self._gpu_last[key]
        method, why = self._gpu_method.get(key, ("", "")) if reading.up else ("", "")
        return GpuState(
            reading,
            totals.energy_j,
            totals.unattributed_j,
            totals.grams,
            totals.marginal_grams,
            totals.embodied_grams,
            totals.market_grams,
            measured=key in self._gpu_measured,
            energy_method=method,
            unmeasured_reason=why,
        )

    def _account_gpu_isolated(
        self,
        key: str,
        reading: GpuReading,
        now: float,
        wall: float,
        dt: float,
        factors: Factors,
    ) -> float:
        """``_account_gpu``, except that a failure drops this GPU's reading only, said and counted."""
        try:
            return self._account_gpu(key, reading, now, wall, dt, factors)
        except Exception as exc:
            log.warning("GPU %s: accounting its reading failed; the reading is dropped", key, exc_info=True)
            self._gpu_last[key] = _without_measurements(reading)
            self._gpu_method[key] = (NONE, "rejected")
            self._reject("gpu", key, "error", f"{type(exc).__name__}: {exc}")
            self._tick_complete = False
            return 0.0

    def _account_gpu(
        self,
        key: str,
        reading: GpuReading,
        now: float,
        wall: float,
        dt: float,
        factors: Factors,
    ) -> float:
        totals = self._gpu_totals.setdefault(key, _Totals())
        if not reading.up:
            self._gpu_last[key] = reading
            return 0.0
        reading, problems = screen_gpu_reading(reading)
        self._gpu_last[key] = reading
        tracker = self._gpu_trackers.setdefault(key, EnergyTracker())
        delta = tracker.update(
            now, reading.energy_j, reading.power_w, max_power_w(reading.power_limit_w), self.max_gap_s
        )
        if tracker.rejected:
            problems.append((tracker.rejected, f"energy_j={reading.energy_j!r} after {tracker.last_time}"))
        for why, detail in problems:
            self._reject("gpu", key, why, detail)
        if tracker.method == NONE:  # nothing measured: nothing accrues, nothing is attributed
            self._gpu_method[key] = (NONE, "rejected" if problems else "no_power_or_energy")
            if key in self._gpu_measured:
                self._tick_complete = False  # a measured GPU's energy is missing from this tick
            return 0.0
        self._gpu_method[key] = (tracker.method, "")
        self._gpu_measured.add(key)
        span = tracker.elapsed_s  # this GPU's own interval: longer than dt after failed reads
        g_per_j, marginal_per_j, market_per_j = self._span_factors(span, dt, wall, factors)
        if span <= 0:
            return 0.0
        embodied = 0.0
        if self.carbon is not None:
            embodied = self.carbon.gpu_embodied_grams_per_second(reading.name) * span

        # Compute everything first and change totals and ledgers only after, so that a failure part
        # way leaves this GPU's accounts as they were.
        att = self.attribution
        processes = reading.processes or ()
        shares: list[float] = []
        unattributed = delta
        workloads = []
        allocated: list[tuple[PodRef, float]] = []
        if att is not None:
            learner = att.learners.setdefault(key, IdleBaselineLearner())
            if reading.processes is not None:
                # Only a process list that was read and is empty says the GPU was idle; None means
                # the list could not be read, which says nothing about idleness.
                learner.observe(reading.power_w, bool(reading.processes))
            idle_w = att.policy.idle_watts if att.policy.idle_watts is not None else learner.value
            # What a pod holds while NVML shows no process in it is that pod's: a whole GPU the device
            # plugin gave to one pod, or a MIG instance one pod holds (its share, as if occupied). Each
            # enters the split as a stand-in process after the visible ones; its share goes to the pod.
            owner = att.gpu_owner(reading.uuid, reading.index) if att.gpu_owner and not processes else None
            held: list[tuple[PodRef, GpuProcessSample]] = []
            if owner is not None:
                held = [(owner, GpuProcessSample(pid=0))]
            elif att.mig_owner is not None and reading.mig_instances:
                held = held_idle_instances(reading.mig_instances, reading.uuid, processes, att.mig_owner)
            stand_ins = tuple(stand_in for _, stand_in in held)
            shares, unattributed = attribute_gpu_energy(
                delta, span, (*processes, *stand_ins), att.policy, idle_w
            )
            visible = len(processes)
            allocated = [(pod, j) for (pod, _), j in zip(held, shares[visible:], strict=True)]
            shares = shares[:visible]
            workloads = [
                att.resolver.resolve(p.pid, p.start_time, p.comm, p.user, p.cgroup) for p in processes
            ]

        totals.energy_j += delta
        totals.unattributed_j += unattributed
        totals.grams += delta * g_per_j
        totals.add_marginal(None if marginal_per_j is None else delta * marginal_per_j)
        totals.add_market(None if market_per_j is None else delta * market_per_j)
        totals.embodied_grams += embodied
        if att is None:
            return delta
        for pod, joules in allocated:
            att.gpu_ledger.add_allocated(
                reading.uuid,
                str(reading.index),
                pod,
                joules,
                span,
                now,
                grams=joules * g_per_j,
                marginal_grams=None if marginal_per_j is None else joules * marginal_per_j,
                embodied_grams=embodied * (joules / delta if delta > 0 else 0.0),
                market_grams=None if market_per_j is None else joules * market_per_j,
            )
        for proc, joules, workload in zip(processes, shares, workloads, strict=True):
            frac = joules / delta if delta > 0 else 0.0
            att.gpu_ledger.add(
                reading.uuid,
                str(reading.index),
                proc.pid,
                proc.start_time,
                workload,
                joules,
                span,
                now,
                grams=joules * g_per_j,
                marginal_grams=None if marginal_per_j is None else joules * marginal_per_j,
                embodied_grams=embodied * frac,
                market_grams=None if market_per_j is None else joules * market_per_j,
            )
            self._charged(proc.pid, proc.start_time, workload, joules)
        return delta

    # --- CPUs ---
    def _measure_cpu(self, reading: CpuReading, now: float) -> float | None:
        """One CPU domain's energy delta, or None when this read measured nothing."""
        pkg = reading.package
        reading, problems = screen_cpu_reading(reading)
        self._cpu_last[pkg] = reading
        tracker = self._cpu_trackers.setdefault(pkg, EnergyTracker())
        delta = tracker.update(now, reading.energy_j, reading.power_w, MAX_DEVICE_WATTS, self.max_gap_s)
        if tracker.rejected:
            problems.append((tracker.rejected, f"energy_j={reading.energy_j!r}"))
        for why, detail in problems:
            self._reject(_cpu_kind(pkg), pkg, why, detail)
        if tracker.method == NONE:
            self._cpu_method[pkg] = (NONE, "rejected" if problems else "no_power_or_energy")
            return None
        # The estimated source integrates a model: its "counter" is an estimate, not a measurement.
        self._cpu_method[pkg] = ("estimate" if reading.method == "estimated" else tracker.method, "")
        self._cpu_measured.add(pkg)
        return delta

    def _account_cpu(
        self, deltas: dict[str, float], now: float, wall: float, dt: float, factors: Factors
    ) -> float:
        """Each CPU domain's energy over its own span (since its previous good reading), its emissions at
        the factors of that span, and its attribution by the processes' CPU time of the same span."""
        spans = {pkg: self._cpu_trackers[pkg].elapsed_s for pkg in deltas}
        domain_factors = {pkg: self._span_factors(spans[pkg], dt, wall, factors) for pkg in deltas}
        unattributed = dict(deltas)
        att = self.attribution
        if att is not None and att.cpu_times is not None:
            # Read on every tick, the first too: the first read is the baseline of the second interval.
            usage, busy = att.cpu_times.read()
            if att.cpu_since is None:
                att.cpu_since = CpuTimeSince(self.max_gap_s)
            att.cpu_since.add(now, usage, busy, self._cpu_trackers)
            unattributed = self._attribute_cpu(att, att.cpu_since, deltas, spans, domain_factors, now)
        for pkg, delta in deltas.items():
            g_per_j, marginal_per_j, market_per_j = domain_factors[pkg]
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
        since: CpuTimeSince,
        deltas: dict[str, float],
        spans: dict[str, float],
        domain_factors: dict[str, Factors],
        now: float,
    ) -> dict[str, float]:
        """Each domain (package, DRAM) on its own, over its own span: only its active part is split by
        the processes' CPU time of that span."""
        cpus = att.cpu_times.cpu_count if att.cpu_times is not None else 0
        spread = att.cpu_idle.mode == "spread"
        unattributed = dict(deltas)
        charged: dict[tuple[int, float], _Totals] = {}  # per process, summed over the domains
        spans_of: dict[tuple[int, float], float] = {}  # the longest span it was charged over
        names: dict[tuple[int, float], tuple[str, str]] = {}
        for pkg, delta in deltas.items():
            span = spans[pkg]
            taken = since.take(pkg, now)
            if span <= 0 or taken is None:  # a first reading, or a gap too long to have kept its CPU time
                continue
            usage, busy = taken
            keys = list(usage)
            learner = att.cpu_learners.setdefault(pkg, CpuIdleLearner())
            learner.observe(busy / (span * cpus) if cpus > 0 else 0.0, delta / span)
            idle_w = att.cpu_idle.configured_watts(pkg)
            if idle_w is None:
                idle_w = learner.value
            shares, unattributed[pkg] = attribute_cpu_energy(
                delta, [usage[k][0] for k in keys], busy, (idle_w or 0.0) * span, spread
            )
            g_per_j, marginal_per_j, market_per_j = domain_factors[pkg]
            for key, share in zip(keys, shares, strict=True):
                if share <= 0:
                    continue
                names[key] = usage[key][1:]
                spans_of[key] = max(spans_of.get(key, 0.0), span)
                acc = charged.setdefault(key, _Totals())
                acc.energy_j += share
                acc.grams += share * g_per_j
                acc.add_marginal(None if marginal_per_j is None else share * marginal_per_j)
                acc.add_market(None if market_per_j is None else share * market_per_j)
        for (pid, start), acc in charged.items():
            comm, user = names[(pid, start)]
            workload = att.resolver.resolve(pid, start, comm, user)
            att.cpu_ledger.add(
                "",
                "",
                pid,
                start,
                workload,
                acc.energy_j,
                spans_of[(pid, start)],
                now,
                grams=acc.grams,
                marginal_grams=acc.marginal_grams,
                market_grams=acc.market_grams,
            )
            self._charged(pid, start, workload, acc.energy_j)
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


def _ledgers(att: Attribution) -> tuple[ProcessLedger | None, ...]:
    """The attribution's ledgers in PROCESS_STATE_KEYS order (None where not kept)."""
    return att.gpu_ledger, att.cpu_ledger, att.node_ledger


def _gpu_key(reading: GpuReading) -> str:
    # A GPU already down when the exporter starts has no UUID yet: key it by index until it answers.
    return reading.uuid or f"index-{reading.index}"


def _cpu_kind(package: str) -> str:
    return "dram" if package.endswith("-dram") else "cpu"


def _mapping(data: dict[str, Any], key: str) -> dict[Any, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be an object")
    return value


def _without_measurements(reading: GpuReading) -> GpuReading:
    """The reading's identity only: what is served for a GPU whose reading could not be accounted."""
    return replace(
        reading,
        power_w=None,
        energy_j=None,
        util=None,
        mem_used_bytes=None,
        mem_total_bytes=None,
        temp_c=None,
        power_limit_w=None,
        processes=None,
    )


def _down(reading: GpuReading, error: str) -> GpuReading:
    return replace(reading, up=False, error=error) if reading.up else reading
