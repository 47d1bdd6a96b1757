"""--attribution.node-unmetered=spread: the unmetered node energy shared out by each process's share of
the GPU + CPU energy over exactly each node interval's span, conserved, saved, and served apart."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.node import spread_cost
from exporter.attribution import AttributionPolicy, CpuIdlePolicy, spread_unmetered
from exporter.carbon.config import parse_carbon_config
from exporter.carbon.service import CarbonService
from exporter.ledger import ProcessLedger
from exporter.model import GpuProcessSample, GpuReading, NodeReading
from exporter.node_power import NodePoller
from exporter.sampler import Attribution, Sampler
from exporter.workload import WorkloadResolver
from tests.metrics_text import parse, select
from tests.test_node_power import Clock, ScriptedSource, SteadyCpu, exposition

TRAIN = GpuProcessSample(100, "train", "alice", sm_util=0.9, start_time=1.0)
EVAL = GpuProcessSample(200, "eval", "alice", sm_util=0.5, start_time=2.0)
GRAMS_PER_J = 400.0 / 3.6e6 * 1.25  # static 400 g/kWh, PUE 1.25


class TwoGpus:
    """GPU 0 draws 300 W for ``train`` all along; GPU 1 draws 100 W, held by ``eval`` up to t = 5 s and by
    nothing after (its energy then stays unattributed). Both have energy counters."""

    name = "scripted"

    def read(self, now: float) -> list[GpuReading]:
        return [
            GpuReading(0, "GPU-0", "NVIDIA H100", power_w=300.0, energy_j=300.0 * now, processes=(TRAIN,)),
            GpuReading(
                1,
                "GPU-1",
                "NVIDIA H100",
                power_w=100.0,
                energy_j=100.0 * now,
                processes=(EVAL,) if now <= 5.0 else (),
            ),
        ]

    def close(self) -> None:
        pass


class CpuTimes:
    """``train`` (pid 100, the same process as on GPU 0) and ``etl`` (pid 300) use 0.25 CPU-seconds each
    per second, and nothing else runs: the package's 10 W above its 30 W idle go to them half each."""

    cpu_count = 4

    def read(self) -> tuple[dict[tuple[int, float], tuple[float, str, str]], float]:
        return {(100, 1.0): (0.25, "train", "alice"), (300, 5.0): (0.25, "etl", "bob")}, 0.5


def attribution(tmp_path: Path, spread: bool, group_by: str = "pid") -> Attribution:
    return Attribution(
        policy=AttributionPolicy(),
        resolver=WorkloadResolver(str(tmp_path)),
        gpu_ledger=ProcessLedger(group_by),
        cpu_ledger=ProcessLedger(group_by),
        cpu_times=CpuTimes(),  # type: ignore[arg-type]
        cpu_idle=CpuIdlePolicy("unattributed", package_watts=30.0, dram_watts=10.0),
        node_ledger=ProcessLedger(group_by) if spread else None,
    )


def carbon() -> CarbonService:
    service = CarbonService(
        parse_carbon_config(
            {"zone": "DE", "pue": 1.25, "providers": [{"type": "static", "grams_per_kwh": 400}]}
        )
    )
    service.refresh_now()
    return service


def run(
    att: Attribution,
    watts: list[float],
    seconds: int | None = None,
    service: CarbonService | None = None,
    wall0: float = 1_700_000_000.0,
    offset: float = 0.5,
) -> Sampler:
    """Ticks at whole seconds 0..seconds-1 (by default up to the one that takes in the last reading); the
    BMC is read at 0 + offset, 10 + offset, 20 + offset ... (watts[k]): half-way between ticks by default,
    so no node interval lines up with the sampler's ticks; with offset 0 just before the tick of that
    second. Carbon: ``service``, else a static 400 g/kWh at PUE 1.25."""
    seconds = 10 * (len(watts) - 1) + (2 if offset else 1) if seconds is None else seconds
    clock = Clock(0.0)
    poller = NodePoller(ScriptedSource([NodeReading(w) for w in watts]), interval_s=10.0, clock=clock)
    sampler = Sampler(
        TwoGpus(),
        SteadyCpu(),  # package 40 W, DRAM 10 W
        service or carbon(),
        att,
        clock=clock,
        wall_clock=lambda: wall0 + clock.t,
        node=poller,
    )
    for second in range(seconds):
        clock.t = float(second)
        due = second % 10 == 0 and second // 10 < len(watts)
        if due and not offset:
            poller.poll_once()
        sampler.tick()
        if due and offset:
            clock.t = second + offset
            poller.poll_once()
    return sampler


