"""Whole-node energy from the BMC: the poller thread, counter-disciplined integration, and node intervals.

BMCs answer in hundreds of milliseconds to seconds and limit request rates, so the node source is read
on its own thread at its own interval (default 10 s), never from the sampler's tick or a scrape. Each
good reading closes a ``NodeInterval`` (the node energy between it and the previous good reading),
which the sampler drains and sets against the GPU, CPU and DRAM energy of the same time span.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Generic, TypeVar

from exporter.attribution import spread_unmetered
from exporter.energy import integrate_power
from exporter.model import NodeReading, SourceStatus
from exporter.sources import NodeSource

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)  # what NodeAccount spreads the unmetered energy over (a process)

MAX_PENDING_INTERVALS = 10_000  # undrained intervals kept (the sampler drains every tick)
MAX_RETRY_AFTER_S = 300.0


@dataclass(frozen=True, slots=True)
class NodeInterval:
    """Node energy between two successive good readings, at monotonic times ``t0 < t1``.

    ``complete`` is False for a gap: no energy counter spans it and the readings are too far apart
    (or carry no power) to integrate, so ``energy_j`` is 0 and the span is not compared with the
    components. ``method`` says where the energy came from: counter, counter+power or power.
    """

    t0: float
    t1: float
    energy_j: float
    complete: bool = True
    method: str = "power"


class NodeEnergyIntegrator:
    """Energy from a BMC's readings: its energy counter where there is one, else trapezoidal power.

    BMC energy counters are often coarse (a kWh sensor may move in whole kWh, or update once a
    minute). While the counter stands still, power is integrated to fill in, but never further than
    one counter step (the smallest step seen) beyond what the counter says; when it moves, the total
    catches up to it. So with a fine counter the result is the counter exactly, and with a coarse one
    it stays within one step of it instead of drifting with the power readings' error. A counter that
    goes backwards (BMC reset, ResetMetrics) is taken up again from where the total stands.
    """

    def __init__(self, max_gap_s: float) -> None:
        self.max_gap_s = max_gap_s
        self.total_j = 0.0
        self._last_time: float | None = None
        self._last_power: float | None = None
        self._last_counter: float | None = None
        self._offset = 0.0  # counter value that corresponds to total 0
        self._step: float | None = None  # smallest counter increment seen: the counter's resolution

    def update(self, now: float, counter_j: float | None, power_w: float | None) -> NodeInterval | None:
        if self._last_time is None:
            self._last_time, self._last_power = now, power_w
            if counter_j is not None:
                self._last_counter, self._offset = counter_j, counter_j - self.total_j
            return None
        t0, dt = self._last_time, now - self._last_time
        if dt <= 0:
            return None
        before = self.total_j
        complete = True
        last = self._last_counter
        if counter_j is not None and last is not None and counter_j >= last:
            target = counter_j - self._offset
            if counter_j > last:
                step = counter_j - last
                self._step = step if self._step is None else min(self._step, step)
                self.total_j = max(self.total_j, target)
                method = "counter"
            else:
                cap = target + self._step if self._step is not None else math.inf
                filled = self._integrate(power_w, dt)
                self.total_j = max(self.total_j, min(self.total_j + filled, cap))
                method = "counter+power"
        else:
            method = "power"
            if dt > self.max_gap_s or (power_w is None and self._last_power is None):
                complete = False
            else:
                self.total_j += self._integrate(power_w, dt)
            if counter_j is not None:
                if last is not None:
                    log.info("node energy counter went back (BMC reset?); continuing from the current total")
                self._offset = counter_j - self.total_j
        if counter_j is not None:
            self._last_counter = counter_j
        self._last_time = now
        if power_w is not None:
            self._last_power = power_w
        return NodeInterval(t0, now, self.total_j - before, complete, method)

    def _integrate(self, power_w: float | None, dt: float) -> float:
        return integrate_power(self._last_power, power_w, dt) if dt <= self.max_gap_s else 0.0


@dataclass(slots=True)
class _PollStats:
    up: bool = False
    errors: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0
    cpu_s_total: float = 0.0
    polls: int = 0
    last_success: float | None = None
    power_w: float | None = None
    parts: tuple[str, ...] = ()


class NodePoller:
    """Reads a node source on its own thread every ``interval_s`` and queues node intervals.

    A failed read is counted by kind and leaves the last good reading in place; the node's series are
    served while the last good reading is younger than ``stale_after_s`` (default three intervals),
    so one slow answer does not blank them but a BMC that stays down does.
    """

    def __init__(
        self,
        source: NodeSource,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        max_gap_s: float | None = None,
        stale_after_s: float | None = None,
    ) -> None:
        self.source = source
        self.method = source.name
        self.interval_s = interval_s
        self.clock = clock
        self.stale_after_s = stale_after_s if stale_after_s is not None else 3.0 * interval_s
        self.integrator = NodeEnergyIntegrator(max_gap_s if max_gap_s is not None else 3.5 * interval_s)
        self._lock = threading.Lock()
        self._pending: deque[NodeInterval] = deque(maxlen=MAX_PENDING_INTERVALS)
        self._stats = _PollStats()
        self._not_before = -math.inf
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def poll_once(self) -> bool:
        """One read; True when it gave a reading. Only the poller's thread (or a test) calls this."""
        started, cpu_started = self.clock(), time.thread_time()
        try:
            reading: NodeReading | None = self.source.read()
            error = None
        except Exception as exc:  # a failing BMC drops only the node series
            reading, error = None, exc
        ended = self.clock()
        with self._lock:
            stats = self._stats
            stats.polls += 1
            stats.duration_s = ended - started
            stats.cpu_s_total += time.thread_time() - cpu_started
            if reading is None or (reading.power_w is None and reading.energy_j is None):
                kind = getattr(error, "kind", None) or ("no_reading" if error is None else "read")
                stats.up = False
                stats.errors[kind] = stats.errors.get(kind, 0) + 1
                retry = getattr(error, "retry_after_s", None)
                if isinstance(retry, int | float) and retry > 0:
                    self._not_before = ended + min(float(retry), MAX_RETRY_AFTER_S)
                log.warning("node source %s read failed: %s", self.method, error or "no figure")
                return False
            # The answer describes the BMC's state somewhere between request and reply: take the middle.
            at = started + (ended - started) / 2
            interval = self.integrator.update(at, reading.energy_j, reading.power_w)
            if interval is not None:
                self._pending.append(interval)
            stats.up = True
            stats.last_success = at
            stats.power_w = reading.power_w
            stats.parts = reading.parts
        return True

    def drain(self, until: float = math.inf) -> list[NodeInterval]:
        """The intervals closed since the last call that end by ``until``, oldest first.

        The sampler passes the time of its tick: an interval that the poller closed while the tick was
        running ends after it, and waits for the next tick (whose component figures cover it).
        """
        with self._lock:
            out = []
            while self._pending and self._pending[0].t1 <= until:
                out.append(self._pending.popleft())
        return out

    def fresh(self, now: float) -> bool:
        with self._lock:
            last = self._stats.last_success
        return last is not None and now - last <= self.stale_after_s

    def power_w(self) -> float | None:
        with self._lock:
            return self._stats.power_w

    def parts(self) -> tuple[str, ...]:
        with self._lock:
            return self._stats.parts

    def status(self) -> SourceStatus:
        with self._lock:
            s = self._stats
            return SourceStatus(self.method, s.up, dict(s.errors), s.duration_s)

    def cpu_seconds_per_poll(self) -> float:
        with self._lock:
            return self._stats.cpu_s_total / self._stats.polls if self._stats.polls else 0.0

    def run(self, stop: threading.Event) -> None:
        """Poll at a fixed rate until ``stop`` is set; slow reads skip missed polls instead of bursting."""
        next_at = self.clock()
        while not stop.is_set():
            if self.clock() >= self._not_before:
                self.poll_once()
            next_at += self.interval_s
            now = self.clock()
            if next_at <= now:  # a read longer than the interval: skip, never poll the BMC back to back
                next_at = now + self.interval_s
            stop.wait(max(0.0, max(next_at, self._not_before) - now))

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, args=(self._stop,), name="node-poller", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (waiting for a read in flight, bounded) and close the source."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        self.source.close()


