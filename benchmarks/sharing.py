"""Attribution error per GPU sharing mode, against the known truth of a simulated GPU.

A GPU is simulated in 10 ms steps: which process's kernels run, how many SMs they occupy, what the
board draws. The fake NVML of the tests (tests/fake_pynvml.py: NVML's documented sampling behaviour,
with what the docs leave open as a real H200 showed it) is driven with that state, and the real
NvmlGpuSource, attribution and sampler read it, ticking every second with +-50 ms of jitter. Their
per-process energy is compared with the truth, which each mode defines (see ``Scenario.truth`` and
docs/attribution.md):

- time-slicing: the contract applied with perfect knowledge: each of the exporter's intervals' energy
  goes to the processes in proportion to their true busy time in it (the time slicer shares the GPU
  equally among the processes that have work); intervals in which no kernel ran are shared by busy
  time over the run. With ``physical`` truth, step by step each process gets its kernels' own power
  above idle, and the idle floor by busy time: what utilisation cannot see when processes draw
  different power.
- MPS: clients run at the same time; as time-slicing, with SM-time (SM fraction x time) for busy time.
- MIG: the contract with perfect knowledge: each instance's processes get the interval's energy x the
  instance's share of the SMs x the instance's busy fraction of the interval; the rest is
  unattributed. NVML measures no activity per instance, so the exporter charges an occupied instance
  its whole share: exact for a busy instance, too much for a half-busy one.
"""

from __future__ import annotations

import math
import random
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.fakes import FakeClock, attribution_for
from exporter.sampler import Sampler
from exporter.sources.nvml import NvmlGpuSource

# The NVML fake lives with the tests; the benchmark drives the same one.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fake_pynvml import FakeGpu, FakeMigInstance, FakeNvml, FakeProcess

STEP_S = 0.01
STEPS_PER_TICK = 100
JITTER_STEPS = 5
MONO0 = 1000.0
WALL0 = 1_700_000_000.0
TIME_SLICING_TARGET_PCT = 5.0
# A process whose true share is below this (an idle holder) is judged by the share it got instead.
IDLE_SHARE_TARGET_PCT = 1.0
MIG_BOARD_SMS = 108
MIG_CAPACITY_SMS = 98  # the 7g profile of an A100: what MIG hands out
MPS_SERVER_PID = 4000


@dataclass(frozen=True)
class Job:
    """One process holding the GPU and its work pattern: busy ``duty`` of every ``cycle_s``."""

    pid: int
    label: str
    duty: float = 0.0
    cycle_s: float = 1.0
    phase_s: float = 0.0
    dyn_w: float = 300.0  # board power above idle while its kernels run on all SMs
    sm_fraction: float = 1.0  # MPS: the SMs its kernels occupy
    instance: tuple[int, int] | None = None  # MIG: (GPU instance id, its SMs)
    until_s: float | None = None  # stops computing then, keeps holding the GPU

    def working(self, step: int) -> bool:
        if self.duty <= 0 or (self.until_s is not None and step >= round(self.until_s / STEP_S)):
            return False
        cycle = round(self.cycle_s / STEP_S)
        return (step - round(self.phase_s / STEP_S)) % cycle < round(self.duty * cycle)


@dataclass(frozen=True)
class Scenario:
    mode: str  # "time-slicing", "MPS", "MIG"
    name: str
    jobs: tuple[Job, ...]
    nvml_period_s: float = 0.2  # what an H200 showed
    idle_w: float = 80.0
    truth: str = "utilisation"  # time-slicing only: "utilisation" or "physical"
    mps_samples: str = "clients"
    sample_draw: str = "even"
    target: bool = False  # the time-slicing target applies


@dataclass(frozen=True)
class SharingResult:
    mode: str
    scenario: str
    process: str
    truth_j: float
    measured_j: float
    truth_share: float  # of the GPU's energy, 0-1
    measured_share: float
    error_pct: float | None  # relative to the truth; None when the truth is 0
    target: str
    holds: bool | None


