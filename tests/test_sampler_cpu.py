"""The sampler's CPU path: per-domain idle power kept at node level, only activity split by CPU time."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from exporter.attribution import AttributionPolicy, CpuIdlePolicy
from exporter.ledger import ProcessLedger
from exporter.model import CpuReading
from exporter.sampler import Attribution, Sampler
from exporter.sources.processes import CLK_TCK, ProcessCpuTimes
from exporter.workload import WorkloadResolver

CPUS = 64
PID = 4242
BTIME = 1_700_000_000


class Node:
    """A CPU node written as procfs (CPU times) and read as RAPL domains (energy) by the sampler.

    Each second the test says how many CPU ticks the process and the kernel used; the package draws
    ``idle + active x utilisation`` and so does its DRAM, with their own figures.
    """

    name = "rapl"

    def __init__(
        self,
        root: Path,
        package: tuple[float, float] = (200.0, 100.0),
        dram: tuple[float, float] = (20.0, 10.0),
    ) -> None:
        self.root = root
        self.package, self.dram = package, dram
        self.proc_ticks = self.kernel_ticks = 0
        self.energy = {"package-0": 0.0, "package-0-dram": 0.0}
        self.truth_active_j = 0.0  # the process's own share of the domains' active power
        self.last: float | None = None
        self.pending: tuple[int, int] = (0, 0)
        root.mkdir(parents=True, exist_ok=True)
        self._write()

    def _write(self) -> None:
        busy = self.proc_ticks + self.kernel_ticks
        lines = [f"cpu  {busy} 0 0 {10**9} 0 0 0 0 0 0"] + [
            f"cpu{i} 0 0 0 0 0 0 0 0 0 0" for i in range(CPUS)
        ]
        (self.root / "stat").write_text("\n".join(lines) + f"\nbtime {BTIME}\n")
        d = self.root / str(PID)
        d.mkdir(exist_ok=True)
        (d / "stat").write_text(
            f"{PID} (tiny) S 1 {PID} {PID} 0 -1 0 0 0 0 0 {self.proc_ticks} 0 0 0 20 0 1 0 500 0 0\n"
        )

    def second(self, proc_ticks: int, kernel_ticks: int) -> None:
        """What the next second holds: CPU ticks of the process and of everything else."""
        self.pending = (proc_ticks, kernel_ticks)

    def read(self, now: float) -> list[CpuReading]:
        if self.last is not None:
            dt = now - self.last
            proc, kernel = self.pending
            self.proc_ticks += proc
            self.kernel_ticks += kernel
            u = (proc + kernel) / CLK_TCK / (dt * CPUS)
            for label, (idle, active) in (("package-0", self.package), ("package-0-dram", self.dram)):
                self.energy[label] += (idle + active * u) * dt
                self.truth_active_j += active * proc / CLK_TCK / (dt * CPUS) * dt
            self._write()
        self.last = now
        return [CpuReading(label, "rapl", energy) for label, energy in self.energy.items()]

    def close(self) -> None:
        pass


def sampler_for(tmp_path: Path, node: Node, cpu_idle: CpuIdlePolicy) -> tuple[Sampler, list[float]]:
    clock = [0.0]
    att = Attribution(
        policy=AttributionPolicy(),
        resolver=WorkloadResolver(str(node.root)),
        gpu_ledger=ProcessLedger(),
        cpu_ledger=ProcessLedger(),
        cpu_times=ProcessCpuTimes(str(node.root)),
        cpu_idle=cpu_idle,
    )
    return Sampler(
        None, node, attribution=att, clock=lambda: clock[0], wall_clock=lambda: 1000 + clock[0]
    ), clock


def run(sampler: Sampler, node: Node, clock: list[float], load: list[tuple[int, int]]) -> None:
    sampler.tick()
    for proc, kernel in load:
        node.second(proc, kernel)
        clock[0] += 1.0
        sampler.tick()


def process_j(sampler: Sampler) -> float:
    return math.fsum(p.energy_j_total for p in sampler.snapshot.cpu_processes)


def assert_conserved(sampler: Sampler) -> None:
    snap = sampler.snapshot
    total = math.fsum(c.energy_j_total for c in snap.cpus)
    parts = math.fsum([process_j(sampler), *(c.unattributed_energy_j_total for c in snap.cpus)])
    assert parts == pytest.approx(total, rel=1e-12)


# The reviewed case: 10 ms of CPU per second (1 tick at 100 Hz) on an idle 220 W node, with the
# kernel's own tick; now and then the process does a little more.
TINY = [(1 if k % 10 else 3, 1) for k in range(300)]


def test_tiny_process_on_an_idle_node_is_charged_its_activity_not_the_idle_package(tmp_path: Path) -> None:
    node = Node(tmp_path / "proc")
    sampler, clock = sampler_for(tmp_path, node, CpuIdlePolicy())  # idle power learned per domain
    run(sampler, node, clock, TINY)
    charged = process_j(sampler)
    total = math.fsum(c.energy_j_total for c in sampler.snapshot.cpus)
    # Split whole by CPU time it would pay about half of everything (1 of 2 busy ticks): ~33 kJ.
    whole = math.fsum((node.energy[d] / len(TINY)) * p / (p + k) for d in node.energy for p, k in TINY)
    assert whole > 30_000
    assert 0 <= charged <= node.truth_active_j * 1.0001  # never more than the activity it caused
    assert charged < 1e-4 * total
    # The idle power stays at node level, in each domain's own unattributed counter.
    by_domain = {c.reading.package: c for c in sampler.snapshot.cpus}
    assert by_domain["package-0"].unattributed_energy_j_total >= 200.0 * len(TINY)
    assert by_domain["package-0-dram"].unattributed_energy_j_total >= 20.0 * len(TINY)
    assert_conserved(sampler)


def test_configured_idle_watts_per_domain_split_only_the_active_part(tmp_path: Path) -> None:
    # Busier: the process uses 16 CPUs' worth, the kernel 4. Package 200 W idle + 100 W x u,
    # DRAM 20 W idle + 10 W x u, each domain with its own configured idle power.
    load = [(1600, 400)] * 30
    node = Node(tmp_path / "proc")
    policy = CpuIdlePolicy(package_watts=200.0, dram_watts=20.0)
    sampler, clock = sampler_for(tmp_path, node, policy)
    run(sampler, node, clock, load)
    u = 2000 / CLK_TCK / CPUS
    share = 1600 / 2000
    assert process_j(sampler) == pytest.approx((100.0 * u + 10.0 * u) * share * 30, rel=1e-9)
    by_domain = {c.reading.package: c for c in sampler.snapshot.cpus}
    # Each domain keeps its own idle power and the kernel's share of its own activity.
    assert by_domain["package-0"].unattributed_energy_j_total == pytest.approx(
        (200.0 + 100.0 * u * (1 - share)) * 30, rel=1e-9
    )
    assert by_domain["package-0-dram"].unattributed_energy_j_total == pytest.approx(
        (20.0 + 10.0 * u * (1 - share)) * 30, rel=1e-9
    )
    assert_conserved(sampler)


def test_dram_is_split_on_its_own_not_pooled_with_the_package(tmp_path: Path) -> None:
    # DRAM's configured idle power is above what it draws: none of DRAM's energy reaches the
    # process, while the package's active part still does. Pooled, the package's activity would
    # have been eaten by DRAM's excess idle figure.
    load = [(3200, 0)] * 10
    node = Node(tmp_path / "proc", package=(100.0, 200.0), dram=(15.0, 0.0))
    sampler, clock = sampler_for(tmp_path, node, CpuIdlePolicy(package_watts=100.0, dram_watts=40.0))
    run(sampler, node, clock, load)
    u = 3200 / CLK_TCK / CPUS
    assert process_j(sampler) == pytest.approx(200.0 * u * 10, rel=1e-9)
    dram = next(c for c in sampler.snapshot.cpus if c.reading.package == "package-0-dram")
    assert dram.unattributed_energy_j_total == pytest.approx(dram.energy_j_total, rel=1e-12)
    assert_conserved(sampler)


def test_spread_mode_splits_idle_power_by_cpu_share_too(tmp_path: Path) -> None:
    node = Node(tmp_path / "proc")
    sampler, clock = sampler_for(tmp_path, node, CpuIdlePolicy(mode="spread", package_watts=200.0))
    run(sampler, node, clock, [(1, 1)] * 20)
    # Everything by CPU share: half of each second's energy (1 of 2 busy ticks), from the very
    # first interval (the CPU times' baseline is read on the first tick).
    assert process_j(sampler) == pytest.approx(math.fsum(node.energy.values()) / 2, rel=1e-9)
    assert_conserved(sampler)
