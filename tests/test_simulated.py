"""The simulated fleet: deterministic under a seed, realistic ranges, changing workloads."""

from __future__ import annotations

from exporter.sources.simulated import IDLE_W, POWER_LIMIT_W, SimulatedGpuSource


def run(source: SimulatedGpuSource, seconds: int) -> list[list]:  # type: ignore[type-arg]
    return [source.read(float(t)) for t in range(seconds)]


def test_same_seed_same_fleet_other_seed_other_fleet() -> None:
    a, b = SimulatedGpuSource(4, seed=1, wall_clock=0.0), SimulatedGpuSource(4, seed=1, wall_clock=0.0)
    c = SimulatedGpuSource(4, seed=2, wall_clock=0.0)
    ra, rb, rc = run(a, 300), run(b, 300), run(c, 300)
    assert ra == rb
    assert [g.uuid for g in ra[0]] != [g.uuid for g in rc[0]]
    assert [g.power_w for g in ra[-1]] != [g.power_w for g in rc[-1]]


def test_power_and_workload_ranges_over_a_long_run() -> None:
    readings = run(SimulatedGpuSource(8, seed=3), 1800)
    powers = [g.power_w for row in readings for g in row]
    assert min(powers) >= IDLE_W - 5 and max(powers) <= POWER_LIMIT_W
    kinds = set()
    for row in readings:
        for g in row:
            procs = g.processes or ()
            kinds.add(len(procs))
            assert sum(p.sm_util or 0 for p in procs) <= (g.util or 0) + 1e-3
    assert {0, 1} <= kinds and (2 in kinds or 3 in kinds)  # idle gaps, training, shared inference
    # Energy counters only go up and match the trapezoid of the power they report.
    first, last = readings[0][0], readings[-1][0]
    assert last.energy_j is not None and first.energy_j == 0.0 and last.energy_j > 0
    trapezoid = sum(
        (readings[k][0].power_w + readings[k + 1][0].power_w) / 2 for k in range(len(readings) - 1)
    )
    assert abs(last.energy_j - trapezoid) < 1e-6 * trapezoid


def test_processes_carry_identities_and_pods_are_listed() -> None:
    source = SimulatedGpuSource(8, seed=0)
    readings = run(source, 600)
    cgroups = {p.cgroup for row in readings for g in row for p in g.processes or ()}
    assert any("kubepods" in c for c in cgroups if c)
    assert any("slurmstepd.scope/job_" in c for c in cgroups if c)
    pods = source.pods()
    assert pods and all(ns in ("ml-training", "inference", "research") for _, ns in pods.values())
