"""Pure functions that split one interval's GPU or CPU energy among the processes that used the device."""

from __future__ import annotations

import bisect
import itertools
import math
import sys
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from exporter.model import GpuProcessSample

# The smallest normal float: below it a product keeps fewer digits.
_NORMAL_MIN = sys.float_info.min
POLICIES = ("proportional", "idle-baseline")


@dataclass(frozen=True)
class AttributionPolicy:
    """How a GPU's interval energy is split.

    ``proportional`` (the contract default): everything goes to the processes holding the GPU, in
    proportion to their SM utilisation; nothing to unattributed unless no process holds the GPU (on
    MIG: the share of the board no occupied instance covers stays unattributed).
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
    if denominator < 1.0:
        # distributable * w is subnormal for a subnormal weight: it loses that process' digits (even
        # its whole share, underflowing to 0), and divided by a small denominator the error grows
        # past the share itself. w / denominator (within 0-1) keeps them. Kept for this case only:
        # elsewhere the usual order rounds 400 x 0.6 / 0.8 to exactly 300.
        shares = [
            distributable * (w / denominator) if w > 0 and distributable * w < _NORMAL_MIN else v
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


def _util_weights(processes: Sequence[GpuProcessSample]) -> list[float]:
    """Each process's weight on a whole (non-MIG) GPU: its SM utilisation; equal when none has any."""
    # The common case, inlined: this runs for every process of every GPU on every tick.
    weights = [
        u if u is not None and u > 0 and u != math.inf else 0.0 for u in (p.sm_util for p in processes)
    ]
    if math.fsum(weights) > 0:
        return weights
    # No process has (ever had) a utilisation sample: nothing to go by but an equal split.
    return [1.0] * len(processes)


def _mig_weights(processes: Sequence[GpuProcessSample]) -> list[float]:
    """Each process's share of the whole board on a MIG GPU; the shares add up to at most 1.

    NVML measures power only for the whole board and no activity per instance (docs/attribution.md,
    "MIG"), so an instance's processes get at most the instance's share of the board's SMs: all of it when
    their activity is unknown (split equally among them), ``share x activity`` when a source knows
    it. Instances no process occupies keep their share out of the sum, so it stays unattributed.
    Processes whose instance is unknown share the capacity no known instance accounts for.
    """
    weights = [0.0] * len(processes)
    instances: dict[object, list[int]] = {}
    unknown: list[int] = []
    for i, p in enumerate(processes):
        share = p.mig_sm_share
        if share is None or not math.isfinite(share) or share <= 0:
            unknown.append(i)
            continue
        key: object = ("gi", p.gpu_instance_id) if p.gpu_instance_id is not None else ("pid", i)
        instances.setdefault(key, []).append(i)
    occupied = 0.0
    for members in instances.values():
        share = min(1.0, max(_activity(processes[i].mig_sm_share) for i in members))
        occupied += share
        if all(processes[i].sm_util is None for i in members):
            for i in members:
                weights[i] = share / len(members)
            continue
        activity = [min(1.0, _activity(processes[i].sm_util)) for i in members]
        # Activity is a fraction of the instance; processes sharing it cannot use more than all of it.
        scale = share / max(1.0, math.fsum(activity))
        for i, a in zip(members, activity, strict=True):
            weights[i] = a * scale
    if unknown:
        each = max(0.0, 1.0 - occupied) / len(unknown)
        for i in unknown:
            weights[i] = each
    return weights


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
    if any(p.mig_sm_share is not None for p in processes):
        weights = _mig_weights(processes)
        # Against the whole board: what the occupied instances do not cover stays unattributed.
        denominator = max(1.0, math.fsum(weights))
    else:
        weights = _util_weights(processes)
        denominator = math.fsum(weights)
    distributable = energy_j
    if policy.kind == "idle-baseline":
        idle = policy.idle_watts if policy.idle_watts is not None else idle_w
        if idle is not None and math.isfinite(idle) and idle > 0 and interval_s > 0:
            baseline = min(energy_j, idle * interval_s)
            distributable = energy_j - baseline
    return _split(energy_j, distributable, weights, denominator)


