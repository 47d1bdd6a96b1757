"""The sampler without attribution or carbon: totals, failures, snapshots, state round trip."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from exporter.attribution import AttributionPolicy
from exporter.ledger import ProcessLedger
from exporter.model import CpuReading, GpuProcessSample, GpuReading, Workload
from exporter.sampler import Attribution, Sampler
from exporter.sources import SourceUnavailable
from exporter.workload import WorkloadResolver


class ScriptedGpus:
    """Returns whatever the test scripted for each read; raises when told to."""

    name = "scripted"

    def __init__(self) -> None:
        self.next: list[GpuReading] | Exception = []

    def read(self, now: float) -> list[GpuReading]:
        if isinstance(self.next, Exception):
            raise self.next
        return self.next

    def close(self) -> None:
        pass


class ConstantCpu:
    name = "rapl"

    def __init__(self, watts: float) -> None:
        self.watts = watts
        self.energy = 0.0
        self.last: float | None = None

    def read(self, now: float) -> list[CpuReading]:
        if self.last is not None:
            self.energy += self.watts * (now - self.last)
        self.last = now
        return [CpuReading("package-0", "rapl", self.energy, self.watts)]

    def close(self) -> None:
        pass


def gpu(index: int, energy: float | None, power: float = 100.0, up: bool = True) -> GpuReading:
    return GpuReading(
        index=index,
        uuid=f"GPU-{index}",
        name="NVIDIA A100",
        power_w=power,
        energy_j=energy,
        up=up,
        error="" if up else "lost",
    )


def make() -> tuple[Sampler, ScriptedGpus, list[float]]:
    clock = [0.0]
    src = ScriptedGpus()
    return (
        Sampler(src, ConstantCpu(50.0), clock=lambda: clock[0], wall_clock=lambda: 1000 + clock[0]),
        src,
        clock,
    )


def test_counter_and_integrated_gpus_and_cpu_totals() -> None:
    sampler, src, clock = make()
    for k in range(11):
        src.next = [gpu(0, 1000.0 + 300.0 * k, power=300.0), gpu(1, None, power=200.0)]
        sampler.tick()
        clock[0] += 1.0
    snap = sampler.snapshot
    assert [g.energy_j_total for g in snap.gpus] == pytest.approx([3000.0, 2000.0])
    # No attribution configured: all of it is unattributed, so the conservation identity holds trivially.
    assert [g.unattributed_energy_j_total for g in snap.gpus] == pytest.approx([3000.0, 2000.0])
    assert snap.cpus[0].energy_j_total == pytest.approx(500.0)
    assert snap.samples_total == 11
    assert {s.name: s.up for s in snap.sources} == {"scripted": True, "rapl": True}


def test_lost_gpu_keeps_counter_others_keep_going() -> None:
    sampler, src, clock = make()
    history = []
    for k in range(20):
        lost = 5 <= k < 10
        src.next = [gpu(0, 100.0 * k), replace(gpu(1, 50.0 * k), up=not lost, error="lost" if lost else "")]
        sampler.tick()
        history.append([g.energy_j_total for g in sampler.snapshot.gpus])
        clock[0] += 1.0
    for a, b in itertools.pairwise(history):
        assert b[0] >= a[0] and b[1] >= a[1]  # monotonic through everything
    assert history[-1][0] == pytest.approx(1900.0)
    assert history[-1][1] == pytest.approx(950.0)  # the hardware counter kept counting while it was lost
    status = next(s for s in sampler.snapshot.sources if s.name == "scripted")
    assert status.errors_total == {"lost": 5}


def test_whole_source_failure_marks_gpus_down_and_counts_errors() -> None:
    sampler, src, clock = make()
    src.next = [gpu(0, 0.0)]
    sampler.tick()
    clock[0] += 1
    src.next = SourceUnavailable("permission", "denied")
    snap = sampler.tick()
    assert [g.reading.up for g in snap.gpus] == [False]
    status = next(s for s in snap.sources if s.name == "scripted")
    assert not status.up and status.errors_total == {"permission": 1}
    assert next(s for s in snap.sources if s.name == "rapl").up  # the CPU source is unaffected
    clock[0] += 1
    src.next = [gpu(0, 500.0)]
    snap = sampler.tick()
    assert snap.gpus[0].reading.up and snap.gpus[0].energy_j_total == pytest.approx(500.0)


def test_state_round_trip_continues_totals() -> None:
    sampler, src, clock = make()
    for k in range(5):
        src.next = [gpu(0, 10.0 * k)]
        sampler.tick()
        clock[0] += 1
    saved = sampler.dump_state()
    again, src2, clock2 = make()
    again.restore_state(saved)
    for k in range(3):
        src2.next = [gpu(0, 7.0 + 10.0 * k)]
        again.tick()
        clock2[0] += 1
    assert again.snapshot.gpus[0].energy_j_total == pytest.approx(40.0 + 20.0)
    assert again.snapshot.cpus[0].energy_j_total == pytest.approx(200.0 + 100.0)


@pytest.mark.parametrize(
    "bad", [{"gpus": {"GPU-0": {"energy_j": -1}}}, {"gpus": {"GPU-0": "x"}}, {"water_litres": "lots"}]
)
def test_restore_rejects_bad_totals(bad: dict[str, object]) -> None:
    sampler, _, _ = make()
    with pytest.raises(ValueError):
        sampler.restore_state(bad)


# --- devices that do not measure cleanly ----------------------------------------------------------


def test_one_poisoned_gpu_never_stops_the_others_or_the_cpu() -> None:
    sampler, src, clock = make()
    for k in range(6):
        bad = math.nan if k % 2 else 1e308
        src.next = [gpu(0, 100.0 * k), replace(gpu(1, None), power_w=bad if k >= 2 else 100.0)]
        snap = sampler.tick()
        clock[0] += 1.0
    assert snap.samples_total == 6
    assert [g.energy_j_total for g in snap.gpus] == pytest.approx([500.0, 100.0])  # GPU 1: good reads 0-1
    assert snap.cpus[0].energy_j_total == pytest.approx(250.0)
    assert {(r.device, r.reason): r.count for r in snap.rejected_readings} == {
        ("GPU-1", "above_limit"): 2,
        ("GPU-1", "non_finite"): 2,
    }
    assert snap.gpus[1].reading.power_w is None and snap.gpus[1].energy_method == "none"


def test_a_gpu_whose_accounting_raises_is_isolated_and_the_cause_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenResolver:
        def resolve(self, pid: int, *args: object) -> Workload:
            if pid == 13:
                raise OSError("procfs went away")
            return Workload()

    clock = [0.0]
    src = ScriptedGpus()
    att = Attribution(AttributionPolicy(), BrokenResolver(), ProcessLedger(), ProcessLedger())  # type: ignore[arg-type]
    sampler = Sampler(src, ConstantCpu(50.0), attribution=att, clock=lambda: clock[0])
    for _ in range(4):
        src.next = [
            replace(gpu(0, 100.0 * clock[0]), processes=(GpuProcessSample(13),)),
            replace(gpu(1, 100.0 * clock[0]), processes=(GpuProcessSample(7),)),
        ]
        snap = sampler.tick()
        clock[0] += 1.0
    assert [g.energy_j_total for g in snap.gpus] == pytest.approx([0.0, 300.0])
    assert snap.cpus[0].energy_j_total == pytest.approx(150.0)
    assert [(r.device, r.reason, r.count) for r in snap.rejected_readings] == [("GPU-0", "error", 3)]
    assert any("OSError: procfs went away" in r.getMessage() for r in caplog.records)
    assert any(r.exc_info and "procfs went away" in str(r.exc_info[1]) for r in caplog.records)


def test_idle_learner_learns_only_from_reads_whose_process_list_was_empty(tmp_path: Path) -> None:
    clock = [0.0]
    src = ScriptedGpus()
    att = Attribution(
        AttributionPolicy("idle-baseline"),
        WorkloadResolver(str(tmp_path / "noproc")),
        ProcessLedger(),
        ProcessLedger(),
    )
    sampler = Sampler(src, None, attribution=att, clock=lambda: clock[0])
    for k in range(30):  # busy at 650 W, but the process list could not be read (None)
        src.next = [replace(gpu(0, 650.0 * k, power=650.0), processes=None)]
        sampler.tick()
        clock[0] += 1.0
    assert att.learners["GPU-0"].value is None
    src.next = [replace(gpu(0, 650.0 * 30, power=650.0), processes=(GpuProcessSample(42),))]
    snap = sampler.tick()
    # No baseline learned from "could not list", so the running process gets its full 650 W.
    assert [p.power_w for p in snap.gpu_processes] == pytest.approx([650.0])
    for k in range(31, 45):  # now really idle: 60 W with an empty list
        clock[0] += 1.0
        src.next = [replace(gpu(0, 650.0 * 30 + 60.0 * (k - 30), power=60.0), processes=())]
        sampler.tick()
    assert att.learners["GPU-0"].value == 60.0


def test_unmeasured_cpu_domains_have_no_energy_series_and_failed_reads_are_flagged() -> None:
    class Domains:
        name = "rapl"

        def __init__(self) -> None:
            self.dram_missing = False

        def read(self, now: float) -> list[CpuReading]:
            out = [CpuReading("package-0", "rapl", 10.0 * now, None), CpuReading("package-1-dram", "rapl")]
            if not self.dram_missing:
                out.append(CpuReading("package-0-dram", "rapl", 2.0 * now, None))
            return out

        def close(self) -> None:
            pass

    clock = [0.0]
    cpus = Domains()
    sampler = Sampler(None, cpus, clock=lambda: clock[0])
    for _ in range(3):
        snap = sampler.tick()
        clock[0] += 1.0
    state = {c.reading.package: c for c in snap.cpus}
    assert not state["package-1-dram"].measured
    assert (state["package-1-dram"].energy_method, state["package-1-dram"].unmeasured_reason) == (
        "none",
        "no_power_or_energy",
    )
    assert state["package-0"].measured and state["package-0"].energy_method == "counter"
    cpus.dram_missing = True
    snap = sampler.tick()
    dram = next(c for c in snap.cpus if c.reading.package == "package-0-dram")
    assert dram.measured and dram.energy_j_total == pytest.approx(4.0)  # kept, frozen
    assert (dram.energy_method, dram.unmeasured_reason) == ("none", "read_failed")
    assert set(sampler.dump_state()["cpus"]) == {"package-0", "package-0-dram"}


def test_state_round_trip_continues_per_process_totals_and_conservation(tmp_path: Path) -> None:
    def attributed() -> tuple[Sampler, ScriptedGpus, list[float]]:
        clock = [0.0]
        src = ScriptedGpus()
        att = Attribution(
            AttributionPolicy(), WorkloadResolver(str(tmp_path / "noproc")), ProcessLedger(), ProcessLedger()
        )
        return Sampler(src, None, attribution=att, clock=lambda: clock[0]), src, clock

    procs = (
        GpuProcessSample(1, sm_util=0.75, start_time=5.0),
        GpuProcessSample(2, sm_util=0.25, start_time=6.0),
    )
    first, src, clock = attributed()
    for k in range(5):
        src.next = [replace(gpu(0, 100.0 * k), processes=procs if k < 3 else procs[:1])]
        first.tick()
        clock[0] += 1.0
    saved = json.loads(json.dumps(first.dump_state()))  # what the state file holds
    before = {p.pid: p.energy_j_total for p in first.snapshot.gpu_processes}
    assert before == pytest.approx({"1": 350.0, "2": 50.0})

    second, src2, clock2 = attributed()
    second.restore_state(saved)
    for k in range(3):
        src2.next = [replace(gpu(0, 7.0 + 100.0 * k), processes=procs[:1])]
        snap = second.tick()
        clock2[0] += 1.0
    after = {p.pid: p.energy_j_total for p in snap.gpu_processes}
    # The same process (pid and start time) continues; the ended one keeps its total while retained.
    assert after == pytest.approx({"1": 550.0, "2": 50.0})
    assert sum(after.values()) + snap.gpus[0].unattributed_energy_j_total == pytest.approx(
        snap.gpus[0].energy_j_total, rel=1e-12
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"gpus": {"GPU-0": {"energy_j": math.inf}}},
        {"gpus": {"GPU-0": {"grams": math.nan}}},
        {"gpus": ["GPU-0"]},
        {"node_embodied_grams": -3.0},
        {"gpu_processes": {"group_by": "pid", "series": [{"key": ["GPU-0", 1, None], "energy_j": -1.0}]}},
        {"gpu_processes": {"group_by": "pid", "series": [{"key": [["x"]], "energy_j": 1.0}]}},
        {"cpu_processes": {"group_by": "pid", "series": "all"}},
    ],
)
def test_restore_refuses_impossible_values_and_changes_nothing(
    bad: dict[str, object], tmp_path: Path
) -> None:
    att = Attribution(
        AttributionPolicy(), WorkloadResolver(str(tmp_path / "noproc")), ProcessLedger(), ProcessLedger()
    )
    sampler = Sampler(None, None, attribution=att)
    good = {"gpus": {"GPU-1": {"energy_j": 5.0}}}
    with pytest.raises(ValueError):
        sampler.restore_state({**good, **bad})
    assert sampler.dump_state()["gpus"] == {}
    assert att.gpu_ledger.dump()["series"] == []
