"""Pure functions that split one interval's GPU or CPU energy among the processes that used the device."""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from exporter.model import GpuProcessSample

POLICIES = ("proportional", "idle-baseline")


@dataclass(frozen=True)
class AttributionPolicy:
    """How a GPU's interval energy is split.

    ``proportional`` (the contract default): everything goes to the processes holding the GPU, in
    proportion to their SM utilisation; nothing to unattributed unless no process holds the GPU.
    ``idle-baseline``: ``idle_watts`` x interval (or the learned idle power when ``idle_watts`` is
    None) is kept apart as unattributed, and only the energy above it is split.
    """

    kind: str = "proportional"
    idle_watts: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in POLICIES:
            raise ValueError(f"unknown attribution policy {self.kind!r} (use {' or '.join(POLICIES)})")
        if self.idle_watts is not None and not (math.isfinite(self.idle_watts) and self.idle_watts >= 0):
            raise ValueError(f"idle watts must be a finite number >= 0, got {self.idle_watts!r}")


def _check_energy(energy_j: float) -> None:
    if not (math.isfinite(energy_j) and energy_j >= 0):
        # The sampler turns counter resets and wraps into non-negative deltas before calling us; a
        # negative or NaN energy here is a bug upstream and must not leak into monotonic counters.
        raise ValueError(f"interval energy must be a finite number >= 0, got {energy_j!r}")


def _activity(value: float | None) -> float:
    if value is None or not math.isfinite(value) or value <= 0:
        return 0.0
    return float(value)


def _split(
    energy_j: float,
    distributable: float,
    weights: Sequence[float],
    denominator: float,
) -> tuple[list[float], float]:
    """Give ``distributable * w / denominator`` to each weight; the rest of ``energy_j`` is unattributed.

    Conservation is made exact in the sense that ``math.fsum([*shares, unattributed]) == energy_j``:
    after the nominal split, the residual left by floating-point rounding (a few ulps of ``energy_j``)
    is moved into one share (or into unattributed, unless everything is meant to be distributed, in
    which case unattributed stays exactly 0). Every value returned is >= 0.
    """
    n = len(weights)
    if n == 0 or distributable <= 0 or denominator <= 0:
        return [0.0] * n, energy_j
    shares = [distributable * w / denominator for w in weights]
    if denominator < 1.0 and 0.0 in shares:
        # distributable * w can underflow to 0 for a subnormal weight and lose that process' whole
        # share; w / denominator (within 0-1) cannot. Kept for this case only: elsewhere the usual
        # order rounds 400 x 0.6 / 0.8 to exactly 300.
        shares = [
            v if v > 0 or w <= 0 else distributable * (w / denominator)
            for v, w in zip(shares, weights, strict=True)
        ]
    # The share that takes the rounding slack: the smallest one still far above a few ulps of the
    # energy. Small means a fine ulp, so ``energy - sum(others)`` lands on it exactly (Sterbenz) and a
    # correction of a few ulps of the energy is representable in it; large enough means it can
    # never be pushed below 0.
    floor = energy_j * 2.0**-40
    smallest = min((v for v in shares if v >= floor), default=None)
    absorber = shares.index(smallest) if smallest is not None else max(range(n), key=weights.__getitem__)
    full = distributable == energy_j and math.fsum(weights) >= denominator
    if full:
        shares[absorber] = 0.0
        shares[absorber] = max(0.0, energy_j - math.fsum(shares))
        unattributed = 0.0
    else:
        unattributed = max(0.0, energy_j - math.fsum(shares))
    for _ in range(8):
        residual = math.fsum([*shares, unattributed, -energy_j])
        if residual == 0.0:
            break
        # The residual is a few ulps of energy_j. Give it to an element that can take it exactly and
        # stay >= 0, preferring the finest one (smallest value, so smallest ulp); unattributed is a
        # candidate only when it is not meant to be exactly 0.
        values = shares if full else [*shares, unattributed]
        best = _exact_taker(values, [absorber] if full else [n, absorber], residual)
        if best is None:
            best = _finest_taker(values, residual)
        if best is None:
            break
        if best == len(shares):
            unattributed -= residual
        else:
            shares[best] -= residual
    return shares, unattributed


def _takes_exactly(value: float, residual: float) -> bool:
    corrected = value - residual
    return corrected >= 0.0 and corrected != value and math.fsum([corrected, -value, residual]) == 0.0


def _exact_taker(values: Sequence[float], preferred: Sequence[int], residual: float) -> int | None:
    """The first preferred element that can take the residual exactly (the common, cheap case)."""
    for i in preferred:
        if _takes_exactly(values[i], residual):
            return i
    return None


def _finest_taker(values: Sequence[float], residual: float) -> int | None:
    """Any element that takes the residual exactly, the smallest first; else the smallest that moves."""
    best: int | None = None
    best_exact = False
    for i, value in enumerate(values):
        corrected = value - residual
        if corrected < 0.0 or corrected == value:
            continue
        exact = math.fsum([corrected, -value, residual]) == 0.0
        if best is None or (exact, -value) > (best_exact, -values[best]):
            best, best_exact = i, exact
    return best


