"""Tests for exporter.attribution: the GPU and CPU energy split and the idle-power learner."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.attribution import (
    AttributionPolicy,
    IdleBaselineLearner,
    attribute_cpu_energy,
    attribute_gpu_energy,
)
from exporter.model import GpuProcessSample

energies = st.one_of(
    st.just(0.0),
    st.floats(min_value=0.0, max_value=1e7, allow_nan=False, allow_infinity=False),
    st.floats(min_value=1e-300, max_value=1e-3),
)
utils = st.one_of(st.none(), st.just(0.0), st.floats(min_value=0.0, max_value=1.0), st.floats(1e-12, 1e-6))


def _procs(values: list[float | None]) -> list[GpuProcessSample]:
    return [GpuProcessSample(pid=1000 + i, sm_util=u) for i, u in enumerate(values)]


def _assert_conserved(shares: list[float], unattributed: float, energy: float) -> None:
    assert math.fsum([*shares, unattributed]) == energy
    assert all(s >= 0.0 for s in shares)
    assert unattributed >= 0.0


@settings(max_examples=300, deadline=None)
@given(energy=energies, interval=st.floats(0.05, 60.0), util=st.lists(utils, max_size=40))
def test_proportional_conserves_exactly(energy: float, interval: float, util: list[float | None]) -> None:
    shares, unattributed = attribute_gpu_energy(energy, interval, _procs(util))
    assert len(shares) == len(util)
    _assert_conserved(shares, unattributed, energy)
    if util:
        # The contract: while any process holds the GPU, nothing is unattributed.
        assert unattributed == 0.0


@settings(max_examples=300, deadline=None)
@given(
    energy=energies,
    interval=st.floats(0.05, 60.0),
    util=st.lists(utils, max_size=40),
    idle=st.one_of(st.none(), st.floats(0.0, 2000.0)),
    learned=st.one_of(st.none(), st.floats(0.0, 500.0)),
)
def test_idle_baseline_conserves_exactly(
    energy: float, interval: float, util: list[float | None], idle: float | None, learned: float | None
) -> None:
    policy = AttributionPolicy(kind="idle-baseline", idle_watts=idle)
    shares, unattributed = attribute_gpu_energy(energy, interval, _procs(util), policy, learned)
    _assert_conserved(shares, unattributed, energy)
    baseline_w = idle if idle is not None else learned
    if util and baseline_w is not None:
        expected = min(energy, baseline_w * interval)
        assert math.isclose(unattributed, expected, rel_tol=1e-9, abs_tol=1e-9 * max(energy, 1e-300))


@settings(max_examples=300, deadline=None)
@given(
    energy=energies,
    procs=st.lists(
        st.tuples(utils, st.sampled_from([1 / 7, 2 / 7, 3 / 7, 4 / 7, 1.0]), st.integers(0, 3)), max_size=20
    ),
)
def test_mig_conserves_exactly(energy: float, procs: list[tuple[float | None, float, int]]) -> None:
    samples = [
        GpuProcessSample(pid=i, sm_util=u, mig_sm_share=s, gpu_instance_id=g)
        for i, (u, s, g) in enumerate(procs)
    ]
    shares, unattributed = attribute_gpu_energy(energy, 1.0, samples)
    _assert_conserved(shares, unattributed, energy)


@settings(max_examples=300, deadline=None)
@given(energy=energies, cpu=st.lists(st.floats(0.0, 64.0), max_size=60), busy=st.floats(0.0, 128.0))
def test_cpu_split_conserves_exactly(energy: float, cpu: list[float], busy: float) -> None:
    shares, unattributed = attribute_cpu_energy(energy, cpu, busy)
    assert len(shares) == len(cpu)
    _assert_conserved(shares, unattributed, energy)


def test_proportional_three_to_one_is_exact() -> None:
    shares, unattributed = attribute_gpu_energy(400.0, 1.0, _procs([0.6, 0.2]))
    assert shares == [300.0, 100.0]
    assert unattributed == 0.0


def test_process_without_reading_counts_as_idle_when_others_are_busy() -> None:
    shares, unattributed = attribute_gpu_energy(90.0, 1.0, _procs([0.5, None, 0.25]))
    assert shares == [60.0, 0.0, 30.0]
    assert unattributed == 0.0


def test_no_utilisation_splits_equally() -> None:
    shares, unattributed = attribute_gpu_energy(300.0, 1.0, _procs([None, 0.0, None]))
    assert shares == [100.0, 100.0, 100.0]
    assert unattributed == 0.0


def test_no_process_is_all_unattributed() -> None:
    assert attribute_gpu_energy(250.0, 1.0, []) == ([], 250.0)


def test_idle_baseline_keeps_configured_watts_apart() -> None:
    policy = AttributionPolicy(kind="idle-baseline", idle_watts=60.0)
    # 2 s at 310 W average: 120 J idle baseline, 500 J split 4:1.
    shares, unattributed = attribute_gpu_energy(620.0, 2.0, _procs([0.8, 0.2]), policy)
    assert shares == pytest.approx([400.0, 100.0], rel=1e-12)
    assert unattributed == pytest.approx(120.0, rel=1e-12)


def test_idle_baseline_uses_learned_value_and_configured_wins() -> None:
    learned_policy = AttributionPolicy(kind="idle-baseline")
    shares, unattributed = attribute_gpu_energy(100.0, 1.0, _procs([0.5]), learned_policy, idle_w=30.0)
    assert (shares, unattributed) == ([70.0], 30.0)
    fixed = AttributionPolicy(kind="idle-baseline", idle_watts=40.0)
    shares, unattributed = attribute_gpu_energy(100.0, 1.0, _procs([0.5]), fixed, idle_w=30.0)
    assert (shares, unattributed) == ([60.0], 40.0)


def test_idle_baseline_above_energy_leaves_processes_nothing() -> None:
    policy = AttributionPolicy(kind="idle-baseline", idle_watts=80.0)
    assert attribute_gpu_energy(50.0, 1.0, _procs([0.9]), policy) == ([0.0], 50.0)


def test_idle_baseline_without_learned_value_splits_everything() -> None:
    policy = AttributionPolicy(kind="idle-baseline")
    assert attribute_gpu_energy(50.0, 1.0, _procs([0.9]), policy, idle_w=None) == ([50.0], 0.0)


def test_proportional_ignores_idle_watts() -> None:
    assert attribute_gpu_energy(50.0, 1.0, _procs([0.9]), AttributionPolicy(), idle_w=40.0) == ([50.0], 0.0)


def test_mig_weight_is_instance_share_times_activity() -> None:
    # A 3/7 instance at 100% and a 4/7 instance at 50%: weights 3/7 and 2/7 -> 3:2.
    samples = [
        GpuProcessSample(pid=1, sm_util=1.0, mig_sm_share=3 / 7, gpu_instance_id=1),
        GpuProcessSample(pid=2, sm_util=0.5, mig_sm_share=4 / 7, gpu_instance_id=2),
    ]
    shares, unattributed = attribute_gpu_energy(500.0, 1.0, samples)
    assert shares == pytest.approx([300.0, 200.0], rel=1e-12)
    assert unattributed == 0.0


def test_mig_without_activity_splits_by_instance_share_then_within_instance() -> None:
    # Instance 1 (3/7) holds two processes, instance 2 (4/7) one: 1.5/7, 1.5/7, 4/7 of 700 J.
    samples = [
        GpuProcessSample(pid=1, mig_sm_share=3 / 7, gpu_instance_id=1),
        GpuProcessSample(pid=2, mig_sm_share=3 / 7, gpu_instance_id=1),
        GpuProcessSample(pid=3, mig_sm_share=4 / 7, gpu_instance_id=2),
    ]
    shares, _ = attribute_gpu_energy(700.0, 1.0, samples)
    assert shares == pytest.approx([150.0, 150.0, 400.0], rel=1e-12)


def test_cpu_split_by_cpu_seconds_over_busy_seconds() -> None:
    # 3.0 busy CPU seconds; processes account for 1.5 + 0.75; the kernel's 0.75 s stays unattributed.
    shares, unattributed = attribute_cpu_energy(120.0, [1.5, 0.75], 3.0)
    assert shares == [60.0, 30.0]
    assert unattributed == 30.0


def test_cpu_split_clamps_when_processes_exceed_busy_time() -> None:
    shares, unattributed = attribute_cpu_energy(90.0, [2.0, 1.0], 2.5)
    assert shares == [60.0, 30.0]
    assert unattributed == 0.0


def test_cpu_idle_machine_is_all_unattributed() -> None:
    assert attribute_cpu_energy(40.0, [0.0, 0.0], 0.0) == ([0.0, 0.0], 40.0)
    assert attribute_cpu_energy(40.0, [], 1.0) == ([], 40.0)


@pytest.mark.parametrize("energy", [-1.0, math.nan, math.inf])
def test_bad_energy_is_refused(energy: float) -> None:
    with pytest.raises(ValueError, match="interval energy"):
        attribute_gpu_energy(energy, 1.0, _procs([0.5]))
    with pytest.raises(ValueError, match="interval energy"):
        attribute_cpu_energy(energy, [1.0], 1.0)


def test_policy_validates_kind_and_watts() -> None:
    with pytest.raises(ValueError, match="unknown attribution policy"):
        AttributionPolicy(kind="memory")
    with pytest.raises(ValueError, match="idle watts"):
        AttributionPolicy(kind="idle-baseline", idle_watts=-5.0)


def test_idle_learner_low_percentile_of_idle_samples_only() -> None:
    learner = IdleBaselineLearner(percentile=0.05, window=100, min_samples=10)
    for _ in range(9):
        learner.observe(60.0, has_processes=False)
    assert learner.value is None  # too few idle samples yet
    learner.observe(400.0, has_processes=True)  # busy samples never teach the idle power
    learner.observe(None, has_processes=False)
    assert learner.samples == 9
    for watts in range(61, 152):  # 91 more idle samples: 9 x 60 W, then 61..151 W
        learner.observe(float(watts), has_processes=False)
    # 100 samples sorted: index int(0.05 * 99) = 4 -> 60 W.
    assert learner.value == 60.0
    for watts in range(200, 220):  # the window slides: the 60 W samples and 61..71 W fall out
        learner.observe(float(watts), has_processes=False)
    assert learner.samples == 100
    assert learner.value == 76.0