def node_shares(sampler: Sampler) -> dict[str, tuple[float, float]]:
    return {p.pid: (p.energy_j_total, p.emissions_g_total) for p in sampler.snapshot.node_processes}


def test_spread_by_hand_over_node_intervals_that_do_not_line_up_with_ticks(tmp_path: Path) -> None:
    # Components: GPUs 300 + 100 W, CPU package 40 W, DRAM 10 W = 450 W: 4500 J per 10 s node interval.
    # Node readings at t = 0.5, 10.5, 20.5: 600, 600, 800 W, so 6000 J and 7000 J (trapezoid):
    # unmetered 1500 J over [0.5, 10.5] and 2500 J over [10.5, 20.5].
    # What each process was charged over exactly those spans (a tick's energy is spread evenly over it):
    #   train: GPU 300 J/s + CPU 5 J/s (half of the package's 10 W of activity): 3050 J, then 3050 J;
    #   eval:  GPU 1 up to t = 5: half of the tick (0, 1] plus (1, 5]: 50 + 400 = 450 J, then 0;
    #   etl:   CPU 5 J/s: 50 J, then 50 J.
    # Each gets unmetered x its joules / 4500 J; the rest (idle GPU 1, CPU idle, DRAM) stays with no one.
    sampler = run(attribution(tmp_path, spread=True), [600.0, 600.0, 800.0])
    node = sampler.snapshot.node
    assert node is not None
    assert node.energy_j_total == pytest.approx(13_000.0)
    assert node.unmetered_energy_j_total == pytest.approx(1500.0 + 2500.0)
    expected = {
        "100": 1500.0 * 3050 / 4500 + 2500.0 * 3050 / 4500,  # 2711.1 J
        "200": 1500.0 * 450 / 4500,  # 150 J; 166.7 J had it been weighed over the ticks drained (1 to 11)
        "300": 1500.0 * 50 / 4500 + 2500.0 * 50 / 4500,  # 44.4 J
    }
    shares = node_shares(sampler)
    assert {pid: j for pid, (j, _) in shares.items()} == pytest.approx(expected, rel=1e-9)
    rest = 1500.0 * 950 / 4500 + 2500.0 * 1400 / 4500  # 1094.4 J
    assert node.unmetered_unattributed_j_total == pytest.approx(rest, rel=1e-9)
    # Conserved: the processes' shares and the part with no process are the unmetered energy.
    assert math.fsum([*(j for j, _ in shares.values()), rest]) == pytest.approx(4000.0, rel=1e-12)
    assert math.fsum(
        [*(j for j, _ in shares.values()), node.unmetered_unattributed_j_total or 0.0]
    ) == pytest.approx(node.unmetered_energy_j_total, rel=1e-12)
    # Emissions at the interval's intensity (static here), so they add up to the unmetered emissions.
    for pid, (_, grams) in shares.items():
        assert grams == pytest.approx(expected[pid] * GRAMS_PER_J, rel=1e-9), pid
    assert node.unmetered_emissions_g_total == pytest.approx(4000.0 * GRAMS_PER_J, rel=1e-9)


