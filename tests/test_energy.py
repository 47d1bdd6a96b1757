"""Energy deltas from counters and integrated power."""

from __future__ import annotations

import pytest

from exporter.energy import EnergyTracker, integrate_power


def test_counter_deltas_win_over_power() -> None:
    t = EnergyTracker()
    assert t.update(0.0, 1000.0, 300.0) == 0.0  # first read is the baseline
    assert t.update(1.0, 1250.0, 9999.0) == pytest.approx(250.0)
    assert t.method == "counter"


def test_without_counter_integrates_trapezoid() -> None:
    t = EnergyTracker()
    t.update(0.0, None, 100.0)
    assert t.update(2.0, None, 300.0) == pytest.approx(400.0)  # (100+300)/2*2
    assert t.method == "power"


def test_counter_reset_falls_back_to_power_and_stays_non_negative() -> None:
    t = EnergyTracker()
    t.update(0.0, 5000.0, 200.0)
    assert t.update(1.0, 10.0, 200.0) == pytest.approx(200.0)  # counter went back: integrate power
    assert t.update(2.0, 110.0, 200.0) == pytest.approx(100.0)  # new baseline is used


def test_missing_power_reading_uses_the_other_side() -> None:
    assert integrate_power(None, 50.0, 2.0) == 100.0
    assert integrate_power(None, None, 2.0) == 0.0
