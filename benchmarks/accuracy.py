"""Accounting accuracy on replay traces against exact integrals, and attribution conservation over runs."""

from __future__ import annotations

import json
import math
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from unittest import mock

from benchmarks.fakes import FakeClock, attribution_for
from exporter.carbon import service as carbon_service
from exporter.carbon.accounting import JOULES_PER_KWH
from exporter.carbon.config import CarbonConfig, ProviderConfig
from exporter.carbon.provider import ForecastPoint, Reading
from exporter.carbon.service import CarbonService
from exporter.model import GpuReading, Snapshot
from exporter.sampler import Attribution, Sampler
from exporter.sources.replay import ReplayGpuSource
from exporter.sources.simulated import SimulatedGpuSource

PUE = 1.2
MONO0 = 500.0
WALL0 = 1_700_000_000.0
ENERGY_TARGET_PCT = 0.5
EMISSIONS_TARGET_PCT = 0.5
# "Exactly" within floating-point rounding: relative to the GPU's own energy total.
CONSERVATION_TARGET_REL = 1e-9


@dataclass(frozen=True)
class Step:
    """Power held from ``start`` to ``end`` (seconds from the trace start), with the processes then."""

    start: float
    end: float
    watts: float
    processes: tuple[tuple[int, float], ...]  # (pid, sm_util)


@dataclass(frozen=True)
class Trace:
    name: str
    duration_s: float
    gpus: tuple[tuple[Step, ...], ...]

    def energy(self, gpu: int, t0: float = 0.0, t1: float | None = None) -> float:
        """The exact integral of the held power over [t0, t1]."""
        end = self.duration_s if t1 is None else t1
        return math.fsum(s.watts * max(0.0, min(end, s.end) - max(t0, s.start)) for s in self.gpus[gpu])


@dataclass(frozen=True)
class AccuracyResult:
    case: str
    quantity: str  # "energy J", "emissions g", "conservation J"
    measured: float
    exact: float
    error_pct: float  # relative error in percent (conservation: max |error| / GPU energy, in percent)
    target: str
    holds: bool | None  # None: informative, no target applies


def constant_trace(duration_s: float = 120.0) -> Trace:
    gpus = []
    for watts in (300.0, 450.0):
        gpus.append(
            tuple(Step(float(t), float(t + 1), watts, ((4242, 0.9),)) for t in range(int(duration_s)))
        )
    return Trace("constant", duration_s, tuple(gpus))


def bursty_trace(duration_s: float = 120.0, seed: int = 7) -> Trace:
    """Power jumping between idle and near the limit at irregular, often sub-second, moments."""
    rng = random.Random(seed)
    gpus = []
    for gpu in range(2):
        steps: list[Step] = []
        t = 0.0
        while t < duration_s:
            length = min(duration_s - t, round(rng.choice((rng.uniform(0.1, 0.9), rng.uniform(1.0, 4.0))), 3))
            busy = rng.random() < 0.6
            watts = round(rng.uniform(450.0, 700.0) if busy else rng.uniform(60.0, 120.0), 2)
            count = rng.randint(1, 3) if busy else rng.choice((0, 0, 1))
            procs = tuple(
                (9000 + gpu * 100 + rng.randrange(6), round(rng.uniform(0.0, 1.0), 3) if busy else 0.0)
                for _ in range(count)
            )
            unique = tuple({pid: (pid, util) for pid, util in procs}.values())
            steps.append(Step(t, t + length, watts, unique))
            t = round(t + length, 3)
        gpus.append(tuple(steps))
    return Trace("bursty", duration_s, tuple(gpus))


def write_trace(trace: Trace, path: Path, counter: bool = True) -> None:
    """The replay format (docs/sources.md, "Replay traces"): a line per change of any GPU, every GPU on it."""
    times = sorted({s.start for steps in trace.gpus for s in steps} | {trace.duration_s})
    with path.open("w", encoding="utf-8") as fh:
        for t in times:
            gpus = []
            for index, steps in enumerate(trace.gpus):
                step = next((s for s in steps if s.start <= t < s.end), steps[-1])
                gpu: dict[str, object] = {
                    "index": index,
                    "uuid": f"GPU-bench-{index}",
                    "name": "NVIDIA H100 80GB HBM3",
                    "power_w": step.watts,
                    "processes": [
                        {
                            "pid": pid,
                            "comm": "python",
                            "user": "alice",
                            "sm_util": util,
                            "cgroup": f"/system.slice/docker-{pid:064x}.scope",
                        }
                        for pid, util in step.processes
                    ],
                }
                if counter:
                    gpu["energy_j"] = trace.energy(index, 0.0, t)
                gpus.append(gpu)
            fh.write(json.dumps({"t": t, "gpus": gpus}) + "\n")