def scenarios(duration_s: float) -> list[Scenario]:
    half = duration_s / 2
    four = (
        Job(101, "A 80%", 0.8, 5.0),
        Job(102, "B 50%", 0.5, 2.0, 0.3),
        Job(103, "C 25%", 0.25, 0.4, 0.1),
        Job(104, "D 10%", 0.1, 7.0, 2.0),
    )
    gi = {"3g": (1, 42), "2g": (2, 28), "1g-a": (3, 14), "1g-b": (4, 14)}
    return [
        Scenario(
            "time-slicing",
            "2 processes, duty 90% and 30%",
            (Job(101, "A 90%", 0.9, 4.0), Job(102, "B 30%", 0.3, 1.5, 0.2)),
            target=True,
        ),
        Scenario(
            "time-slicing",
            "4 processes, duty 80/50/25/10%",
            four,
            target=True,
        ),
        Scenario(
            "time-slicing",
            "4 processes, NVML samples every 1 s",
            four,
            nvml_period_s=1.0,
            target=True,
        ),
        Scenario(
            "time-slicing",
            "90/10, NVML samples every 2 s (sparse)",
            (Job(101, "A 90%", 0.9, 0.1), Job(102, "B 10%", 0.1, 0.1, 0.09)),
            nvml_period_s=2.0,
            target=True,
        ),
        Scenario(
            "time-slicing",
            "4 processes, NVML samples every 2 s (sparse)",
            four,
            nvml_period_s=2.0,
            target=True,
        ),
        Scenario(
            "time-slicing",
            "4 processes, each sampling moment drawn at random",
            four,
            sample_draw="random",
            target=True,
        ),
        Scenario(
            "time-slicing",
            "idle process holding the GPU",
            (Job(101, "A 60%", 0.6, 2.0), Job(102, "holder (idle)")),
            target=True,
        ),
        Scenario(
            "time-slicing",
            "one process stops computing halfway, keeps holding",
            (Job(101, "A 70%", 0.7, 3.0), Job(102, "B 50%, then idle", 0.5, 2.0, 0.5, until_s=half)),
            target=True,
        ),
        Scenario(
            "time-slicing",
            "unequal power draw, 450 W and 150 W above idle (physical truth)",
            (
                Job(101, "A 50%, 450 W", 0.5, 1.0, dyn_w=450.0),
                Job(102, "B 50%, 150 W", 0.5, 1.0, 0.5, dyn_w=150.0),
            ),
            truth="physical",
        ),
        Scenario(
            "MIG", "one busy job on one of seven 1g slices", (Job(101, "1g job 100%", 1.0, instance=(3, 14)),)
        ),
        Scenario(
            "MIG",
            "3g busy, 2g at 50%, 1g idle holder, 1g empty",
            (
                Job(101, "3g 100%", 1.0, instance=gi["3g"]),
                Job(102, "2g 50%", 0.5, 2.0, instance=gi["2g"]),
                Job(103, "1g holder (idle)", instance=gi["1g-a"]),
            ),
        ),
        Scenario(
            "MPS",
            "clients sampled, same SM footprint, duty 80% and 40%",
            (
                Job(101, "A 80%", 0.8, 2.0, sm_fraction=0.5),
                Job(102, "B 40%", 0.4, 3.0, 0.5, sm_fraction=0.5),
            ),
        ),
        Scenario(
            "MPS",
            "clients sampled, always busy, SM footprint 75% and 25%",
            (
                Job(101, "A 75% of SMs", 1.0, sm_fraction=0.75),
                Job(102, "B 25% of SMs", 1.0, sm_fraction=0.25),
            ),
        ),
        Scenario(
            "MPS",
            "work sampled under the MPS server, duty 80% and 20%",
            (
                Job(101, "A 80%", 0.8, 2.0, sm_fraction=0.5),
                Job(102, "B 20%", 0.2, 2.0, 1.0, sm_fraction=0.5),
            ),
            mps_samples="server",
        ),
    ]


