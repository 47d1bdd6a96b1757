"""Tests for exporter.ledger: per-series totals, group-by levels, cardinality folding and retention."""

from __future__ import annotations

import json
import math
import random

import pytest

from exporter.ledger import ProcessLedger
from exporter.model import ProcessState, Workload

GPU0, GPU1 = "GPU-0000aaaa", "GPU-1111bbbb"


def _w(pid: int, **kw: str) -> Workload:
    return Workload(comm=kw.pop("comm", f"proc{pid}"), user=kw.pop("user", "alice"), **kw)


def _by_pid(states: tuple[ProcessState, ...], device: str = GPU0) -> dict[str, ProcessState]:
    return {s.pid: s for s in states if s.gpu_uuid == device and s.workload.comm != "other"}


def _other(states: tuple[ProcessState, ...], device: str = GPU0) -> ProcessState | None:
    found = [s for s in states if s.gpu_uuid == device and s.workload.comm == "other"]
    assert len(found) <= 1
    return found[0] if found else None


def test_accumulates_energy_power_and_emissions() -> None:
    ledger = ProcessLedger()
    w = _w(10)
    ledger.add(GPU0, "0", 10, 1.0, w, 150.0, 1.0, now=1.0, grams=0.02, embodied_grams=0.001)
    ledger.end_interval(1.0)
    ledger.add(GPU0, "0", 10, 1.0, w, 100.0, 0.5, now=1.5, grams=0.01, marginal_grams=0.03)
    ledger.end_interval(1.5)
    (s,) = ledger.states(1.5)
    assert (s.gpu_uuid, s.gpu_index, s.pid, s.workload) == (GPU0, "0", "10", w)
    assert s.energy_j_total == 250.0
    assert s.power_w == 200.0  # 100 J over the last 0.5 s
    assert s.emissions_g_total == pytest.approx(0.03)
    assert s.marginal_emissions_g_total == pytest.approx(0.03)
    assert s.embodied_emissions_g_total == pytest.approx(0.001)
    ledger.end_interval(2.5)  # not seen: power drops to 0, total stays
    (s,) = ledger.states(2.5)
    assert (s.power_w, s.energy_j_total) == (0.0, 250.0)


def test_marginal_stays_none_without_marginal_provider() -> None:
    ledger = ProcessLedger()
    ledger.add("", "", 1, 1.0, _w(1), 5.0, 1.0, now=1.0, grams=0.1)
    ledger.end_interval(1.0)
    (s,) = ledger.states(1.0)
    assert (s.gpu_uuid, s.marginal_emissions_g_total) == ("", None)


def test_thousand_processes_max_series_50_folds_into_one_other_per_gpu() -> None:
    ledger = ProcessLedger(max_series=50)
    rng = random.Random(7)
    previous: dict[tuple[str, str, str], float] = {}
    added = {GPU0: 0.0, GPU1: 0.0}
    for tick in range(1, 6):
        for pid in range(1000):
            device = GPU0 if pid % 2 else GPU1
            joules = rng.uniform(0.0, 5.0)
            added[device] += joules
            ledger.add(
                device,
                "0" if device == GPU0 else "1",
                pid,
                100.0 + pid,
                _w(pid),
                joules,
                1.0,
                now=float(tick),
            )
        ledger.end_interval(float(tick))
        states = ledger.states(float(tick))
        for device in (GPU0, GPU1):
            on_device = [s for s in states if s.gpu_uuid == device]
            assert len(on_device) == 51
            assert ledger.series_count(device) == 50
            # Nothing is lost by folding: the series add up to what was charged.
            assert math.isclose(math.fsum(s.energy_j_total for s in on_device), added[device], rel_tol=1e-12)
        for s in states:
            ident = (s.gpu_uuid, s.pid, s.workload.comm)
            assert s.energy_j_total >= previous.get(ident, 0.0)  # every counter monotonic
            previous[ident] = s.energy_j_total
    assert ledger.folded_total == 900