def test_spreading_leaves_the_gpu_and_cpu_counters_as_they_are(tmp_path: Path) -> None:
    spread, kept = (run(attribution(tmp_path, spread=s), [600.0, 600.0, 800.0]) for s in (True, False))
    for a, b in (
        (spread.snapshot.gpu_processes, kept.snapshot.gpu_processes),
        (spread.snapshot.cpu_processes, kept.snapshot.cpu_processes),
    ):
        assert [(p.pid, p.energy_j_total, p.emissions_g_total) for p in a] == [
            (p.pid, p.energy_j_total, p.emissions_g_total) for p in b
        ]
    # train's GPU counter is its GPU energy alone: 300 W from t = 0 to 21.
    assert {p.pid: p.energy_j_total for p in spread.snapshot.gpu_processes}["100"] == pytest.approx(6300.0)
    node = kept.snapshot.node
    assert node is not None and node.unmetered_unattributed_j_total is None
    assert kept.snapshot.node_processes == ()
    served = {name for name, _ in parse(exposition(kept))}
    assert "footprint_node_unmetered_energy_joules_total" in served
    assert not {n for n in served if n.startswith("footprint_process_node_unmetered")}
    assert "footprint_node_unmetered_unattributed_energy_joules_total" not in served


def test_scrape_conservation_and_labels(tmp_path: Path) -> None:
    sampler = run(attribution(tmp_path, spread=True), [600.0, 600.0, 800.0])
    samples = parse(exposition(sampler))
    per_process = select(samples, "footprint_process_node_unmetered_energy_joules_total")
    labels = [dict(lab) for lab in per_process]
    assert {lab["pid"]: (lab["comm"], lab["user"]) for lab in labels} == {
        "100": ("train", "alice"),
        "200": ("eval", "alice"),
        "300": ("etl", "bob"),
    }
    assert set(labels[0]) == {"pid", "comm", "user", "container_id", "pod", "namespace", "slurm_job_id"}
    (rest,) = select(samples, "footprint_node_unmetered_unattributed_energy_joules_total").values()
    (unmetered,) = select(samples, "footprint_node_unmetered_energy_joules_total").values()
    assert unmetered == pytest.approx(4000.0)
    assert math.fsum([*per_process.values(), rest]) == pytest.approx(unmetered, rel=1e-12)
    grams = select(samples, "footprint_process_node_unmetered_emissions_grams_total")
    assert sum(grams.values()) == pytest.approx((4000.0 - rest) * GRAMS_PER_J, rel=1e-9)


def test_grouped_by_user_one_series_gets_gpu_and_cpu_shares(tmp_path: Path) -> None:
    sampler = run(attribution(tmp_path, spread=True, group_by="user"), [600.0, 600.0, 800.0])
    by_user = {p.workload.user: p.energy_j_total for p in sampler.snapshot.node_processes}
    assert by_user == pytest.approx(
        {
            "alice": 1500.0 * (3050 + 450) / 4500 + 2500.0 * 3050 / 4500,
            "bob": 1500.0 * 50 / 4500 + 2500.0 * 50 / 4500,
        },
        rel=1e-9,
    )


def test_a_shortfall_spreads_nothing_and_its_payback_only_the_excess(tmp_path: Path) -> None:
    # Readings 600, 400, 400, 1400 W: node intervals of 5000, 4000 and 9000 J against 4500 J of
    # components. Unmetered: 500 J; 0 (500 J short, owed); 9000 - 4500 - 500 = 4000 J.
    sampler = run(attribution(tmp_path, spread=True), [600.0, 400.0, 400.0, 1400.0])
    node = sampler.snapshot.node
    assert node is not None and node.below_components_total == 1
    assert node.unmetered_energy_j_total == pytest.approx(500.0 + 4000.0)
    shares = {p.pid: p.energy_j_total for p in sampler.snapshot.node_processes}
    # eval held GPU 1 in the first interval only; the short interval spreads nothing.
    assert shares == pytest.approx(
        {"100": 4500.0 * 3050 / 4500, "200": 500.0 * 450 / 4500, "300": 4500.0 * 50 / 4500},
        rel=1e-9,
    )
    assert math.fsum([*shares.values(), node.unmetered_unattributed_j_total or 0.0]) == pytest.approx(
        4500.0, rel=1e-12
    )


