"""Each CPU energy domain over its own span: a domain whose reads fail for a while gets, at its next
reading, its energy over the whole gap, and its emissions, idle power and attribution follow that span."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.attribution import AttributionPolicy, CpuIdlePolicy, CpuTimeSince
from exporter.carbon.config import parse_carbon_config
from exporter.carbon.service import CarbonService
from exporter.ledger import ProcessLedger
from exporter.model import CpuReading, NodeReading
from exporter.node_power import NodePoller
from exporter.sampler import Attribution, Sampler
from exporter.workload import WorkloadResolver
from tests.test_carbon_market import DAY, HOUR, MARKET
from tests.test_node_power import Clock, ScriptedGpu, ScriptedSource

A = (101, 1.0)  # busy in the first five seconds
B = (202, 2.0)  # busy from the sixth on
KWH = 3.6e6


class Machine:
    """One CPU package whose power is 100 W idle + 40 W per busy CPU-second per second (RAPL counter),
    and its DRAM at a flat 10 W. Process A keeps one CPU busy up to t = 5, process B two CPUs after.
    The package's read fails (the domain is left out of the answer) at the seconds in ``failing``."""

    name = "rapl"
    cpu_count = 4

    def __init__(self, failing: range = range(0)) -> None:
        self.failing = failing
        self.package_j = 0.0
        self.last: float | None = None

    def usage(self, t: float) -> dict[tuple[int, float], float]:
        return {A: 1.0} if t <= 5 else {B: 2.0}

    def read(self, now: float) -> list[CpuReading]:
        if self.last is not None:
            busy = sum(self.usage(now).values())
            self.package_j += (100.0 + 40.0 * busy) * (now - self.last)
        self.last = now
        out = [CpuReading("package-0-dram", "rapl", 10.0 * now)]
        if int(now) not in self.failing:
            out.insert(0, CpuReading("package-0", "rapl", self.package_j))
        return out

    def close(self) -> None:
        pass


class Times:
    """ProcessCpuTimes as the sampler sees it: what each process used since the previous read."""

    def __init__(self, machine: Machine, clock: Clock) -> None:
        self.machine, self.clock, self.cpu_count = machine, clock, machine.cpu_count
        self.first = True

    def read(self) -> tuple[dict[tuple[int, float], tuple[float, str, str]], float]:
        if self.first:
            self.first = False
            return {}, 0.0
        used = self.machine.usage(self.clock.t)
        names = {A: "prep", B: "serve"}
        return {k: (s, names[k], "alice") for k, s in used.items()}, sum(used.values())


def market_carbon() -> CarbonService:
    service = CarbonService(
        parse_carbon_config(
            {
                "zone": "DE",
                "pue": 1.2,
                "providers": [{"type": "static", "grams_per_kwh": 380}],
                "market": MARKET,
            }
        )
    )
    service.refresh_now()
    return service


def machine_run(tmp_path: Path, failing: range, seconds: int = 7) -> Sampler:
    # Tick t at 07:59:56 + t UTC: t = 4 is 08:00, where the worked example's market factor falls from
    # 125 g/kWh (hour 7: half wind, half at the supplier's 250) to 25 g/kWh (hour 8: solar too).
    clock = Clock(0.0)
    machine = Machine(failing)
    att = Attribution(
        policy=AttributionPolicy(),
        resolver=WorkloadResolver(str(tmp_path)),
        gpu_ledger=ProcessLedger(),
        cpu_ledger=ProcessLedger(),
        cpu_times=Times(machine, clock),  # type: ignore[arg-type]
        cpu_idle=CpuIdlePolicy("unattributed", package_watts=100.0, dram_watts=10.0),
    )
    wall0 = DAY + 8 * HOUR - 4.0
    sampler = Sampler(None, machine, market_carbon(), att, clock=clock, wall_clock=lambda: wall0 + clock.t)
    for second in range(seconds):
        clock.t = float(second)
        sampler.tick()
    return sampler


def market_g(joules: float, g_per_kwh: float) -> float:
    return joules / KWH * g_per_kwh * 1.2


def test_a_domain_read_again_after_a_gap_is_split_by_the_cpu_time_of_the_gap(tmp_path: Path) -> None:
    # The package's reads fail at t = 3, 4, 5; at t = 6 its counter gives (2, 6]: 3 s at 140 W (A busy)
    # and 1 s at 180 W (B busy) = 600 J. Idle power over that span: 100 W x 4 s = 400 J; the 200 J of
    # activity split by the CPU time of (2, 6]: A 3 CPU-s, B 2 CPU-s -> A 120 J, B 80 J, which is what
    # each caused (40 J per CPU-second). Split by the last second's CPU time with one second's idle power,
    # as before, B got all 500 J above 100 J.
    sampler = machine_run(tmp_path, failing=range(3, 6))
    snap = sampler.snapshot
    package = {c.reading.package: c for c in snap.cpus}["package-0"]
    assert package.energy_j_total == pytest.approx(2 * 140.0 + 600.0)
    by_comm = {p.workload.comm: p.energy_j_total for p in snap.cpu_processes}
    # A: 40 J at t = 1 and 2, then 120 J; B: 80 J. The DRAM's 10 W is all idle.
    assert by_comm == pytest.approx({"prep": 80.0 + 120.0, "serve": 80.0}, rel=1e-9)
    assert package.unattributed_energy_j_total == pytest.approx(100.0 * 6, rel=1e-9)
    # Conservation over the domains.
    total = sum(c.energy_j_total for c in snap.cpus)
    unattributed = sum(c.unattributed_energy_j_total for c in snap.cpus)
    assert sum(by_comm.values()) + unattributed == pytest.approx(total, rel=1e-12)


