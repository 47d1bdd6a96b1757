"""Energy deltas from hardware counters or, where a device has none, trapezoidal integration of power."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class EnergyTracker:
    """Turns successive readings of one device into energy deltas that are never negative.

    A cumulative counter wins when the device has one. A counter that goes backwards (driver reload,
    device reset) restarts the baseline and that interval falls back to integrating power, so the
    exporter's own totals stay monotonic whatever the hardware does.
    """

    last_time: float | None = None
    last_counter_j: float | None = None
    last_power_w: float | None = None
    method: str = ""  # "counter" or "power" for the latest delta, for diagnostics

    def update(self, now: float, counter_j: float | None, power_w: float | None) -> float:
        dt = 0.0 if self.last_time is None else max(0.0, now - self.last_time)
        delta = 0.0
        if counter_j is not None and self.last_counter_j is not None and counter_j >= self.last_counter_j:
            delta = counter_j - self.last_counter_j
            self.method = "counter"
        elif dt > 0.0:
            delta = integrate_power(self.last_power_w, power_w, dt)
            self.method = "power"
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