class CounterlessSource:
    """The same readings without the energy counter: the sampler must integrate power (pre-Volta GPUs)."""

    def __init__(self, inner: ReplayGpuSource) -> None:
        self.inner = inner
        self.name = inner.name

    def read(self, now: float) -> list[GpuReading]:
        return [replace(r, energy_j=None) for r in self.inner.read(now)]

    def close(self) -> None:
        self.inner.close()


class StepProvider:
    """A provider whose value the benchmark changes mid-run."""

    type = "ukgrid"
    signal = "average"
    basis = "lifecycle"
    zone = "DE"
    url = ""

    def __init__(self, grams_per_kwh: float) -> None:
        self.grams_per_kwh = grams_per_kwh

    def current(self) -> Reading:
        return Reading(self.grams_per_kwh)

    def forecast(self) -> tuple[ForecastPoint, ...] | None:
        return None


def step_carbon(wall: FakeClock, provider: StepProvider) -> CarbonService:
    """A real CarbonService whose only provider is ``provider``, a value the benchmark changes mid-run."""
    config = CarbonConfig(
        zone="DE",
        pue=PUE,
        providers=(ProviderConfig(type="ukgrid", key="carbon.providers[0]", zone="DE", refresh=1.0),),
    )
    with mock.patch.object(carbon_service, "provider_for", lambda *_args: provider):
        service = CarbonService(config, clock=wall)
    service.refresh_now()
    return service


def _tick_times(duration_s: float, seed: int = 3) -> list[float]:
    """1 s ticks with +-50 ms of scheduling jitter, ending exactly at the trace's end."""
    rng = random.Random(seed)
    times = [0.0] + [k + rng.uniform(-0.05, 0.05) for k in range(1, int(duration_s))]
    return [*times, duration_s]


def _replay(
    trace: Trace,
    workdir: Path,
    counter: bool = True,
    step_at: float | None = None,
    low: float = 100.0,
    high: float = 500.0,
    check: Callable[[Snapshot], None] | None = None,
) -> Snapshot:
    path = workdir / f"{trace.name}-{'counter' if counter else 'power'}.jsonl"
    write_trace(trace, path, counter)
    replay = ReplayGpuSource(str(path))
    source: ReplayGpuSource | CounterlessSource = replay if counter else CounterlessSource(replay)
    clock, wall = FakeClock(MONO0), FakeClock(WALL0)
    provider = StepProvider(low)
    carbon = step_carbon(wall, provider)
    procfs = tempfile.TemporaryDirectory(prefix="bench-procfs-")
    try:
        sampler = Sampler(
            source,
            None,
            carbon,
            attribution_for(None, procfs.name, retention_s=3600.0),
            clock=clock,
            wall_clock=wall,
        )
        snap = sampler.tick()
        for t in _tick_times(trace.duration_s)[1:]:
            if step_at is not None and provider.grams_per_kwh == low and t >= step_at:
                wall.t = WALL0 + step_at  # the provider's new value arrives mid-interval
                provider.grams_per_kwh = high
                carbon.refresh_now()
            clock.t, wall.t = MONO0 + t, WALL0 + t
            snap = sampler.tick()
            if check is not None:
                check(snap)
        return snap
    finally:
        procfs.cleanup()


def _pct(measured: float, exact: float) -> float:
    return (measured - exact) / exact * 100.0


