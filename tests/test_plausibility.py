"""Impossible readings are dropped field by field, with the reason, before anything is accounted."""

from __future__ import annotations

import math

import pytest

from exporter.model import CpuReading, GpuReading
from exporter.plausibility import MAX_DEVICE_WATTS, max_power_w, screen_cpu_reading, screen_gpu_reading


def gpu(**fields: float | None) -> GpuReading:
    base: dict[str, float | None] = {"power_w": 300.0, "energy_j": 1e6, "power_limit_w": 700.0, "util": 0.5}
    base.update(fields)
    return GpuReading(index=0, uuid="GPU-x", temp_c=40.0, **base)  # type: ignore[arg-type]


def test_a_sane_reading_passes_unchanged() -> None:
    reading = gpu()
    assert screen_gpu_reading(reading) == (reading, [])
    assert screen_gpu_reading(gpu(power_w=1399.0))[1] == []  # transients up to twice the limit


@pytest.mark.parametrize(
    ("fields", "dropped", "reason"),
    [
        ({"power_w": 1e308}, "power_w", "above_limit"),
        ({"power_w": 1400.5}, "power_w", "above_limit"),  # over twice a 700 W limit
        ({"power_w": math.nan}, "power_w", "non_finite"),
        ({"power_w": -5.0}, "power_w", "negative"),
        ({"energy_j": math.inf}, "energy_j", "non_finite"),
        ({"energy_j": -1.0}, "energy_j", "negative"),
        ({"util": 87.0}, "util", "above_limit"),  # percent where a ratio belongs
    ],
)
def test_impossible_values_are_dropped_with_their_reason(
    fields: dict[str, float], dropped: str, reason: str
) -> None:
    screened, problems = screen_gpu_reading(gpu(**fields))
    assert getattr(screened, dropped) is None
    assert [why for why, _ in problems] == [reason]
    assert dropped in problems[0][1]
    kept = {"power_w", "energy_j", "util"} - {dropped}
    assert all(getattr(screened, name) is not None for name in kept)


def test_a_broken_power_limit_falls_back_to_the_absolute_ceiling() -> None:
    screened, problems = screen_gpu_reading(gpu(power_limit_w=math.inf, power_w=4000.0))
    assert screened.power_limit_w is None and screened.power_w == 4000.0
    assert [why for why, _ in problems] == ["non_finite"]
    assert max_power_w(None) == MAX_DEVICE_WATTS == max_power_w(10_000.0)
    assert max_power_w(300.0) == 600.0


def test_cpu_readings_are_screened_too() -> None:
    screened, problems = screen_cpu_reading(CpuReading("package-0", "rapl", math.nan, 1e9))
    assert (screened.energy_j, screened.power_w) == (None, None)
    assert sorted(why for why, _ in problems) == ["above_limit", "non_finite"]