def test_spread_totals_are_saved_and_continued(tmp_path: Path) -> None:
    sampler = run(attribution(tmp_path, spread=True), [600.0, 600.0, 800.0])
    state = sampler.dump_state()
    assert state["node"]["unmetered_unattributed_j"] == pytest.approx(
        1500.0 * 950 / 4500 + 2500.0 * 1400 / 4500
    )
    assert {r["labels"][0] for r in state["node_processes"]["series"]} == {"100", "200", "300"}
    again = run(attribution(tmp_path, spread=True), [600.0], seconds=1)
    again.restore_state(state)
    again.tick()
    assert node_shares(again) == node_shares(sampler)
    node = again.snapshot.node
    assert node is not None
    assert node.unmetered_unattributed_j_total == pytest.approx(state["node"]["unmetered_unattributed_j"])
    # A file saved while the energy stayed at node level: all of it was charged to no process.
    kept = run(attribution(tmp_path, spread=False), [600.0, 600.0, 800.0]).dump_state()
    assert "node_processes" not in kept
    fresh = run(attribution(tmp_path, spread=True), [600.0], seconds=1)
    old = dict(kept, node={k: v for k, v in kept["node"].items() if k != "unmetered_unattributed_j"})
    fresh.restore_state(old)
    fresh.tick()
    node = fresh.snapshot.node
    assert node is not None and node.unmetered_unattributed_j_total == pytest.approx(4000.0)
    with pytest.raises(ValueError):
        fresh.restore_state({"node": {"unmetered_unattributed_j": float("inf")}})


def test_a_failed_node_interval_spreads_nothing(tmp_path: Path) -> None:
    # The GPU source fails between t = 12 and 15 (a 3 kJ hole in the components): [10.5, 20.5] is not
    # compared, so nothing of it is unmetered and nothing is spread.
    att = attribution(tmp_path, spread=True)
    sampler = run(att, [600.0, 600.0, 800.0], seconds=12)
    gpus = sampler.gpu_source
    assert gpus is not None

    def failing(now: float) -> list[GpuReading]:
        raise OSError("NVML lost")

    healthy = gpus.read
    clock = sampler.clock
    assert isinstance(clock, Clock)
    for second in range(12, 21):
        clock.t = float(second)
        gpus.read = failing if second <= 15 else healthy  # type: ignore[method-assign]
        sampler.tick()
        if second == 20:
            clock.t = 20.5
            assert sampler.node is not None
            sampler.node.poll_once()
    clock.t = 21.0
    sampler.tick()
    node = sampler.snapshot.node
    assert node is not None and node.gaps_total == 1
    assert node.unmetered_energy_j_total == pytest.approx(1500.0)
    assert sum(p.energy_j_total for p in sampler.snapshot.node_processes) + (
        node.unmetered_unattributed_j_total or 0.0
    ) == pytest.approx(1500.0, rel=1e-12)


@settings(max_examples=300, deadline=None)
@given(
    st.floats(0.0, 1e7),
    st.lists(st.floats(0.0, 1e6), max_size=12),
    st.floats(0.0, 1e6),
)
def test_spread_is_conserved_exactly_and_never_over_attributes(
    unmetered: float, process_j: list[float], unattributed_components: float
) -> None:
    components = math.fsum(process_j) + unattributed_components
    shares, rest = spread_unmetered(unmetered, process_j, components)
    assert math.fsum([*shares, rest]) == unmetered
    assert all(s >= 0 for s in shares) and rest >= 0
    if components > 0:
        for share, joules in zip(shares, process_j, strict=True):
            # joules / components first: unmetered x a subnormal joules would lose its digits. The
            # rounding left by the split (a few ulps of the unmetered energy) is moved into one share.
            assert share <= unmetered * (joules / components) * (1 + 1e-9) + 16 * math.ulp(unmetered) + 1e-12
    if unattributed_components == 0 and math.fsum(process_j) > 0:
        assert rest == 0.0  # everything metered went to processes: so does everything unmetered


def test_the_spread_benchmark_accounts_the_same_node_energy_either_way() -> None:
    node, spread = spread_cost(2, 3, ticks=40)
    assert (node.mode, spread.mode) == ("node", "spread")
    assert node.unmetered_j == spread.unmetered_j > 0
    # Kept at node level all of it goes to no process; spread, the fake GPUs' busy processes take most.
    assert node.unmetered_unattributed_j == node.unmetered_j
    assert 0 < spread.unmetered_unattributed_j < 0.5 * spread.unmetered_j
    assert node.median_ms > 0 and spread.mean_ms > 0