def test_folding_is_sticky_when_slots_free_up() -> None:
    ledger = ProcessLedger(max_series=2, retention_s=10.0)
    for pid in (1, 2, 3):
        ledger.add(GPU0, "0", pid, 1.0, _w(pid), 10.0, 1.0, now=1.0)
    ledger.end_interval(1.0)
    assert set(_by_pid(ledger.states(1.0))) == {"1", "2"}
    # Process 1 ends; after its retention its slot is free, but folded process 3 stays in "other".
    for t in range(2, 14):
        for pid in (2, 3):
            ledger.add(GPU0, "0", pid, 1.0, _w(pid), 10.0, 1.0, now=float(t))
        ledger.end_interval(float(t))
    states = ledger.states(13.0)
    assert set(_by_pid(states)) == {"2"}
    other = _other(states)
    assert other is not None and other.energy_j_total == 130.0 and other.pid == ""
    # A new process takes the free slot.
    ledger.add(GPU0, "0", 4, 1.0, _w(4), 7.0, 1.0, now=14.0)
    ledger.add(GPU0, "0", 3, 1.0, _w(3), 10.0, 1.0, now=14.0)
    ledger.end_interval(14.0)
    states = ledger.states(14.0)
    assert _by_pid(states)["4"].energy_j_total == 7.0
    assert _other(states).energy_j_total == 140.0  # type: ignore[union-attr]
    assert ledger.folded_total == 1


def test_retention_keeps_final_value_then_drops() -> None:
    ledger = ProcessLedger(retention_s=600.0)
    ledger.add(GPU0, "0", 42, 5.0, _w(42), 80.0, 1.0, now=100.0)
    ledger.end_interval(100.0)
    ledger.end_interval(700.0)  # exactly retention after last seen: still there
    (s,) = ledger.states(700.0)
    assert (s.energy_j_total, s.power_w) == (80.0, 0.0)
    ledger.end_interval(700.5)
    assert ledger.states(700.5) == ()
    assert ledger.dropped_total == 1
    assert ledger.series_count(GPU0) == 0


def test_reused_pid_with_new_start_time_is_a_new_series() -> None:
    ledger = ProcessLedger()
    ledger.add(GPU0, "0", 500, 1000.0, _w(500, comm="train"), 300.0, 1.0, now=1.0)
    ledger.end_interval(1.0)
    # The PID comes back as a different program: its own series, the old one keeps its total.
    ledger.add(GPU0, "0", 500, 2000.0, _w(500, comm="eval"), 20.0, 1.0, now=2.0)
    ledger.end_interval(2.0)
    states = ledger.states(2.0)
    totals = sorted((s.workload.comm, s.energy_j_total, s.power_w) for s in states)
    assert totals == [("eval", 20.0, 20.0), ("train", 300.0, 0.0)]


def test_reused_pid_with_identical_labels_restarts_the_counter() -> None:
    ledger = ProcessLedger()
    ledger.add(GPU0, "0", 500, 1000.0, _w(500), 300.0, 1.0, now=1.0)
    ledger.end_interval(1.0)
    ledger.add(GPU0, "0", 500, 2000.0, _w(500), 20.0, 1.0, now=2.0)
    ledger.end_interval(2.0)
    (s,) = ledger.states(2.0)
    # One label set, one series: the new process starts from 0 (a counter reset to Prometheus),
    # it never inherits the ended process' 300 J.
    assert s.energy_j_total == 20.0
    assert ledger.series_count(GPU0) == 1


def test_group_by_pod_sums_processes_and_empties_other_labels() -> None:
    ledger = ProcessLedger(group_by="pod")
    a = Workload(comm="python", user="alice", container_id="c1", pod_uid="u1", pod="train-0", namespace="ml")
    b = Workload(comm="nccl", user="alice", container_id="c2", pod_uid="u1", pod="train-0", namespace="ml")
    c = Workload(comm="python", user="bob", container_id="c3", pod_uid="u2", pod="serve-0", namespace="web")
    for t in (1.0, 2.0):
        ledger.add(GPU0, "0", 1, 1.0, a, 100.0, 1.0, now=t)
        ledger.add(GPU0, "0", 2, 1.0, b, 50.0, 1.0, now=t)
        ledger.add(GPU0, "0", 3, 1.0, c, 25.0, 1.0, now=t)
        ledger.end_interval(t)
    states = {s.workload.pod: s for s in ledger.states(2.0)}
    assert states["train-0"].energy_j_total == 300.0
    assert states["train-0"].power_w == 150.0
    assert states["serve-0"].energy_j_total == 50.0
    w = states["train-0"].workload
    assert (states["train-0"].pid, w.comm, w.user, w.container_id, w.namespace, w.pod_uid) == (
        "",
        "",
        "",
        "",
        "ml",
        "u1",
    )