class NodeAccount(Generic[K]):
    """Node totals, and the node energy that the GPU, CPU and DRAM readings do not cover ("unmetered").

    The sampler records the components' energy every tick (``components``) and hands over each node
    interval (``add``). An interval's unmetered energy is its node energy minus the components' energy
    over exactly its span, interpolated between ticks. An interval whose node energy is below the
    components' is a data-quality error (counted); its shortfall is paid back from the next intervals'
    unmetered energy (up to one interval's node energy, so the BMC's averaging lag cannot make the
    counter run high while a real, lasting shortfall does not hold it at zero for ever). So the counter
    never goes down, and over a span where it grows it grows by exactly node minus components.

    With ``spread`` the sampler also says, every tick, what each process was charged out of the
    components' energy; ``split`` then shares an interval's unmetered energy among the processes by
    their part of the components' energy over exactly that interval's span.
    """

    def __init__(self, keep_s: float = 120.0, spread: bool = False) -> None:
        self.keep_s = keep_s
        self.energy_j = 0.0
        self.unmetered_j = 0.0
        self.grams = 0.0
        self.unmetered_grams = 0.0
        # Market-based (carbon.market): None until an interval is accounted with a market factor.
        self.market_grams: float | None = None
        self.unmetered_market_grams: float | None = None
        # The part of the unmetered energy charged to no process: all of it unless ``spread``.
        self.unmetered_unattributed_j = 0.0
        self.below_components = 0
        self.not_compared = 0
        self.spread = spread
        self._deficit_j = 0.0
        self._cumulative_j = 0.0
        self._last_components_j: float | None = None
        # (monotonic time of a tick, components' cumulative joules then, whether every component was read)
        self._history: deque[tuple[float, float, bool]] = deque(maxlen=100_000)
        # With ``spread``: (start, end, joules charged to each process) of every tick not yet behind a
        # closed node interval, so that processes are weighed over exactly the node interval's span.
        self._process_ticks: deque[tuple[float, float, Mapping[K, float]]] = deque()

    def components(
        self, now: float, joules: float, complete: bool, processes: Mapping[K, float] | None = None
    ) -> None:
        """One tick: the components' energy since the previous tick, and (with ``spread``) the joules
        each process was charged out of it."""
        previous = self._history[-1][0] if self._history else None
        self._cumulative_j += joules
        self._history.append((now, self._cumulative_j, complete))
        while len(self._history) > 2 and self._history[1][0] < now - self.keep_s:
            self._history.popleft()
        ticks = self._process_ticks
        if self.spread and processes and previous is not None and now > previous:
            ticks.append((previous, now, processes))
        while ticks and ticks[0][1] < now - self.keep_s:
            ticks.popleft()

    def component_energy(self, t0: float, t1: float) -> float | None:
        """GPU + CPU + DRAM joules over [t0, t1], or None when the ticks do not cover it completely."""
        ticks = list(self._history)
        if len(ticks) < 2 or t1 < t0 or ticks[0][0] > t0 or ticks[-1][0] < t1:
            return None
        spans = list(pairwise(ticks))
        if any(tb > t0 and ta < t1 and not complete for (ta, _, _), (tb, _, complete) in spans):
            return None  # a component source failed during the span: its energy is missing there

        def cumulative_at(t: float) -> float:
            for (ta, ca, _), (tb, cb, _) in spans:
                if ta <= t <= tb:
                    return ca + (cb - ca) * ((t - ta) / (tb - ta) if tb > ta else 1.0)
            raise AssertionError(t)

        return cumulative_at(t1) - cumulative_at(t0)

    def process_energy(self, t0: float, t1: float) -> dict[K, float]:
        """Joules each process was charged over [t0, t1], a tick's taken as spread evenly over it: the
        same interpolation as ``component_energy``, so the two describe the same span."""
        out: dict[K, float] = {}
        for ta, tb, joules in self._process_ticks:
            overlap = min(tb, t1) - max(ta, t0)
            if overlap <= 0:
                continue
            fraction = min(1.0, overlap / (tb - ta))
            for key, j in joules.items():
                out[key] = out.get(key, 0.0) + j * fraction
        return out

    def add(self, interval: NodeInterval, grams_per_j: float, market_per_j: float | None = None) -> float:
        """Account one node interval at its grams per joule (location- and, with a market configuration,
        market-based, PUE included); returns the unmetered joules it added."""
        self.energy_j += interval.energy_j
        self.grams += interval.energy_j * grams_per_j
        if market_per_j is not None:
            self.market_grams = (self.market_grams or 0.0) + interval.energy_j * market_per_j
            self.unmetered_market_grams = self.unmetered_market_grams or 0.0
        components = self.component_energy(interval.t0, interval.t1) if interval.complete else None
        self._last_components_j = components
        if components is None:
            self.not_compared += 1
            return 0.0
        if interval.energy_j < components:
            self.below_components += 1
        excess = interval.energy_j - components - self._deficit_j
        if excess > 0:
            self._deficit_j = 0.0
        else:
            self._deficit_j = min(-excess, interval.energy_j)
            excess = 0.0
        self.unmetered_j += excess
        self.unmetered_grams += excess * grams_per_j
        if market_per_j is not None:
            self.unmetered_market_grams = (self.unmetered_market_grams or 0.0) + excess * market_per_j
        if not self.spread:
            self.unmetered_unattributed_j += excess
        return excess

    def split(self, interval: NodeInterval, unmetered_j: float) -> tuple[list[tuple[K, float]], float]:
        """With ``spread``: the unmetered joules ``add`` just gave ``interval``, split among the processes
        by their share of the components' energy over its span, and the part charged to no process.

        Node intervals follow each other, so the ticks that end by this interval's end are let go.
        """
        parts: list[tuple[K, float]] = []
        rest = unmetered_j
        components = self._last_components_j
        if self.spread and unmetered_j > 0 and components:
            energies = self.process_energy(interval.t0, interval.t1)
            keys = list(energies)
            shares, rest = spread_unmetered(unmetered_j, [energies[k] for k in keys], components)
            parts = [(k, j) for k, j in zip(keys, shares, strict=True) if j > 0]
        if self.spread:
            self.unmetered_unattributed_j += rest
        ticks = self._process_ticks
        while ticks and ticks[0][1] <= interval.t1:
            ticks.popleft()
        return parts, rest

    def dump(self) -> dict[str, float | None]:
        return {key: getattr(self, key) for key in (*_NODE_TOTALS, *_NODE_MARKET_TOTALS)}

    def load(self, raw: object) -> None:
        """Continue from saved totals; ValueError, changing nothing, when they are not ours."""
        if not isinstance(raw, dict):
            raise ValueError("node totals must be an object")
        # A file from before the unmetered energy could be spread: all of it was charged to no process.
        raw = {"unmetered_unattributed_j": raw.get("unmetered_j", 0.0), **raw}
        values: dict[str, float | None] = {key: _node_total(key, raw.get(key, 0.0)) for key in _NODE_TOTALS}
        for key in _NODE_MARKET_TOTALS:  # None where no market was configured
            values[key] = None if raw.get(key) is None else _node_total(key, raw[key])
        for key, value in values.items():
            setattr(self, key, value)


# NodeAccount's totals as saved in the state file, under their attribute names.
_NODE_TOTALS = ("energy_j", "unmetered_j", "grams", "unmetered_grams", "unmetered_unattributed_j")
_NODE_MARKET_TOTALS = ("market_grams", "unmetered_market_grams")


def _node_total(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ValueError(f"node {key} must be a finite non-negative number")
    return float(value)