def test_a_domain_read_again_after_a_gap_is_charged_the_factor_of_the_gap(tmp_path: Path) -> None:
    # Market factor by tick (t-1, t]: 125 g/kWh up to t = 4, 25 after. The package's (2, 6] spans
    # 2 s at 125 and 2 s at 25: 75 g/kWh for its 600 J (the tick's own 25 g/kWh was used before).
    sampler = machine_run(tmp_path, failing=range(3, 6))
    snap = sampler.snapshot
    cpus = {c.reading.package: c for c in snap.cpus}
    assert cpus["package-0"].market_emissions_g_total == pytest.approx(
        market_g(2 * 140.0, 125.0) + market_g(600.0, 75.0), rel=1e-9
    )
    # The DRAM domain was read every second: its own ticks' factors, 4 s at 125 and 2 s at 25.
    assert cpus["package-0-dram"].market_emissions_g_total == pytest.approx(
        market_g(40.0, 125.0) + market_g(20.0, 25.0), rel=1e-9
    )
    by_comm = {p.workload.comm: p.market_emissions_g_total for p in snap.cpu_processes}
    assert by_comm["prep"] == pytest.approx(market_g(80.0, 125.0) + market_g(120.0, 75.0), rel=1e-9)
    assert by_comm["serve"] == pytest.approx(market_g(80.0, 75.0), rel=1e-9)


def test_without_a_gap_the_domains_follow_the_ticks(tmp_path: Path) -> None:
    sampler = machine_run(tmp_path, failing=range(0))
    snap = sampler.snapshot
    by_comm = {p.workload.comm: p.energy_j_total for p in snap.cpu_processes}
    assert by_comm == pytest.approx({"prep": 5 * 40.0, "serve": 80.0}, rel=1e-9)
    package = {c.reading.package: c for c in snap.cpus}["package-0"]
    assert package.market_emissions_g_total == pytest.approx(
        market_g(4 * 140.0, 125.0) + market_g(140.0 + 180.0, 25.0), rel=1e-9
    )


def test_the_idle_learner_sees_the_gap_s_mean_power_not_its_sum(tmp_path: Path) -> None:
    sampler = machine_run(tmp_path, failing=range(3, 6))
    att = sampler.attribution
    assert att is not None
    learner = att.cpu_learners["package-0"]
    # Observed: 140 W at t = 1, 2, then 600 J / 4 s = 150 W; before, 600 J / 1 s = 600 W.
    assert learner.value == pytest.approx(140.0)
    assert max(p for _, p in learner._pairs) == pytest.approx(150.0)


def test_cpu_time_kept_for_a_gap_is_bounded() -> None:
    since = CpuTimeSince(max_span_s=30.0)
    usage = {(7, 1.0): (0.5, "x", "u")}
    since.add(0.0, {}, 0.0, ["package-0"])
    assert since.take("package-0", 0.0) == ({}, 0.0)
    for t in range(1, 100):
        since.add(float(t), usage, 0.5, ["package-0"])
    assert len(since._pending.get("package-0", [])) == 0  # let go past 30 s, not grown for 99 s
    assert since.take("package-0", 99.0) is None  # the gap's energy is not split
    since.add(100.0, usage, 0.5, ["package-0"])
    since.add(101.0, usage, 0.25, ["package-0"])
    assert since.take("package-0", 101.0) == ({(7, 1.0): (1.0, "x", "u")}, 0.75)


def test_a_node_interval_across_a_cpu_domain_gap_is_not_compared() -> None:
    # GPU 300 W, CPU package 40 W, DRAM 10 W; node 500 W read every 10 s at the ticks' seconds. The package
    # is left out of the answers at t = 9, 10, 11: [0, 10] misses its energy of (8, 10], and [10, 20] gets
    # it at t = 12 with (11, 12]. Neither is compared (both would be 80 J off); [20, 30] is: 1500 J.
    clock = Clock(0.0)
    poller = NodePoller(ScriptedSource([NodeReading(500.0)]), interval_s=10.0, clock=clock)

    class GappyCpu:
        name = "rapl"

        def read(self, now: float) -> list[CpuReading]:
            dram = CpuReading("package-0-dram", "rapl", 10.0 * now, 10.0)
            if 9 <= now <= 11:
                return [dram]
            return [CpuReading("package-0", "rapl", 40.0 * now, 40.0), dram]

        def close(self) -> None:
            pass

    sampler = Sampler(ScriptedGpu(), GappyCpu(), None, clock=clock, node=poller)
    for second in range(31):
        clock.t = float(second)
        if second % 10 == 0:
            poller.poll_once()
        sampler.tick()
    node = sampler.snapshot.node
    assert node is not None
    assert node.gaps_total == 2 and node.below_components_total == 0
    assert node.unmetered_energy_j_total == pytest.approx(1500.0)
    package = {c.reading.package: c for c in sampler.snapshot.cpus}["package-0"]
    assert package.energy_j_total == pytest.approx(40.0 * 30)  # the counter covers the gap
