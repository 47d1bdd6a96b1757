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


def test_a_reading_with_neither_counter_nor_power_measures_nothing_and_keeps_the_baseline() -> None:
    t = EnergyTracker()
    t.update(0.0, 100.0, 50.0)
    assert t.update(1.0, None, None) == 0.0
    assert (t.method, t.elapsed_s) == ("none", 0.0)
    # The next real reading covers the whole span since the last one.
    assert t.update(3.0, 400.0, 50.0) == pytest.approx(300.0)
    assert (t.method, t.elapsed_s) == ("counter", 3.0)


def test_counter_jump_beyond_plausible_power_rebaselines_on_power() -> None:
    t = EnergyTracker()
    t.update(0.0, 1000.0, 300.0)
    # 1e12 J in 1 s is 1 TW: rejected, and that interval is integrated from power instead.
    assert t.update(1.0, 1e12, 300.0, max_power_w=1400.0) == pytest.approx(300.0)
    assert t.rejected == "energy_jump"
    # The jumped value is the new baseline: a counter that really moved on keeps being used ...
    assert t.update(2.0, 1e12 + 310.0, 300.0, max_power_w=1400.0) == pytest.approx(310.0)
    assert t.rejected == ""
    # ... and one that comes back down counts as a reset (integrate power once more).
    assert t.update(3.0, 1500.0, 300.0, max_power_w=1400.0) == pytest.approx(300.0)


def test_power_is_not_integrated_across_a_gap_longer_than_the_limit() -> None:
    t = EnergyTracker()
    t.update(0.0, None, 200.0)
    assert t.update(20.0, None, 200.0, max_gap_s=30.0) == pytest.approx(4000.0)
    assert t.update(60.0, None, 200.0, max_gap_s=30.0) == 0.0  # 40 s unmeasured: not guessed
    assert t.elapsed_s == 40.0
    assert t.update(61.0, None, 200.0, max_gap_s=30.0) == pytest.approx(200.0)
    # A counter covers any gap exactly.
    c = EnergyTracker()
    c.update(0.0, 0.0, 200.0)
    assert c.update(600.0, 120_000.0, 200.0, max_gap_s=30.0) == pytest.approx(120_000.0)