def test_group_by_user_sums_over_gpus_separately() -> None:
    ledger = ProcessLedger(group_by="user")
    ledger.add(GPU0, "0", 1, 1.0, _w(1, user="alice"), 10.0, 1.0, now=1.0)
    ledger.add(GPU0, "0", 2, 1.0, _w(2, user="alice"), 5.0, 1.0, now=1.0)
    ledger.add(GPU1, "1", 3, 1.0, _w(3, user="alice"), 7.0, 1.0, now=1.0)
    ledger.add("", "", 4, 1.0, _w(4, user="bob"), 3.0, 1.0, now=1.0)
    ledger.end_interval(1.0)
    got = sorted(
        (s.gpu_uuid, s.workload.user, s.workload.comm, s.pid, s.energy_j_total) for s in ledger.states(1.0)
    )
    assert got == [("", "bob", "", "", 3.0), (GPU0, "alice", "", "", 15.0), (GPU1, "alice", "", "", 7.0)]


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("container", {("c1", "", ""): 30.0, ("", "", ""): 4.0}),
        ("slurm_job", {("", "", "77"): 30.0, ("", "", ""): 4.0}),
    ],
)
def test_group_by_container_and_slurm_job(level: str, expected: dict[tuple[str, str, str], float]) -> None:
    ledger = ProcessLedger(group_by=level)
    in_job = Workload(comm="a", user="u", container_id="c1", slurm_job_id="77")
    ledger.add(GPU0, "0", 1, 1.0, in_job, 10.0, 1.0, now=1.0)
    ledger.add(GPU0, "0", 2, 2.0, in_job, 20.0, 1.0, now=1.0)
    ledger.add(GPU0, "0", 3, 3.0, Workload(comm="Xorg", user="root"), 4.0, 1.0, now=1.0)
    ledger.end_interval(1.0)
    got = {
        (s.workload.container_id, s.workload.pod, s.workload.slurm_job_id): s.energy_j_total
        for s in ledger.states(1.0)
    }
    assert got == expected


def _cpu_mix(ledger: ProcessLedger, t: float = 1.0) -> None:
    """A node's CPU users: two containers of one pod, a Slurm step, and three host processes."""
    pod_a = Workload(
        comm="python", user="alice", container_id="c1", pod_uid="u1", pod="train-0", namespace="ml"
    )
    pod_b = Workload(
        comm="envoy", user="alice", container_id="c2", pod_uid="u1", pod="train-0", namespace="ml"
    )
    conmon = Workload(comm="conmon", user="root", pod_uid="u1", pod="train-0", namespace="ml")
    slurm = Workload(comm="srun", user="bob", slurm_job_id="4242")
    for pid, w, joules in ((1, pod_a, 10.0), (2, pod_b, 5.0), (3, conmon, 0.5), (4, slurm, 7.0)):
        ledger.add("", "", pid, 1.0, w, joules, 1.0, now=t)
    for pid, comm in ((10, "kubelet"), (11, "containerd"), (12, "sshd")):
        ledger.add("", "", pid, 1.0, Workload(comm=comm, user="root"), 1.0, 1.0, now=t)
    ledger.end_interval(t)


def test_workload_level_gives_each_workload_cgroup_a_series_and_sums_the_rest_as_system() -> None:
    ledger = ProcessLedger(group_by="workload", system_series=True)
    _cpu_mix(ledger)
    got = {
        (
            s.pid,
            s.workload.comm,
            s.workload.container_id,
            s.workload.pod,
            s.workload.slurm_job_id,
        ): s.energy_j_total
        for s in ledger.states(1.0)
    }
    assert got == {
        ("", "", "c1", "train-0", ""): 10.0,
        ("", "", "c2", "train-0", ""): 5.0,
        ("", "", "", "train-0", ""): 0.5,  # in the pod's cgroup but no container's: the pod
        ("", "", "", "", "4242"): 7.0,
        ("", "system", "", "", ""): 3.0,  # kubelet, containerd, sshd: one series
    }
    assert sum(got.values()) == 25.5


def test_pod_level_cpu_series_with_a_system_series() -> None:
    ledger = ProcessLedger(group_by="pod", system_series=True)
    _cpu_mix(ledger)
    got = {(s.workload.comm, s.workload.pod): s.energy_j_total for s in ledger.states(1.0)}
    # The Slurm step is no pod: at the pod level it is part of the rest.
    assert got == {("", "train-0"): 15.5, ("system", ""): 10.0}


def test_system_series_does_not_apply_at_the_pid_and_user_levels() -> None:
    for level in ("pid", "user"):
        ledger = ProcessLedger(group_by=level, system_series=True)
        _cpu_mix(ledger)
        assert all(s.workload.comm != "system" for s in ledger.states(1.0)), level


