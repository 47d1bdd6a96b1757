"""Tests for exporter.attribution: the GPU and CPU energy split and the idle-power learner."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.attribution import (
    IDLE_MEMORY_PERIODS,
    MAX_NVML_SAMPLE_PERIOD_S,
    AttributionPolicy,
    CpuIdleLearner,
    CpuIdlePolicy,
    IdleBaselineLearner,
    UtilisationWindow,
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
@given(
    energy=energies,
    cpu=st.lists(st.floats(0.0, 64.0), max_size=60),
    busy=st.floats(0.0, 128.0),
    idle=st.one_of(st.just(0.0), st.floats(0.0, 1e7)),
    spread=st.booleans(),
)
def test_cpu_split_conserves_exactly(
    energy: float, cpu: list[float], busy: float, idle: float, spread: bool
) -> None:
    shares, unattributed = attribute_cpu_energy(energy, cpu, busy, idle, spread)
    assert len(shares) == len(cpu)
    _assert_conserved(shares, unattributed, energy)
    if not spread:
        # The idle part never reaches a process.
        assert math.fsum(shares) <= max(0.0, energy - idle) * (1 + 1e-9) + 1e-300


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


def test_mig_weight_is_instance_share_times_activity_against_the_whole_board() -> None:
    # A 3/7 instance at 100% and a 4/7 instance at 50%: 3/7 and 2/7 of the board; 2/7 unused.
    samples = [
        GpuProcessSample(pid=1, sm_util=1.0, mig_sm_share=3 / 7, gpu_instance_id=1),
        GpuProcessSample(pid=2, sm_util=0.5, mig_sm_share=4 / 7, gpu_instance_id=2),
    ]
    shares, unattributed = attribute_gpu_energy(700.0, 1.0, samples)
    assert shares == pytest.approx([300.0, 200.0], rel=1e-12)
    assert unattributed == pytest.approx(200.0, rel=1e-12)


def test_mig_one_of_seven_slices_gets_one_seventh_at_most() -> None:
    # NVML gives no activity per instance: the job gets its whole slice, never the whole board.
    samples = [GpuProcessSample(pid=1, mig_sm_share=1 / 7, gpu_instance_id=9)]
    shares, unattributed = attribute_gpu_energy(700.0, 1.0, samples)
    assert shares == pytest.approx([100.0], rel=1e-12)
    assert unattributed == pytest.approx(600.0, rel=1e-12)
    # All seven slices occupied: everything is attributed, one seventh each.
    full = [GpuProcessSample(pid=k, mig_sm_share=1 / 7, gpu_instance_id=k) for k in range(7)]
    shares, unattributed = attribute_gpu_energy(700.0, 1.0, full)
    assert shares == pytest.approx([100.0] * 7, rel=1e-12)
    assert unattributed == pytest.approx(0.0, abs=1e-9)


def test_mig_without_activity_splits_each_instance_share_within_the_instance() -> None:
    # Instance 1 (3/7) holds two processes, instance 2 (4/7) one: 1.5/7, 1.5/7, 4/7 of 700 J.
    samples = [
        GpuProcessSample(pid=1, mig_sm_share=3 / 7, gpu_instance_id=1),
        GpuProcessSample(pid=2, mig_sm_share=3 / 7, gpu_instance_id=1),
        GpuProcessSample(pid=3, mig_sm_share=4 / 7, gpu_instance_id=2),
    ]
    shares, unattributed = attribute_gpu_energy(700.0, 1.0, samples)
    assert shares == pytest.approx([150.0, 150.0, 400.0], rel=1e-12)
    assert unattributed == pytest.approx(0.0, abs=1e-9)


def test_mig_processes_of_unknown_instance_share_the_uncovered_capacity() -> None:
    samples = [
        GpuProcessSample(pid=1, mig_sm_share=2 / 7, gpu_instance_id=1),
        GpuProcessSample(pid=2, gpu_instance_id=None, mig_sm_share=None),
        GpuProcessSample(pid=3, gpu_instance_id=5, mig_sm_share=None),
    ]
    shares, unattributed = attribute_gpu_energy(700.0, 1.0, samples)
    assert shares == pytest.approx([200.0, 250.0, 250.0], rel=1e-12)
    assert unattributed == pytest.approx(0.0, abs=1e-9)


def test_cpu_split_by_cpu_seconds_over_busy_seconds() -> None:
    # 3.0 busy CPU seconds; processes account for 1.5 + 0.75; the kernel's 0.75 s stays unattributed.
    shares, unattributed = attribute_cpu_energy(120.0, [1.5, 0.75], 3.0)
    assert shares == [60.0, 30.0]
    assert unattributed == 30.0


def test_cpu_split_clamps_when_processes_exceed_busy_time() -> None:
    shares, unattributed = attribute_cpu_energy(90.0, [2.0, 1.0], 2.5)
    assert shares == [60.0, 30.0]
    assert unattributed == 0.0


def test_cpu_tiny_process_on_an_idle_package_pays_only_for_its_activity() -> None:
    # The reviewed case: an idle 220 W node, a process using 10 ms of the 12 ms busy CPU time in 1 s.
    # Split whole, it was charged 220 x 10/12 = 183 J for one second. With the idle power (219 W,
    # learned or configured) kept apart, it pays for its share of the 1 W of activity.
    shares, unattributed = attribute_cpu_energy(220.0, [0.010], 0.012, idle_j=219.0)
    assert shares == pytest.approx([1.0 * 10 / 12], rel=1e-12)
    assert unattributed == pytest.approx(220.0 - 10 / 12, rel=1e-12)
    spread, _ = attribute_cpu_energy(220.0, [0.010], 0.012, idle_j=219.0, spread_idle=True)
    assert spread == pytest.approx([220.0 * 10 / 12], rel=1e-12)


def test_cpu_idle_above_the_energy_leaves_processes_nothing() -> None:
    assert attribute_cpu_energy(50.0, [1.0], 1.0, idle_j=80.0) == ([0.0], 50.0)


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


def test_cpu_idle_policy_validates_and_picks_the_domain_kind() -> None:
    policy = CpuIdlePolicy(package_watts=35.0, dram_watts=4.0)
    assert policy.configured_watts("package-0") == 35.0
    assert policy.configured_watts("package-1-dram") == 4.0
    assert CpuIdlePolicy().configured_watts("package-0") is None
    with pytest.raises(ValueError, match="unknown CPU idle mode"):
        CpuIdlePolicy(mode="pooled")
    with pytest.raises(ValueError, match="idle watts"):
        CpuIdlePolicy(dram_watts=-1.0)


def test_cpu_idle_learner_on_a_mostly_idle_node_takes_a_low_percentile() -> None:
    learner = CpuIdleLearner(window=100, min_fit=20)
    assert learner.value is None
    for k in range(100):
        u = 0.001 * (k % 5)  # next to nothing runs
        learner.observe(u, 200.0 + 100.0 * u)
    assert learner.value == pytest.approx(200.0, abs=0.2)


def test_cpu_idle_learner_fits_below_a_load_that_never_stops() -> None:
    learner = CpuIdleLearner(window=400, min_fit=60)
    for k in range(400):
        u = 0.3 + 0.5 * ((k * 37) % 100) / 100  # 30% to 80% busy, never idle
        learner.observe(u, 60.0 + 140.0 * u)
    # The lowest power seen is 102 W; the line through the points says 60 W at rest.
    assert learner.value == pytest.approx(60.0, rel=1e-6)


def test_cpu_idle_learner_steady_load_errs_towards_node_level() -> None:
    learner = CpuIdleLearner(window=100, min_fit=20)
    for _ in range(100):
        learner.observe(0.5, 130.0)
    # Nothing tells idle from load here: the whole power counts as idle (processes are not
    # over-charged; configure the idle watts for such nodes).
    assert learner.value == 130.0
    learner.observe(math.nan, 10.0)
    learner.observe(0.1, -5.0)
    assert learner.samples == 100


def test_cpu_idle_learner_window_slides() -> None:
    learner = CpuIdleLearner(window=50, min_fit=10)
    for _ in range(50):
        learner.observe(0.0, 300.0)
    for _ in range(50):
        learner.observe(0.0, 100.0)
    assert learner.samples == 50
    assert learner.value == 100.0


OFFSET_US = 7_000_000_000  # NVML's clock = ours + this (they only ever differ by a constant here)


def _ts(t: float) -> int:
    return round(t * 1e6) + OFFSET_US


def test_window_learns_nvml_sampling_period_from_its_timestamps() -> None:
    window = UtilisationWindow()
    assert window.period_s == 1.0  # assumed until NVML's timestamps show it
    for k in range(1, 12):  # we read every 1 s; the driver samples every 0.2 s, one process a moment
        window.update(float(k), {7: (0.6, _ts(k - 0.2)), 8: (0.4, _ts(k - 0.4))})
    assert window.period_s == pytest.approx(0.2)
    slow = UtilisationWindow()
    for k in range(5):
        slow.update(60.0 * k, {7: (0.5, _ts(60.0 * k))})
    assert slow.period_s == MAX_NVML_SAMPLE_PERIOD_S
    assert UtilisationWindow(period_s=0.5).period_s == 0.5
    with pytest.raises(ValueError, match="sample period"):
        UtilisationWindow(period_s=0.0)
    with pytest.raises(ValueError, match="sample period"):
        UtilisationWindow(period_s=60.0)


def test_window_judges_every_process_over_the_same_stretch_up_to_nvml_newest_moment() -> None:
    # NVML samples every 0.5 s; we read every 1 s, 10 ms after a sampling moment, so each read brings
    # the mean over the second before it. Process 1 is busy 80% until t=10 and 20% after, process 2
    # the reverse; process 3 holds the GPU idle and never shows up.
    window = UtilisationWindow(period_s=0.5)
    assert window.utilisation(0.0, [1, 2, 3]) == [None, None, None]  # nobody ever had a sample
    for k in range(1, 15):
        before = k <= 10
        window.update(
            float(k) + 0.01, {1: (0.8 if before else 0.2, _ts(k)), 2: (0.2 if before else 0.8, _ts(k))}
        )
        utils = window.utilisation(float(k) + 0.01, [1, 2, 3])
        # Interval (k - 1, k] maps onto (k - 1, k] of NVML's clock: the second the read reported on
        # (the first one reaches back before NVML's first sample).
        if k > 1:
            assert utils == pytest.approx([0.8, 0.2, 0.0] if before else [0.2, 0.8, 0.0])
    # A read without process 2: it was idle over that second.
    window.update(15.01, {1: (0.6, _ts(15))})
    assert window.utilisation(15.01, [1, 2, 3]) == pytest.approx([0.6, 0.0, 0.0])
    # A read that finds nothing new (NOT_FOUND) 1.6 s on: the moments at 15.5 and 16 passed without a
    # sample, so everyone was idle there.
    window.update(16.61, {})
    assert window.utilisation(16.61, [1, 2, 3]) == pytest.approx(
        [0.6, 0.0, 0.0]
    )  # idle: whoever computed last
    window.update(17.01, {1: (0.4, _ts(17)), 2: (0.4, _ts(17))})
    # (16.0, 17.0]: the moment at 16.5 was idle, and the read covers (15, 17] with these means.
    assert window.utilisation(17.01, [1, 2, 3]) == pytest.approx([0.4, 0.4, 0.0])


def test_window_idle_stretch_follows_who_computed_last_and_forgets_old_use() -> None:
    window = UtilisationWindow(period_s=1.0)
    for k in range(1, 21):
        window.update(float(k), {1: (0.6, _ts(k)), 2: (0.2, _ts(k))})
    for k in range(21, 27):  # both stop: nothing new from NVML (NOT_FOUND)
        window.update(float(k), {})
        # Nobody computed in the stretch: the idle energy follows the last read that showed them busy.
        assert window.utilisation(float(k), [1, 2, 3]) == pytest.approx([0.6, 0.2, 0.0])
    for k in range(27, 27 + IDLE_MEMORY_PERIODS + 3):  # process 1 computes again, now and then
        window.update(float(k), {1: (0.5, _ts(k))} if k % 4 == 0 else {})
        utils = window.utilisation(float(k), [1, 2, 3])
    # Process 2 computed too long ago to pay for idling any more.
    assert utils[1:] == [0.0, 0.0]
    window.update(50.0, {1: (0.1, _ts(3.5))})  # older than what we have: not new, not counted
    window.forget([2])
    assert window.utilisation(50.0, [1, 2]) == pytest.approx([0.0, 0.2])  # 1 forgotten: starts afresh
