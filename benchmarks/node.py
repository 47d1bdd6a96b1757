"""Node (BMC) source benchmark: polling cost per poll and node-energy accuracy against a known truth.

``python -m benchmarks.node [--polls N] [--output FILE]`` prints a Markdown report and writes it to
``benchmarks/results/node.md``. Polling cost is measured against the fake Redfish service of the tests
(loopback HTTPS, same process) and the fake ipmitool; accuracy runs the real integrator on readings taken
from the fake's power profile every 10 s, against the profile's exact integral. The sampler's tick cost
with the unmetered energy spread over processes (--attribution.node-unmetered=spread) is set against
keeping it at node level, on the scale benchmark's fake GPUs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.fakes import ConstantCpuSource, FakeClock, ScaledGpuSource, attribution_for
from exporter.carbon.config import CarbonConfig
from exporter.carbon.service import CarbonService
from exporter.ledger import ProcessLedger
from exporter.model import NodeReading
from exporter.node_power import NodeEnergyIntegrator, NodePoller
from exporter.sampler import Sampler
from exporter.sources.bmc_credentials import BmcCredentials
from exporter.sources.ipmi import IpmitoolDcmiSource
from exporter.sources.redfish import RedfishClient, RedfishNodeSource
from tests.fake_redfish import FakeBmc, Profile, dell_legacy, dmtf_modern, hgx, hpe_trailing_slash, psu_only

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES: dict[str, Callable[[FakeBmc], None]] = {
    "Dell-style Power/PowerControl": dell_legacy,
    "HPE-style Power (trailing /)": hpe_trailing_slash,
    "DMTF PowerSubsystem + energy sensor": dmtf_modern,
    "EnvironmentMetrics power + EnergykWh": lambda bmc: dmtf_modern(bmc, energy_in_environment=True),
    "PowerSubsystem supplies only": psu_only,
    "NVIDIA HGX (host + baseboard)": hgx,
}


@dataclass
class Cost:
    shape: str
    discovery_requests: int
    requests_per_poll: float
    cpu_ms_per_poll: float  # median, this thread
    wall_ms_per_poll: float  # median, loopback
    child_cpu_ms_per_poll: float | None = None


def redfish_costs(polls: int) -> list[Cost]:
    os.environ.setdefault("FOOTPRINT_REDFISH_USERNAME", "monitor")
    os.environ.setdefault("FOOTPRINT_REDFISH_PASSWORD", "s3cret-Pw")
    creds = BmcCredentials("FOOTPRINT_REDFISH_USERNAME", "FOOTPRINT_REDFISH_PASSWORD")
    out = []
    for name, build in SHAPES.items():
        with tempfile.TemporaryDirectory() as tmp:
            bmc = FakeBmc(Path(tmp))
            build(bmc)
            src = RedfishNodeSource(RedfishClient(bmc.url, creds, ca_file=bmc.ca_file, timeout_s=5.0))
            src.read()  # login, discovery and the first read
            first = src.requests_total()
            cpu, wall, requests = [], [], []
            for _ in range(polls):
                before, c0, w0 = src.requests_total(), time.thread_time(), time.perf_counter()
                src.read()
                cpu.append(time.thread_time() - c0)
                wall.append(time.perf_counter() - w0)
                requests.append(src.requests_total() - before)
            src.close()
            bmc.close()
        discovery = first - round(statistics.mean(requests))  # the first read's own requests aside
        out.append(
            Cost(
                name,
                discovery,
                statistics.mean(requests),
                1000 * statistics.median(cpu),
                1000 * statistics.median(wall),
            )
        )
    return out


def ipmi_cost(polls: int) -> Cost:
    fake = Path(__file__).resolve().parent.parent / "tests" / "fake_ipmitool.py"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ipmitool"
        path.write_text(fake.read_text().replace("#!/usr/bin/env python3", f"#!{sys.executable}", 1))
        path.chmod(0o755)
        scenario = {"mode": "activated", "base_w": 1500.0, "amp_w": 0.0, "period_s": 600.0, "t0": time.time()}
        path.with_suffix(".json").write_text(json.dumps(scenario))
        src = IpmitoolDcmiSource(str(path))
        cpu, wall, child = [], [], []
        for _ in range(polls):
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            c0, w0 = time.thread_time(), time.perf_counter()
            src.read()
            cpu.append(time.thread_time() - c0)
            wall.append(time.perf_counter() - w0)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            child.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
    return Cost(
        "IPMI DCMI (fake ipmitool, a Python script)",
        0,
        1.0,
        1000 * statistics.median(cpu),
        1000 * statistics.median(wall),
        1000 * statistics.median(child),
    )


@dataclass
class Accuracy:
    profile: str
    method: str
    hours: float
    truth_kwh: float
    error_pct: float


class SquareWave(Profile):
    """Power alternating between base+amp and base-amp every half period (exact integral)."""

    def __init__(self, half: float, base: float, amp: float) -> None:
        super().__init__(base, 0.0, 1.0)
        self.half, self.amp = half, amp

    def power(self, t: float) -> float:
        return self.base_w + (self.amp if int(t // self.half) % 2 == 0 else -self.amp)

    def energy(self, t: float) -> float:
        full = int(t // (2 * self.half))
        rest = t - full * 2 * self.half
        high = min(rest, self.half)
        low = max(0.0, rest - self.half)
        return self.base_w * t + self.amp * (high - low)


# Profiles of a GPU node's input power (watts, seconds).
PROFILES: dict[str, Profile] = {
    "steady 1.8 kW, 600 W swing over 15 min": Profile(1800.0, 600.0, 900.0),
    "training steps (+2.4 kW at 333 s, -1.9 kW at 1234 s)": Profile(
        1800.0, 600.0, 900.0, [(333.0, 2400.0), (1234.0, -1900.0)]
    ),
    "bursty: 3 kW +/- 1.5 kW, switching every 7 s": SquareWave(7.0, 3000.0, 1500.0),
}


def accuracy(hours: float = 2.0, poll_s: float = 10.0) -> list[Accuracy]:
    out = []
    for name, profile in PROFILES.items():
        duration = hours * 3600.0
        truth = profile.energy(duration) - profile.energy(0.0)
        for method, resolution in (
            ("power only (trapezoid)", None),
            ("counter, 1 Wh", 3600.0),
            ("counter, 1 kWh", 3.6e6),
        ):
            integrator = NodeEnergyIntegrator(max_gap_s=3.5 * poll_s)
            steps = int(duration / poll_s)
            for k in range(steps + 1):
                t = k * poll_s
                power = round(profile.power(t))
                counter = None
                if resolution is not None:
                    counter = math.floor((4321 * 3.6e6 + profile.energy(t)) / resolution) * resolution
                integrator.update(t, counter, power)
            out.append(
                Accuracy(name, method, hours, truth / 3.6e6, 100.0 * (integrator.total_j - truth) / truth)
            )
    return out


@dataclass
class SpreadCost:
    size: str
    mode: str  # "node" or "spread"
    median_ms: float  # sampler tick, median
    mean_ms: float  # including the ticks that close a node interval (one in ten)
    unmetered_j: float
    unmetered_unattributed_j: float


class _SteadyBmc:
    name = "redfish"

    def read(self) -> NodeReading:
        return NodeReading(12_000.0)

    def close(self) -> None:
        pass


def spread_cost(gpus: int, processes: int, ticks: int = 600) -> list[SpreadCost]:
    """Tick cost with the unmetered energy kept at node level and spread, the BMC read every 10 ticks
    half-way between two (so every node interval takes parts of two ticks); best of two runs each."""
    out = []
    for mode in ("node", "spread"):
        runs = []
        for _ in range(2):
            with tempfile.TemporaryDirectory(prefix="bench-procfs-") as procfs:
                clock, wall = FakeClock(1000.0), FakeClock(1_700_000_000.0)
                source = ScaledGpuSource(gpus, processes)
                att = attribution_for(source.list_pods, procfs)
                att.node_ledger = ProcessLedger("pid", 500, 600.0) if mode == "spread" else None
                poller = NodePoller(_SteadyBmc(), interval_s=10.0, clock=clock)
                carbon = CarbonService(CarbonConfig(zone="DE", pue=1.2), clock=wall)
                sampler = Sampler(
                    source, ConstantCpuSource(), carbon, att, clock=clock, wall_clock=wall, node=poller
                )
                sampler.tick()
                times = []
                for i in range(ticks):
                    clock.t += 1.0
                    wall.t += 1.0
                    if i % 10 == 5:
                        clock.t += 0.5
                        poller.poll_once()
                        clock.t -= 0.5
                    started = time.perf_counter()
                    sampler.tick()
                    times.append(time.perf_counter() - started)
                node = sampler.snapshot.node
                assert node is not None
                steady = times[len(times) // 10 :]
                runs.append(
                    (
                        statistics.median(steady) * 1e3,
                        statistics.fmean(steady) * 1e3,
                        node.unmetered_energy_j_total,
                        node.unmetered_unattributed_j_total,
                    )
                )
        median_ms, mean_ms, unmetered, rest = min(runs)
        out.append(
            SpreadCost(
                f"{gpus} GPUs x {processes} processes",
                mode,
                median_ms,
                mean_ms,
                unmetered,
                unmetered if rest is None else rest,
            )
        )
    return out


def render(
    costs: Sequence[Cost], acc: Sequence[Accuracy], polls: int, spread: Sequence[SpreadCost] = ()
) -> str:
    lines = [
        "# Node (BMC) source benchmark",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {polls} polls per shape, "
        f"{os.cpu_count()} cores.",
        "",
        "## Polling cost (fake BMC on loopback HTTPS in the same process; session authentication)",
        "",
        "| BMC shape | discovery requests (once an hour) | requests per poll | CPU per poll, median "
        "| wall per poll, median (loopback) |",
        "|---|---|---|---|---|",
    ]
    for c in costs:
        extra = (
            f" (+{c.child_cpu_ms_per_poll:.1f} ms in ipmitool)" if c.child_cpu_ms_per_poll is not None else ""
        )
        cells = (
            c.shape,
            c.discovery_requests,
            f"{c.requests_per_poll:g}",
            f"{c.cpu_ms_per_poll:.2f} ms{extra}",
        )
        lines.append("| " + " | ".join(map(str, cells)) + f" | {c.wall_ms_per_poll:.1f} ms |")
    lines += [
        "",
        "## Node energy against the truth (readings every 10 s, power in whole watts)",
        "",
        "| power profile | method | hours | truth, kWh | error |",
        "|---|---|---|---|---|",
    ]
    for a in acc:
        lines.append(f"| {a.profile} | {a.method} | {a.hours:g} | {a.truth_kwh:.3f} | {a.error_pct:+.3f}% |")
    if spread:
        lines += [
            "",
            "## Sampler tick with the unmetered energy at node level or spread (BMC read every 10 ticks)",
            "",
            "| size | --attribution.node-unmetered | tick, median | tick, mean | vs node, mean |",
            "|---|---|---|---|---|",
        ]
        base = {c.size: c.mean_ms for c in spread if c.mode == "node"}
        for c in spread:
            lines.append(
                f"| {c.size} | {c.mode} | {c.median_ms:.2f} ms | {c.mean_ms:.2f} ms | "
                f"{c.mean_ms / base[c.size]:.2f}x |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.node", description=__doc__)
    parser.add_argument("--polls", type=int, default=200)
    parser.add_argument("--output", type=Path, default=RESULTS / "node.md")
    args = parser.parse_args(argv)
    costs = [*redfish_costs(args.polls), ipmi_cost(min(args.polls, 50))]
    spread = [*spread_cost(8, 10), *spread_cost(8, 200)]
    text = render(costs, accuracy(), args.polls, spread)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