def test_system_series_survives_dump_and_restore() -> None:
    ledger = ProcessLedger(group_by="workload", system_series=True)
    _cpu_mix(ledger)
    data = json.loads(json.dumps(ledger.dump()))
    again = ProcessLedger(group_by="workload", system_series=True)
    assert again.restore(data, now=5.0) == 5
    _cpu_mix(again, t=6.0)
    system = [s for s in again.states(6.0) if s.workload.comm == "system"]
    assert len(system) == 1 and system[0].energy_j_total == 6.0


def test_dump_and_restore_round_trip_through_json() -> None:
    ledger = ProcessLedger(max_series=1)
    ledger.add(GPU0, "0", 1, 11.5, _w(1), 10.0, 1.0, now=1.0, grams=1.0, marginal_grams=2.0)
    ledger.add(GPU0, "0", 2, 12.5, _w(2), 5.0, 1.0, now=1.0, grams=0.5)
    ledger.add("", "", 3, None, _w(3), 4.0, 1.0, now=1.0)
    ledger.end_interval(1.0)
    data = json.loads(json.dumps(ledger.dump()))
    fresh = ProcessLedger(max_series=1)
    assert fresh.restore(data, now=50.0) == 3
    assert fresh.folded_total == 1
    # The same process (pid 1, start 11.5) continues its counter; folded pid 2 keeps going to "other".
    fresh.add(GPU0, "0", 1, 11.5, _w(1), 1.0, 1.0, now=51.0)
    fresh.add(GPU0, "0", 2, 12.5, _w(2), 1.0, 1.0, now=51.0)
    fresh.end_interval(51.0)
    states = fresh.states(51.0)
    assert _by_pid(states)["1"].energy_j_total == 11.0
    assert _by_pid(states)["1"].marginal_emissions_g_total == 2.0
    assert _other(states).energy_j_total == 6.0  # type: ignore[union-attr]
    assert _by_pid(states, "")["3"].energy_j_total == 4.0
    assert ProcessLedger(group_by="user").restore(data, now=50.0) == 0  # other level: ignored
    assert fresh.restore({"group_by": "pid", "series": ["garbage", {"key": [1]}]}, now=1.0) == 0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="group-by"):
        ProcessLedger(group_by="node")
    with pytest.raises(ValueError, match="max series"):
        ProcessLedger(max_series=0)
    with pytest.raises(ValueError, match="retention"):
        ProcessLedger(retention_s=-1.0)


def test_attribution_into_ledger_over_a_run_conserves_and_retires() -> None:
    """Processes start and end mid-run: device energy = series totals + unattributed, always."""
    from exporter.attribution import attribute_gpu_energy
    from exporter.model import GpuProcessSample

    ledger = ProcessLedger(retention_s=5.0)
    rng = random.Random(3)
    device_total = unattributed_total = retired = 0.0
    last_totals: dict[str, float] = {}
    lifetimes = {1: (0, 30), 2: (10, 20), 3: (15, 40), 4: (25, 26)}  # pid: [start tick, end tick)
    for tick in range(46):
        now = float(tick)
        running = [pid for pid, (a, b) in lifetimes.items() if a <= tick < b]
        util = {1: 0.75, 2: 0.25, 3: rng.random(), 4: None}
        samples = [
            GpuProcessSample(pid=p, sm_util=util[p], start_time=float(lifetimes[p][0])) for p in running
        ]
        energy = rng.uniform(60.0, 700.0)
        shares, unattributed = attribute_gpu_energy(energy, 1.0, samples)
        device_total += energy
        unattributed_total += unattributed
        for sample, joules in zip(samples, shares, strict=True):
            ledger.add(GPU0, "0", sample.pid, sample.start_time, _w(sample.pid), joules, 1.0, now=now)
        ledger.end_interval(now)
        states = ledger.states(now)
        for pid, total in last_totals.items():  # dropped series: their final totals still count
            if pid not in _by_pid(states):
                retired += total
        last_totals = {pid: s.energy_j_total for pid, s in _by_pid(states).items()}
        live = math.fsum(s.energy_j_total for s in states)
        assert math.isclose(retired + live + unattributed_total, device_total, rel_tol=1e-12)
        if tick == 20:
            by_pid = _by_pid(states)
            # pid 1 ran alone before tick 10, then took 3x pid 2's share: more than 3x pid 2's total.
            assert by_pid["1"].energy_j_total / by_pid["2"].energy_j_total > 3.0
        if tick == 24:
            assert _by_pid(states)["2"].power_w == 0.0  # last seen at 19, retained 5 s
        if tick == 25:
            assert "2" not in _by_pid(states)
    assert set(_by_pid(ledger.states(45.0))) == set()  # everything ended and retired
    assert ledger.dropped_total == 4
