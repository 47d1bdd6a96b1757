"""A simulated GPU fleet with a realistic, changing AI workload, deterministic under a seed."""

from __future__ import annotations

import math
import random
import time
import uuid
from dataclasses import dataclass

from exporter.model import GpuProcessSample, GpuReading

GPU_NAME = "NVIDIA H100 80GB HBM3"
MEM_TOTAL = 85_899_345_920
POWER_LIMIT_W = 700.0
IDLE_W = 72.0
NAMESPACES = ("ml-training", "inference", "research")
USERS = ("alice", "bob", "carol", "dave")


@dataclass(frozen=True, slots=True)
class _Proc:
    pid: int
    comm: str
    user: str
    weight: float  # share of the GPU's busy SMs
    mem_bytes: int
    cgroup: str
    pod_uid: str
    pod_name: str
    namespace: str


@dataclass(frozen=True, slots=True)
class _Phase:
    kind: str  # training, inference, idle
    start: float
    end: float
    base_w: float
    util: float
    procs: tuple[_Proc, ...]


class SimulatedGpuSource:
    """N simulated H100s: training jobs near the power limit, bursty inference, idle gaps.

    Every value is a pure function of (seed, GPU index, time since the first read), so two
    exporters with the same seed serve the same fleet. Processes carry cgroup paths of Kubernetes
    pods (containerd), Slurm jobs and plain docker containers so attribution has real identities.
    """

    name = "simulated"

    def __init__(self, count: int = 4, seed: int = 0, wall_clock: float | None = None) -> None:
        self.count = count
        self.seed = seed
        self._wall_start = time.time() if wall_clock is None else wall_clock
        self._t0: float | None = None
        rng = random.Random(seed)
        self._uuids = [f"GPU-{uuid.UUID(int=rng.getrandbits(128), version=4)}" for _ in range(count)]
        self._rngs = [random.Random(seed * 7919 + i) for i in range(count)]
        self._phases: list[list[_Phase]] = [[] for _ in range(count)]
        self._energy = [0.0] * count
        self._last_t: float | None = None
        self._last_power = [0.0] * count
        self._pods: dict[str, tuple[str, str]] = {}

    def pods(self) -> dict[str, tuple[str, str]]:
        """Pod UID -> (name, namespace) of every simulated pod so far, as a kubelet would list them."""
        return dict(self._pods)

    def _phase_at(self, i: int, t: float) -> _Phase:
        phases = self._phases[i]
        while not phases or phases[-1].end <= t:
            start = phases[-1].end if phases else 0.0
            phases.append(self._new_phase(i, len(phases), start))
            if len(phases) > 64:  # keep memory bounded on long runs
                del phases[:32]
        for phase in reversed(phases):
            if phase.start <= t:
                return phase
        return phases[0]

    def _new_phase(self, i: int, n: int, start: float) -> _Phase:
        rng = self._rngs[i]
        # GPU 0 of every fleet starts busy so a fresh exporter shows attribution at once.
        kind = (
            "training"
            if n == 0 and i % 2 == 0
            else rng.choices(("training", "inference", "idle"), weights=(0.45, 0.4, 0.15))[0]
        )
        if kind == "training":
            length, base, util = rng.uniform(120, 600), rng.uniform(590, 670), rng.uniform(0.9, 0.99)
            shares = [1.0]
            comms = ["python"]
        elif kind == "inference":
            length, base, util = rng.uniform(60, 300), rng.uniform(180, 330), rng.uniform(0.35, 0.7)
            k = rng.randint(2, 3)
            raw = [rng.uniform(0.5, 3.0) for _ in range(k)]
            shares = [r / sum(raw) for r in raw]
            comms = ["tritonserver", "vllm", "python"][:k]
        else:
            length, base, util, shares, comms = rng.uniform(20, 120), IDLE_W, 0.0, [], []
        procs = []
        for k, (share, comm) in enumerate(zip(shares, comms, strict=True)):
            pid = 20000 + i * 1000 + (n * 5 + k) % 1000
            procs.append(self._new_proc(rng, i, n, k, pid, comm, share, kind))
        return _Phase(kind, start, start + length, base, util, tuple(procs))

    def _new_proc(
        self, rng: random.Random, i: int, n: int, k: int, pid: int, comm: str, share: float, kind: str
    ) -> _Proc:
        user = USERS[rng.randrange(len(USERS))]
        container = f"{rng.getrandbits(256):064x}"
        pod_uid, pod_name, namespace = "", "", ""
        style = rng.random()
        if kind == "training" and style < 0.35:
            job = 100000 + self.seed * 1000 + i * 50 + n
            cgroup = f"0::/system.slice/slurmstepd.scope/job_{job}/step_0/user/task_{k}"
        elif style < 0.9:
            pod_uid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            namespace = NAMESPACES[0] if kind == "training" else NAMESPACES[1 + rng.randrange(2)]
            pod_name = f"{'trainer' if kind == 'training' else comm}-{pod_uid[:5]}"
            slice_uid = pod_uid.replace("-", "_")
            cgroup = (
                f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{slice_uid}.slice/"
                f"cri-containerd-{container}.scope"
            )
            self._pods[pod_uid] = (pod_name, namespace)
        else:
            cgroup = f"0::/system.slice/docker-{container}.scope"
        mem = int(MEM_TOTAL * (rng.uniform(0.6, 0.9) if kind == "training" else rng.uniform(0.05, 0.25)))
        return _Proc(pid, comm, user, share, mem, cgroup, pod_uid, pod_name, namespace)

    def _power(self, i: int, phase: _Phase, t: float) -> tuple[float, float]:
        """(watts, utilisation) at time t: smooth swings plus inference bursts, never above the limit."""
        if phase.kind == "idle":
            return IDLE_W + 3.0 * math.sin(t / 7.0 + i), 0.0
        if phase.kind == "training":
            # Step-like dips every ~40 s mimic data loading / checkpoint pauses.
            dip = 0.55 if (t + 13 * i) % 41.0 < 2.0 else 1.0
            watts = phase.base_w * dip + 18.0 * math.sin(t / 5.0 + i)
            return min(POWER_LIMIT_W, watts), phase.util * dip
        burst = max(0.0, math.sin(t / 3.0 + 2 * i)) ** 4
        watts = phase.base_w + 220.0 * burst + 10.0 * math.sin(t / 1.7)
        return min(POWER_LIMIT_W, watts), min(1.0, phase.util * (0.6 + 0.6 * burst))

    def read(self, now: float) -> list[GpuReading]:
        if self._t0 is None:
            self._t0 = now
        t = now - self._t0
        readings = []
        for i in range(self.count):
            phase = self._phase_at(i, t)
            watts, util = self._power(i, phase, t)
            if self._last_t is not None and t > self._last_t:
                self._energy[i] += (self._last_power[i] + watts) / 2.0 * (t - self._last_t)
            self._last_power[i] = watts
            used = sum(p.mem_bytes for p in phase.procs) + 600_000_000
            procs = tuple(
                GpuProcessSample(
                    pid=p.pid,
                    comm=p.comm,
                    user=p.user,
                    sm_util=round(util * p.weight, 4),
                    used_memory_bytes=p.mem_bytes,
                    cgroup=p.cgroup,
                    start_time=self._wall_start + phase.start,
                )
                for p in phase.procs
            )
            readings.append(
                GpuReading(
                    index=i,
                    uuid=self._uuids[i],
                    name=GPU_NAME,
                    driver_version="550.90.07",
                    pci_bus_id=f"00000000:{0x18 + i * 0x10:02X}:00.0",
                    power_w=round(watts, 3),
                    energy_j=self._energy[i],
                    util=round(util, 4),
                    mem_used_bytes=used,
                    mem_total_bytes=MEM_TOTAL,
                    temp_c=round(32.0 + watts * 0.055, 1),
                    power_limit_w=POWER_LIMIT_W,
                    processes=procs,
                )
            )
        self._last_t = t
        return readings

    def close(self) -> None:
        pass