def _step(sc: Scenario, step: int) -> tuple[float, list[float], list[float], list[float]]:
    """One 10 ms step: board power, each job's SM busy percent (what NVML samples), truth weights,
    and for MIG each job's contract share of the step's energy."""
    working = [j.working(step) for j in sc.jobs]
    n = len(sc.jobs)
    util, weights, mig = [0.0] * n, [0.0] * n, [0.0] * n
    power = sc.idle_w
    if sc.mode == "time-slicing":
        running = sum(working)
        for i, (job, on) in enumerate(zip(sc.jobs, working, strict=True)):
            if on:
                busy = 1.0 / running  # the time slicer shares the step among those with work
                util[i] = 100.0 * busy
                power += busy * job.dyn_w
                weights[i] = busy * job.dyn_w if sc.truth == "physical" else busy
    elif sc.mode == "MPS":
        demand = sum(j.sm_fraction for j, on in zip(sc.jobs, working, strict=True) if on)
        scale = 1.0 / max(1.0, demand)
        for i, (job, on) in enumerate(zip(sc.jobs, working, strict=True)):
            if on:
                util[i] = 100.0
                power += job.dyn_w * job.sm_fraction * scale
                weights[i] = job.sm_fraction * scale
    else:
        for i, (job, on) in enumerate(zip(sc.jobs, working, strict=True)):
            assert job.instance is not None
            share = job.instance[1] / MIG_CAPACITY_SMS
            if on:
                util[i] = 100.0
                power += job.dyn_w * share
                mig[i] = share
    return power, util, weights, mig


class _Truth:
    """The truth of one scenario, built step by step and closed at each of the exporter's ticks.

    ``utilisation`` (time-slicing, MPS, MIG): the contract applied with perfect knowledge. Each of the
    exporter's intervals' energy goes to the processes in proportion to their true busy time in it
    (MPS: SM-time; MIG: the instance's share of the SMs x its busy fraction of the interval, the rest
    unattributed); intervals in which no kernel ran at all are shared by busy time over the run.
    ``physical`` (time-slicing): step by step, each process gets its kernels' own power above idle,
    and the idle floor by its share of the step's busy time; steps in which no kernel ran are shared
    by busy time over the run.
    """

    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        n = len(sc.jobs)
        self.joules = [0.0] * n
        self.busy = [0.0] * n  # truth weights summed over the run: who pays for idle time
        self.idle_pool = 0.0
        self.interval_j = 0.0
        self.interval_w = [0.0] * n
        self.interval_steps = 0

    def add(self, power: float, weights: list[float], mig: list[float]) -> None:
        energy = power * STEP_S
        total_w = math.fsum(weights)
        if self.sc.truth == "physical":
            if total_w <= 0:
                self.idle_pool += energy
                return
            all_busy = math.fsum(w / j.dyn_w for w, j in zip(weights, self.sc.jobs, strict=True))
            for i, w in enumerate(weights):
                self.busy[i] += w / self.sc.jobs[i].dyn_w
                # Its kernels' own power above idle, and the idle floor by its share of the time.
                self.joules[i] += (
                    w * STEP_S + self.sc.idle_w * STEP_S * (w / self.sc.jobs[i].dyn_w) / all_busy
                )
            return
        self.interval_j += energy
        self.interval_steps += 1
        for i, w in enumerate(mig if self.sc.mode == "MIG" else weights):
            self.interval_w[i] += w

    def close_interval(self) -> None:
        """One of the exporter's ticks: the interval since the previous one is split."""
        if self.sc.truth == "physical" or not self.interval_steps:
            return
        energy, weights = self.interval_j, self.interval_w
        if self.sc.mode == "MIG":
            for i, w in enumerate(weights):
                self.joules[i] += energy * w / self.interval_steps  # share x busy fraction
        elif math.fsum(weights) > 0:
            total_w = math.fsum(weights)
            for i, w in enumerate(weights):
                self.joules[i] += energy * w / total_w
                self.busy[i] += w
        else:
            self.idle_pool += energy
        self.interval_j, self.interval_w, self.interval_steps = 0.0, [0.0] * len(weights), 0

    def finish(self) -> list[float]:
        out = list(self.joules)
        if self.idle_pool and self.sc.mode != "MIG":
            total_busy = math.fsum(self.busy)
            for i, b in enumerate(self.busy):
                out[i] += self.idle_pool * (b / total_busy if total_busy > 0 else 1.0 / len(out))
        return out


