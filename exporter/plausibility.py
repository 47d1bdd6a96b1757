"""Impossible readings: values no real device reports, dropped before they reach a gauge or a total."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from exporter.model import CpuReading, GpuReading

# No single GPU board or CPU package draws this much: the largest boards today are rated for about
# 1-2.7 kW (B200, GB200 module), CPU packages for well under 1 kW. A reading above it is a sensor or
# driver fault (an unsigned "invalid" sentinel such as 0xFFFFFFFF mW reads as 4.3 MW), never power.
MAX_DEVICE_WATTS = 5000.0
# A board may briefly draw above its enforced power limit (instantaneous readings on pre-Ampere GPUs
# catch transients), but not twice it for a whole reading.
POWER_LIMIT_FACTOR = 2.0


def max_power_w(power_limit_w: float | None) -> float:
    """The most power a device with this enforced limit can plausibly report (and deliver)."""
    if power_limit_w is not None and math.isfinite(power_limit_w) and power_limit_w > 0:
        return min(MAX_DEVICE_WATTS, POWER_LIMIT_FACTOR * power_limit_w)
    return MAX_DEVICE_WATTS


def _problem(value: float | None, ceiling: float = math.inf, floor: float = 0.0) -> str:
    """Why a reading is impossible ("non_finite", "negative", "above_limit"), or "" when it is fine."""
    if value is None:
        return ""
    if not math.isfinite(value):
        return "non_finite"
    if value < floor:
        return "negative"
    if value > ceiling:
        return "above_limit"
    return ""


Problem = tuple[str, str]  # (reason, what was dropped: "power_w=1e+308")


def screen_gpu_reading(reading: GpuReading) -> tuple[GpuReading, list[Problem]]:
    """The reading with every impossible value dropped (None), and why each was dropped.

    The power limit is checked first, since the power ceiling depends on it; an impossible limit is
    dropped and the absolute ceiling applies.
    """
    problems: list[Problem] = []
    changes: dict[str, Any] = {}
    limit = reading.power_limit_w
    why = _problem(limit, MAX_DEVICE_WATTS)
    if why:
        problems.append((why, f"power_limit_w={limit!r}"))
        changes["power_limit_w"] = None
        limit = None
    for field, value, ceiling, floor in (
        ("power_w", reading.power_w, max_power_w(limit), 0.0),
        ("energy_j", reading.energy_j, math.inf, 0.0),
        ("util", reading.util, 1.0, 0.0),
        ("temp_c", reading.temp_c, math.inf, -math.inf),  # only non-finite: a board can be below 0 °C
    ):
        why = _problem(value, ceiling, floor)
        if why:
            problems.append((why, f"{field}={value!r}"))
            changes[field] = None
    return (replace(reading, **changes) if changes else reading), problems


def screen_cpu_reading(reading: CpuReading) -> tuple[CpuReading, list[Problem]]:
    """A CPU domain's reading with impossible power or energy dropped, and why."""
    problems: list[Problem] = []
    changes: dict[str, Any] = {}
    for field, value, ceiling in (
        ("power_w", reading.power_w, MAX_DEVICE_WATTS),
        ("energy_j", reading.energy_j, math.inf),
    ):
        why = _problem(value, ceiling)
        if why:
            problems.append((why, f"{field}={value!r}"))
            changes[field] = None
    return (replace(reading, **changes) if changes else reading), problems
