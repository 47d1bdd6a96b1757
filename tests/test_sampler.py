"""The sampler without attribution or carbon: totals, failures, snapshots, state round trip."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from exporter.model import CpuReading, GpuReading
from exporter.sampler import Sampler
from exporter.sources import SourceUnavailable


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