def attribute_cpu_energy(
    energy_j: float,
    cpu_seconds: Sequence[float],
    busy_cpu_seconds: float,
    idle_j: float = 0.0,
    spread_idle: bool = False,
) -> tuple[list[float], float]:
    """Split one CPU energy domain's interval energy (a package, or its DRAM) by each process's CPU time.

    ``idle_j`` is the part of the energy the domain would have used anyway, idle (the learned or
    configured idle power x interval, see CpuIdleLearner). Only the rest, the active part, is
    split: a process gets ``active * its_cpu_seconds / busy_cpu_seconds``, so a process that kept the
    CPUs busy for 10 ms is charged for that 10 ms of activity, not for the idle package around it.
    The idle part stays unattributed (node level) unless ``spread_idle``, which splits the whole
    energy the same way. Busy time no listed process accounts for (kernel threads, interrupts,
    processes that came and went between two reads) leaves its share unattributed, and so does
    everything when no process used CPU. When the processes' CPU seconds add up to more than the busy
    time (the two are read at slightly different moments), the busy time is raised to their sum, so
    nothing is ever over-attributed.
    """
    _check_energy(energy_j)
    weights = [_activity(c) for c in cpu_seconds]
    total = math.fsum(weights)
    busy = _activity(busy_cpu_seconds)
    denominator = max(busy, total)
    if total <= 0:
        return [0.0] * len(weights), energy_j
    idle = min(energy_j, _activity(idle_j)) if not spread_idle else 0.0
    return _split(energy_j, energy_j - idle, weights, denominator)


def spread_unmetered(
    unmetered_j: float, process_j: Sequence[float], component_j: float
) -> tuple[list[float], float]:
    """Split a node interval's unmetered energy by each process's share of the metered energy.

    ``process_j`` is the GPU + CPU energy each process was charged over the node interval's span, and
    ``component_j`` the GPU + CPU + DRAM energy measured over the same span (what the processes got
    plus what stayed unattributed: idle GPUs, CPU idle power, DRAM). A process gets
    ``unmetered x its joules / component joules``; the rest, the share of the metered energy that no
    process was charged, stays with no process, so the two add up to ``unmetered_j`` exactly (as
    ``_split`` makes them). Should the processes' joules add up to more than the components' (they
    are summed in another order), their sum is the denominator: nothing is ever over-attributed.
    """
    _check_energy(unmetered_j)
    weights = [_activity(j) for j in process_j]
    denominator = max(_activity(component_j), math.fsum(weights))
    return _split(unmetered_j, unmetered_j, weights, denominator)


# What ProcessCpuTimes.read gives per interval: {(pid, start time): (CPU seconds, comm, user)}.
CpuUsage = Mapping[tuple[int, float], tuple[float, str, str]]


class CpuTimeSince:
    """The processes' CPU time since each CPU energy domain's last good reading.

    Process CPU times are read every tick, but a domain whose energy read failed gets, at its next
    reading, an energy delta over the whole gap: it must be split by the CPU time of that same gap,
    not of the last tick alone (else the gap's idle power would be taken as activity and charged to
    whoever runs now). So each tick's CPU time is kept for every domain until that domain is read
    again (``take``). A gap longer than ``max_span_s`` is not kept (memory stays bounded whatever
    happens to a domain): ``take`` then says None and the gap's energy stays unattributed.
    """

    def __init__(self, max_span_s: float) -> None:
        self.max_span_s = max_span_s
        self._pending: dict[str, list[tuple[CpuUsage, float]]] = {}
        self._since: dict[str, float] = {}
        self._lost: set[str] = set()

    def add(self, now: float, usage: CpuUsage, busy_s: float, domains: Iterable[str]) -> None:
        """One tick's CPU time (since the previous tick), for each of the ``domains`` known so far."""
        for domain in domains:
            since = self._since.setdefault(domain, now)
            if domain in self._lost:
                continue
            if now - since > self.max_span_s:
                self._lost.add(domain)
                self._pending.pop(domain, None)
                continue
            self._pending.setdefault(domain, []).append((usage, busy_s))

    def take(self, domain: str, now: float) -> tuple[CpuUsage, float] | None:
        """The CPU time (per process, and the machine's busy seconds) since ``domain``'s previous
        reading, which is now; None when that gap was too long to keep."""
        chunks = self._pending.pop(domain, [])
        self._since[domain] = now
        if domain in self._lost:
            self._lost.discard(domain)
            return None
        if len(chunks) == 1:
            return chunks[0]
        merged: dict[tuple[int, float], tuple[float, str, str]] = {}
        for usage, _ in chunks:
            for key, (seconds, comm, user) in usage.items():
                before = merged.get(key)
                merged[key] = (seconds + (before[0] if before else 0.0), comm, user)
        return merged, math.fsum(busy for _, busy in chunks)