def _gpu_weights(processes: Sequence[GpuProcessSample]) -> list[float]:
    """Each process's weight: its SM activity, times its MIG instance's SM share on MIG.

    Without any activity reading the weights fall back to an equal split; on MIG that is each
    instance's SM share divided among the processes in that instance.
    """
    mig = any(p.mig_sm_share is not None for p in processes)
    if mig:
        weights = [_activity(p.mig_sm_share) * _activity(p.sm_util) for p in processes]
    else:
        # The common case, inlined: this runs for every process of every GPU on every tick.
        weights = [
            u if u is not None and u > 0 and u != math.inf else 0.0 for u in (p.sm_util for p in processes)
        ]
    if math.fsum(weights) > 0:
        return weights
    if not mig:
        return [1.0] * len(processes)
    per_instance: dict[object, int] = {}
    keys: list[object] = []
    for i, p in enumerate(processes):
        key: object = ("gi", p.gpu_instance_id) if p.gpu_instance_id is not None else ("pid", i)
        keys.append(key)
        per_instance[key] = per_instance.get(key, 0) + 1
    weights = [_activity(p.mig_sm_share) / per_instance[k] for p, k in zip(processes, keys, strict=True)]
    if math.fsum(weights) > 0:
        return weights
    return [1.0] * len(processes)


def attribute_gpu_energy(
    energy_j: float,
    interval_s: float,
    processes: Sequence[GpuProcessSample],
    policy: AttributionPolicy = AttributionPolicy(),
    idle_w: float | None = None,
) -> tuple[list[float], float]:
    """Split one GPU's energy over one interval among the processes holding it.

    Returns the joules of each process, in the order of ``processes``, and the unattributed joules.
    ``idle_w`` is the learned idle power (see IdleBaselineLearner); the policy's configured
    ``idle_watts`` wins over it. ``math.fsum([*per_process, unattributed]) == energy_j`` always holds.
    """
    _check_energy(energy_j)
    if not processes:
        return [], energy_j
    weights = _gpu_weights(processes)
    distributable = energy_j
    if policy.kind == "idle-baseline":
        idle = policy.idle_watts if policy.idle_watts is not None else idle_w
        if idle is not None and math.isfinite(idle) and idle > 0 and interval_s > 0:
            baseline = min(energy_j, idle * interval_s)
            distributable = energy_j - baseline
    return _split(energy_j, distributable, weights, math.fsum(weights))


def attribute_cpu_energy(
    energy_j: float,
    cpu_seconds: Sequence[float],
    busy_cpu_seconds: float,
) -> tuple[list[float], float]:
    """Split one CPU energy domain's interval energy by each process's CPU time.

    A process gets ``energy_j * its_cpu_seconds / busy_cpu_seconds``: the package's energy while it
    was busy is charged to the processes that kept it busy. Busy time no listed process accounts for
    (kernel threads, interrupts, processes that came and went between two reads) goes to
    unattributed, and so does everything when the machine was idle. When the processes' CPU seconds
    add up to more than the busy time (the two are read at slightly different moments), the busy time
    is raised to their sum, so nothing is ever over-attributed.
    """
    _check_energy(energy_j)
    weights = [_activity(c) for c in cpu_seconds]
    total = math.fsum(weights)
    busy = _activity(busy_cpu_seconds)
    denominator = max(busy, total)
    if total <= 0:
        return [0.0] * len(weights), energy_j
    return _split(energy_j, energy_j, weights, denominator)


class IdleBaselineLearner:
    """Learns one GPU's idle power: a low percentile of the power seen while no process held it.

    Keeps the last ``window`` idle samples in a sorted list (bounded, so a tick costs O(window) at
    worst, microseconds for the default). ``value`` is None until ``min_samples`` idle samples were
    seen; then the idle-baseline policy falls back to splitting everything.
    """

    def __init__(self, percentile: float = 0.05, window: int = 3600, min_samples: int = 10) -> None:
        if not 0 <= percentile <= 1:
            raise ValueError("percentile must be within 0-1")
        if window < 1 or min_samples < 1:
            raise ValueError("window and min_samples must be >= 1")
        self._percentile = percentile
        self._min_samples = min_samples
        self._order: deque[float] = deque(maxlen=window)
        self._sorted: list[float] = []

    def observe(self, power_w: float | None, has_processes: bool) -> None:
        """Record one sample; only samples with no process on the GPU teach the idle power."""
        if has_processes or power_w is None or not math.isfinite(power_w) or power_w < 0:
            return
        if len(self._order) == self._order.maxlen:
            oldest = self._order[0]
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]
        self._order.append(power_w)
        bisect.insort(self._sorted, power_w)

    @property
    def samples(self) -> int:
        return len(self._sorted)

    @property
    def value(self) -> float | None:
        """The learned idle watts, or None while too few idle samples were seen."""
        if len(self._sorted) < self._min_samples:
            return None
        return self._sorted[int(self._percentile * (len(self._sorted) - 1))]