class ConservationCheck:
    """Max over every snapshot and GPU of |sum(process energy) + unattributed - GPU energy|."""

    def __init__(self) -> None:
        self.max_abs_j = 0.0
        self.max_rel = 0.0
        self.snapshots = 0

    def __call__(self, snap: Snapshot) -> None:
        self.snapshots += 1
        per_gpu: dict[str, list[float]] = {}
        for p in snap.gpu_processes:
            per_gpu.setdefault(p.gpu_uuid, []).append(p.energy_j_total)
        for g in snap.gpus:
            error = abs(
                math.fsum([*per_gpu.get(g.reading.uuid, []), g.unattributed_energy_j_total])
                - g.energy_j_total
            )
            self.max_abs_j = max(self.max_abs_j, error)
            if g.energy_j_total > 0:
                self.max_rel = max(self.max_rel, error / g.energy_j_total)


def _simulated_conservation(ticks: int, policy: str) -> ConservationCheck:
    check = ConservationCheck()
    clock, wall = FakeClock(MONO0), FakeClock(WALL0)
    source = SimulatedGpuSource(8, seed=0, wall_clock=WALL0)
    procfs = tempfile.TemporaryDirectory(prefix="bench-procfs-")
    try:
        attribution: Attribution = attribution_for(
            source.pods, procfs.name, retention_s=ticks + 3600.0, policy=policy
        )
        sampler = Sampler(source, None, None, attribution, clock=clock, wall_clock=wall)
        for _ in range(ticks):
            clock.t += 1.0
            wall.t += 1.0
            check(sampler.tick())
    finally:
        procfs.cleanup()
    return check


def run(quick: bool = False) -> list[AccuracyResult]:
    results: list[AccuracyResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-traces-") as tmp:
        workdir = Path(tmp)
        traces = (constant_trace(), bursty_trace())
        for trace in traces:
            exact = math.fsum(trace.energy(i) for i in range(len(trace.gpus)))
            for counter in (True, False):
                conservation = ConservationCheck()
                snap = _replay(trace, workdir, counter, check=conservation)
                measured = math.fsum(g.energy_j_total for g in snap.gpus)
                error = _pct(measured, exact)
                how = "energy counter" if counter else "power only, integrated"
                # The target is for energy as the trace records it (the counter); integrating 1 s power
                # samples of a sub-second bursty load is a sampling limit, shown for information.
                applies = counter or trace.name == "constant"
                results.append(
                    AccuracyResult(
                        f"{trace.name} trace, {how}",
                        "energy J",
                        measured,
                        exact,
                        error,
                        f"< {ENERGY_TARGET_PCT}%" if applies else "-",
                        abs(error) < ENERGY_TARGET_PCT if applies else None,
                    )
                )
                if trace.name == "bursty" and counter:
                    results.append(
                        AccuracyResult(
                            "bursty trace, processes coming and going",
                            "conservation J",
                            conservation.max_abs_j,
                            0.0,
                            conservation.max_rel * 100.0,
                            "exact (rounding)",
                            conservation.max_rel <= CONSERVATION_TARGET_REL,
                        )
                    )
            step_at, low, high = 60.5, 100.0, 500.0
            snap = _replay(trace, workdir, True, step_at=step_at, low=low, high=high)
            exact_g = math.fsum(
                (trace.energy(i, 0.0, step_at) * low + trace.energy(i, step_at) * high) / JOULES_PER_KWH * PUE
                for i in range(len(trace.gpus))
            )
            measured_g = math.fsum(g.emissions_g_total for g in snap.gpus)
            error = _pct(measured_g, exact_g)
            results.append(
                AccuracyResult(
                    f"{trace.name} trace, intensity {low:g} -> {high:g} g/kWh at t={step_at:g} s",
                    "emissions g",
                    measured_g,
                    exact_g,
                    error,
                    f"< {EMISSIONS_TARGET_PCT}%",
                    abs(error) < EMISSIONS_TARGET_PCT,
                )
            )
    ticks = 120 if quick else 900
    for policy in ("proportional", "idle-baseline"):
        check = _simulated_conservation(ticks, policy)
        results.append(
            AccuracyResult(
                f"8 simulated GPUs, {ticks} ticks, {policy}",
                "conservation J",
                check.max_abs_j,
                0.0,
                check.max_rel * 100.0,
                "exact (rounding)",
                check.max_rel <= CONSERVATION_TARGET_REL,
            )
        )
    return results