def _fake_gpu(sc: Scenario) -> FakeGpu:
    procs = [
        FakeProcess(
            j.pid,
            compute=sc.mode != "MPS",
            mps=sc.mode == "MPS",
            gpu_instance_id=j.instance[0] if j.instance else None,
            compute_instance_id=0 if j.instance else None,
        )
        for j in sc.jobs
    ]
    if sc.mode == "MPS":
        procs.insert(0, FakeProcess(MPS_SERVER_PID, mps_server=True))
    mig = None
    if sc.mode == "MIG":
        # Seven 1g-sized slots; the instances the scenario uses, the rest of the layout empty slices.
        used = {j.instance for j in sc.jobs if j.instance}
        mig = [FakeMigInstance(gi, sms) for gi, sms in sorted(used)]
        free = 7 - sum(sms // 14 for _, sms in used)
        mig += [FakeMigInstance(50 + k, 14) for k in range(free)]
    return FakeGpu(
        uuid="GPU-sharing-bench",
        power_w=sc.idle_w,
        energy_j=0.0,
        processes=procs,
        sample_period_s=sc.nvml_period_s,
        mps_samples=sc.mps_samples,
        sample_draw=sc.sample_draw,
        mig=mig,
        board_sm_count=MIG_BOARD_SMS,
        profile_sm_counts={0: 14, 1: 28, 2: 42, 4: MIG_CAPACITY_SMS} if mig else {},
    )


def _tick_steps(duration_s: float, seed: int) -> list[int]:
    rng = random.Random(seed)
    ticks = round(duration_s / (STEPS_PER_TICK * STEP_S))
    steps = [k * STEPS_PER_TICK + rng.randint(-JITTER_STEPS, JITTER_STEPS) for k in range(1, ticks)]
    return [*steps, ticks * STEPS_PER_TICK]


def run_scenario(sc: Scenario, duration_s: float, seed: int = 5) -> list[SharingResult]:
    gpu = _fake_gpu(sc)
    nvml = FakeNvml(gpus=[gpu])
    by_pid = {p.pid: p for p in gpu.processes}
    with tempfile.TemporaryDirectory(prefix="bench-sharing-") as procfs:
        server = Path(procfs) / str(MPS_SERVER_PID)
        server.mkdir()
        (server / "stat").write_text(f"{MPS_SERVER_PID} (nvidia-cuda-mps) S " + " ".join(["0"] * 40) + "\n")
        clock = FakeClock(MONO0)
        sampler = Sampler(
            NvmlGpuSource(nvml=nvml, procfs_root=procfs),
            None,
            None,
            attribution_for(None, procfs, retention_s=duration_s + 3600.0),
            clock=clock,
            wall_clock=FakeClock(WALL0),
        )
        sampler.tick()
        truth = _Truth(sc)
        ticks = _tick_steps(duration_s, seed)
        run_from, state = 0, None
        step = 0
        for tick in ticks:
            while step < tick:
                power, util, weights, mig = _step(sc, step)
                truth.add(power, weights, mig)
                if state != (power, util):
                    if step > run_from:
                        nvml.advance((step - run_from) * STEP_S)  # the previous state's run
                    run_from, state = step, (power, util)
                    gpu.power_w = power
                    for job, u in zip(sc.jobs, util, strict=True):
                        by_pid[job.pid].sm_util = u
                step += 1
            nvml.advance((step - run_from) * STEP_S)
            run_from = step
            clock.t = MONO0 + step * STEP_S
            sampler.tick()
            truth.close_interval()
    snap = sampler.snapshot
    measured = {int(p.pid): p.energy_j_total for p in snap.gpu_processes}
    gpu_energy = snap.gpus[0].energy_j_total
    truths = truth.finish()
    results = []
    for job, true_j in zip(sc.jobs, truths, strict=True):
        got = measured.get(job.pid, 0.0)
        true_share, got_share = true_j / gpu_energy, got / gpu_energy
        error = (got - true_j) / true_j * 100.0 if true_j > 0 else None
        holds: bool | None = None
        target = "-"
        if sc.target:
            if true_share * 100.0 >= IDLE_SHARE_TARGET_PCT:
                target = f"< {TIME_SLICING_TARGET_PCT:g}%"
                holds = error is not None and abs(error) < TIME_SLICING_TARGET_PCT
            else:
                target = f"share < {IDLE_SHARE_TARGET_PCT:g}%"
                holds = got_share * 100.0 < IDLE_SHARE_TARGET_PCT
        results.append(
            SharingResult(
                sc.mode, sc.name, job.label, true_j, got, true_share, got_share, error, target, holds
            )
        )
    return results


def run(quick: bool = False, only: Sequence[str] | None = None) -> list[SharingResult]:
    duration = 120.0 if quick else 600.0
    out: list[SharingResult] = []
    for sc in scenarios(duration):
        if only is None or sc.name in only:
            out += run_scenario(sc, duration)
    return out