CPU_IDLE_MODES = ("unattributed", "spread")


@dataclass(frozen=True)
class CpuIdlePolicy:
    """What happens to a CPU domain's idle power, and the idle watts when they are configured.

    ``unattributed`` (the contract default): idle power stays at node level, only the active part is
    split by CPU time. ``spread``: the idle power too is split by CPU time. ``package_watts`` and
    ``dram_watts``: idle power of each package and each DRAM domain; None: learned per domain.
    """

    mode: str = "unattributed"
    package_watts: float | None = None
    dram_watts: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in CPU_IDLE_MODES:
            raise ValueError(f"unknown CPU idle mode {self.mode!r} (use {' or '.join(CPU_IDLE_MODES)})")
        for watts in (self.package_watts, self.dram_watts):
            if watts is not None and not (math.isfinite(watts) and watts >= 0):
                raise ValueError(f"idle watts must be a finite number >= 0, got {watts!r}")

    def configured_watts(self, domain: str) -> float | None:
        """The configured idle watts of a domain label (``package-0``, ``package-0-dram``), or None."""
        return self.dram_watts if domain.endswith("-dram") else self.package_watts


class CpuIdleLearner:
    """Learns one CPU energy domain's idle power from (utilisation, power) pairs, one per interval.

    A CPU node never has "no process", so the GPU learner's rule (power while nothing runs) does not
    apply. Two estimates over the last ``window`` intervals:

    - a low percentile of the domain's power: on a node that is idle now and then (an idle GPU node,
      the case where charging idle power to a tiny process hurts most) this is the idle power plus
      the little the busiest of those quiet moments added;
    - where utilisation varied enough (10th to 90th percentile at least ``min_spread`` apart over at
      least ``min_fit`` intervals), the intercept of a least-squares line power = idle + slope x
      utilisation, which reaches below the load the node never leaves.

    The value is the lower of the two (never below 0), so it errs towards leaving energy at node level
    rather than charging processes for power they did not cause. A node that is always equally busy
    learns too high an idle power; configure it (``CpuIdlePolicy``) there.
    """

    def __init__(
        self, window: int = 3600, percentile: float = 0.05, min_fit: int = 60, min_spread: float = 0.2
    ) -> None:
        if window < 1 or min_fit < 2:
            raise ValueError("window must be >= 1 and min_fit >= 2")
        if not 0 <= percentile <= 1:
            raise ValueError("percentile must be within 0-1")
        self._percentile = percentile
        self._min_fit = min_fit
        self._min_spread = min_spread
        self._pairs: deque[tuple[float, float]] = deque(maxlen=window)
        self._powers: list[float] = []
        self._utils: list[float] = []
        self._sums = [0.0, 0.0, 0.0, 0.0]  # sum u, sum p, sum u^2, sum u*p
        self._evicted = 0

    def observe(self, utilisation: float, power_w: float) -> None:
        """One interval: the machine's busy fraction of all CPUs (0-1) and the domain's mean power."""
        if not (math.isfinite(utilisation) and math.isfinite(power_w)) or power_w < 0:
            return
        u = min(1.0, max(0.0, utilisation))
        if len(self._pairs) == self._pairs.maxlen:
            old_u, old_p = self._pairs[0]
            del self._powers[bisect.bisect_left(self._powers, old_p)]
            del self._utils[bisect.bisect_left(self._utils, old_u)]
            self._add(old_u, old_p, -1.0)
            self._evicted += 1
        self._pairs.append((u, power_w))
        bisect.insort(self._powers, power_w)
        bisect.insort(self._utils, u)
        self._add(u, power_w, 1.0)
        if self._evicted >= len(self._pairs):
            # Running sums drift by rounding as values come and go: recompute them now and then.
            self._evicted = 0
            self._sums = [0.0, 0.0, 0.0, 0.0]
            for pu, pp in self._pairs:
                self._add(pu, pp, 1.0)

    def _add(self, u: float, p: float, sign: float) -> None:
        s = self._sums
        s[0] += sign * u
        s[1] += sign * p
        s[2] += sign * u * u
        s[3] += sign * u * p

    @property
    def samples(self) -> int:
        return len(self._pairs)

    @property
    def value(self) -> float | None:
        """The learned idle watts, or None before the first interval."""
        n = len(self._powers)
        if n == 0:
            return None
        low = self._powers[int(self._percentile * (n - 1))]
        if n < self._min_fit:
            return low
        spread = self._utils[int(0.9 * (n - 1))] - self._utils[int(0.1 * (n - 1))]
        if spread < self._min_spread:
            return low
        su, sp, suu, sup = self._sums
        var = n * suu - su * su
        if var <= 0:
            return low
        slope = (n * sup - su * sp) / var
        if slope <= 0:
            return low
        intercept = (sp - slope * su) / n
        return min(low, max(0.0, intercept))


