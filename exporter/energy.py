"""Energy deltas from hardware counters or, where a device has none, trapezoidal integration of power."""

from __future__ import annotations

import math
from dataclasses import dataclass

# How a device's energy is obtained, as served in footprint_device_energy_method_info.
COUNTER = "counter"  # a cumulative hardware energy counter (NVML total energy, RAPL)
POWER = "power"  # integrated power readings (trapezoid between reads)
NONE = "none"  # the reading carried neither: nothing is measured, nothing accrues


@dataclass(slots=True)
class EnergyTracker:
    """Turns successive readings of one device into energy deltas that are never negative.

    A cumulative counter wins when the device has one. A counter that goes backwards (driver reload,
    device reset), or jumps by more energy than ``max_power_w`` could deliver in the elapsed time,
    restarts the baseline and that interval falls back to integrating power, so the exporter's own
    totals stay monotonic and plausible whatever the hardware does.

    Each tracker keeps its own last-read time: a device whose reads failed for a while gets, on its
    next reading, a delta over the whole gap, and ``elapsed_s`` says how long that is, so that
    everything derived from the delta (idle baseline, per-process power, embodied carbon) uses the
    same span. A reading with neither counter nor power measures nothing: it returns 0 and leaves the
    baseline where it was. Integrating power across a gap longer than ``max_gap_s`` would be a guess,
    so that span is left out (the counter, where there is one, still covers it exactly).
    """

    last_time: float | None = None
    last_counter_j: float | None = None
    last_power_w: float | None = None
    method: str = ""  # COUNTER, POWER or NONE: what the latest reading offered
    elapsed_s: float = 0.0  # seconds the latest delta covers; 0 for a baseline or an empty reading
    rejected: str = ""  # "energy_jump" when the latest counter step was impossible, else ""

    def update(
        self,
        now: float,
        counter_j: float | None,
        power_w: float | None,
        max_power_w: float = math.inf,
        max_gap_s: float = math.inf,
    ) -> float:
        self.rejected = ""
        if counter_j is None and power_w is None:
            self.method = NONE
            self.elapsed_s = 0.0
            return 0.0
        self.method = COUNTER if counter_j is not None else POWER
        dt = 0.0 if self.last_time is None else max(0.0, now - self.last_time)
        delta = 0.0
        counted = False
        if counter_j is not None and self.last_counter_j is not None and counter_j >= self.last_counter_j:
            step = counter_j - self.last_counter_j
            if dt > 0.0 and step > max_power_w * dt:
                self.rejected = "energy_jump"
            else:
                delta = step
                counted = True
        if not counted and 0.0 < dt <= max_gap_s:
            delta = integrate_power(self.last_power_w, power_w, dt)
        self.elapsed_s = dt
        self.last_time = now
        self.last_counter_j = counter_j
        if power_w is not None:
            self.last_power_w = power_w
        return delta


def integrate_power(p0: float | None, p1: float | None, dt: float) -> float:
    """Joules over ``dt`` seconds between two power readings (trapezoid; one side if one is missing)."""
    if p0 is None and p1 is None:
        return 0.0
    if p0 is None:
        p0 = p1
    if p1 is None:
        p1 = p0
    assert p0 is not None and p1 is not None
    return max(0.0, (p0 + p1) / 2.0 * dt)