# Until a GPU's per-process sampling period is known, assume NVML samples about once a second.
DEFAULT_NVML_SAMPLE_PERIOD_S = 1.0
# However long NVML's period seems, attribution never runs further behind than this.
MAX_NVML_SAMPLE_PERIOD_S = 20.0
# While no process computes, idle energy follows whoever computed last, at most this long ago.
IDLE_MEMORY_PERIODS = 10


class UtilisationWindow:
    """Per-process utilisation for attribution, from NVML's sparse per-process samples.

    What NVML gives (``nvmlDeviceGetProcessUtilization``; the docs, and what a real H200 showed, are in
    docs/attribution.md): the driver samples on a clock of its own, at a period of its own (200 ms on
    the H200, possibly longer than our interval); a read returns one value per process for everything
    newer than the timestamp it passes, the mean over all the driver's sampling moments in that time
    (moments without a sample of the process counting as 0), nothing for a process without a sample in
    that time, and NOT_FOUND when nothing is new.

    So each read that brings samples describes the stretch of NVML's clock since the previous read's
    newest sample, up to its own newest: every process in it had that mean utilisation there, every
    process not in it was idle there; sampling moments that have passed since without bringing
    anything were idle for all. Each interval of ours is mapped onto NVML's clock (``now`` minus the
    smallest lag seen between a read and its newest sample) and ends at the latest moment NVML has
    reported on, so that the driver has sampled all of it; stretches are as long as our intervals
    and follow each other without gaps or overlaps, and while NVML has nothing newer the previous
    stretch stands. A process' utilisation for the interval is its time-weighted mean over its
    stretch. All processes are thus judged over the same stretch of time, less than one sampling
    period behind the energy they share.

    ``utilisation`` gives each listed process that mean. When none of them was busy in the stretch
    (the GPU idles while they hold it) it gives each one's value in the latest read that showed any
    of them busy, if that is at most IDLE_MEMORY_PERIODS periods old, so idle energy follows whoever
    computed last (failing that, each one's last value); None for all of them when none ever had a
    sample, and attribution then splits equally. A process that holds the GPU and never computes
    gets 0 while others compute.

    ``period_s`` None (the default): the driver's period as its timestamps show it, a low percentile of
    the gaps between distinct sample timestamps (DEFAULT_NVML_SAMPLE_PERIOD_S until seen), at most
    MAX_NVML_SAMPLE_PERIOD_S.
    """

    def __init__(self, period_s: float | None = None, history: int = 64) -> None:
        if period_s is not None and not (
            math.isfinite(period_s) and 0 < period_s <= MAX_NVML_SAMPLE_PERIOD_S
        ):
            raise ValueError(
                f"NVML sample period must be a number of seconds > 0 and <= {MAX_NVML_SAMPLE_PERIOD_S:g}, "
                f"got {period_s!r}"
            )
        self._period_s = period_s
        # What each read brought: (start us, end us on NVML's clock, pid -> mean utilisation there).
        self._batches: deque[tuple[int, int, dict[int, float]]] = deque(maxlen=history)
        self._last: dict[int, tuple[float, int]] = {}  # pid -> (its last non-zero value, its timestamp)
        self._gaps_us: deque[int] = deque(maxlen=history)
        self._lags_us: deque[int] = deque(maxlen=history)
        self._newest_us = 0
        self._last_now: float | None = None
        self._stretch: tuple[int, int] | None = None  # the last stretch of NVML's clock judged

    def update(self, now: float, samples: Mapping[int, tuple[float, int]]) -> None:
        """What one read at ``now`` (reader's clock, seconds) brought: pid -> (utilisation 0-1, NVML
        timestamp in microseconds of its newest sample)."""
        fresh = {pid: (u, ts) for pid, (u, ts) in samples.items() if ts > self._last.get(pid, (0.0, 0))[1]}
        if not fresh:
            return
        stamps = sorted({ts for _, ts in fresh.values()})
        newest = stamps[-1]
        if self._newest_us:
            stamps.insert(0, self._newest_us)
        self._gaps_us.extend(b - a for a, b in itertools.pairwise(stamps) if b > a)
        start = self._newest_us if 0 < self._newest_us < newest else newest - round(self.period_s * 1e6)
        values = {pid: min(1.0, max(0.0, u)) for pid, (u, _) in fresh.items()}
        self._batches.append((start, max(newest, start + 1), values))
        for pid, (_, ts) in fresh.items():
            if values[pid] > 0:
                self._last[pid] = (values[pid], ts)
        self._newest_us = max(self._newest_us, newest)
        # A read comes after its newest sample; the smallest gap seen is the clocks' offset.
        self._lags_us.append(round(now * 1e6) - newest)

    def forget(self, live: Iterable[int]) -> None:
        """Drop processes no longer on the GPU (a reused PID must not inherit a sample)."""
        keep = set(live)
        for pid in [p for p in self._last if p not in keep]:
            del self._last[pid]
            for _, _, values in self._batches:
                values.pop(pid, None)

    @property
    def period_s(self) -> float:
        """The driver's sampling period: configured, or as its timestamps show it."""
        if self._period_s is not None:
            return self._period_s
        if not self._gaps_us:
            return DEFAULT_NVML_SAMPLE_PERIOD_S
        gaps = sorted(self._gaps_us)
        return min(MAX_NVML_SAMPLE_PERIOD_S, gaps[int(0.1 * (len(gaps) - 1))] / 1e6)

    def utilisation(self, now: float, pids: Sequence[int]) -> list[float | None]:
        """Each listed process's utilisation (0-1) for the interval ending at ``now``, in ``pids`` order."""
        last_now, self._last_now = self._last_now, now
        if not any(pid in self._last for pid in pids):
            return [None] * len(pids)
        period_us = round(self.period_s * 1e6)
        end = self._newest_us
        if self._lags_us:
            # The driver samples all processes at the same moments, a period apart: moments after the
            # newest sample that have passed by now (with a quarter period to spare) brought nothing,
            # so every process was idle up to the latest of them.
            passed = round(now * 1e6) - min(self._lags_us) - period_us // 4 - self._newest_us
            end += max(0, passed // period_us) * period_us
        length = round((now - last_now) * 1e6) if last_now is not None and now > last_now else period_us
        if self._stretch is None:
            start = end - max(1, length)
        else:
            # Contiguous and as long as our interval, so each stretch of NVML's clock is used once;
            # never past what NVML has reported on (the lag settles where the sampling period puts it).
            prev_start, prev_end = self._stretch
            end = min(end, prev_end + max(1, length))
            if end > prev_end:
                start = max(prev_end, end - 4 * max(length, period_us))  # a long gap is cut short
            else:
                start, end = prev_start, prev_end  # nothing newer is known: the previous stretch stands
        self._stretch = (start, end)
        means: list[float | None] = list(self._means(pids, start, end))
        if any(m for m in means):
            return means
        # Nobody busy in the stretch: the holders share the idle energy as they shared the GPU in the
        # latest read that showed any of them busy, if that is at most IDLE_MEMORY_PERIODS periods old
        # (whoever computed last, not whoever computed a while ago); failing that, by their last known
        # use.
        oldest = self._newest_us - IDLE_MEMORY_PERIODS * period_us
        for _, b_end, values in reversed(self._batches):
            if b_end < oldest:
                break
            latest: list[float | None] = [values.get(pid, 0.0) for pid in pids]
            if any(latest):
                return latest
        return [self._last[pid][0] if pid in self._last else 0.0 for pid in pids]

    def _means(self, pids: Sequence[int], start: int, end: int) -> list[float]:
        """Each process's time-weighted mean utilisation over (start, end] of NVML's clock."""
        busy = dict.fromkeys(pids, 0.0)
        # Newest first: a stretch lies near the end, so only the last few reads can reach it.
        for b_start, b_end, values in reversed(self._batches):
            if b_end <= start:
                break
            overlap = min(end, b_end) - max(start, b_start)
            if overlap > 0:
                for pid in pids:
                    busy[pid] += values.get(pid, 0.0) * overlap
        return [busy[pid] / (end - start) for pid in pids]


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
