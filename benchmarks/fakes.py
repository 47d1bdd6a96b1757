"""Scaled fake sources and a sampler wired like the real one, with no hardware, /proc or network access."""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from exporter.attribution import AttributionPolicy
from exporter.carbon.config import CarbonConfig
from exporter.carbon.service import CarbonService
from exporter.collector import SnapshotCollector
from exporter.ledger import ProcessLedger
from exporter.model import CpuReading, GpuProcessSample, GpuReading
from exporter.sampler import Attribution, Sampler
from exporter.workload import PodLister, WorkloadResolver

GPU_NAME = "NVIDIA H100 80GB HBM3"
NAMESPACES = ("ml-training", "inference", "research")


@dataclass
class FakeClock:
    """A clock the benchmark moves by hand, so every interval is exactly what it says."""

    t: float

    def __call__(self) -> float:
        return self.t


def _process(gpu: int, k: int, pods: dict[str, tuple[str, str]]) -> GpuProcessSample:
    """A process with a Kubernetes identity in its cgroup: the resolver parses it and never reads /proc."""
    pod_uid = str(uuid.UUID(int=(gpu << 64) | (k // 2 + 1), version=4))
    container = f"{gpu:032x}{k:032x}"
    pods[pod_uid] = (f"job-{gpu}-{k // 2}", NAMESPACES[k % len(NAMESPACES)])
    slice_uid = pod_uid.replace("-", "_")
    cgroup = (
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{slice_uid}.slice/"
        f"cri-containerd-{container}.scope"
    )
    return GpuProcessSample(
        pid=100_000 + gpu * 10_000 + k,
        comm="python",
        user=f"user{k % 8}",
        sm_util=0.05 + (k % 7) * 0.1,
        used_memory_bytes=1_000_000_000 + k,
        cgroup=cgroup,
        start_time=1_700_000_000.0 + k,
    )


class ScaledGpuSource:
    """``gpus`` GPUs sharing ``processes`` processes (spread evenly); every read costs almost nothing.

    Processes are built once, so what a tick costs is the sampler's own work, not the fake's.
    """

    name = "bench"

    def __init__(self, gpus: int, processes: int, power_w: float = 400.0) -> None:
        self.gpus = gpus
        self.power_w = power_w
        self.pods: dict[str, tuple[str, str]] = {}
        per_gpu = [processes // gpus + (1 if i < processes % gpus else 0) for i in range(gpus)]
        self.processes = [tuple(_process(i, k, self.pods) for k in range(n)) for i, n in enumerate(per_gpu)]
        self._uuids = [f"GPU-{uuid.UUID(int=i + 1, version=4)}" for i in range(gpus)]
        self._t0: float | None = None

    def list_pods(self) -> dict[str, tuple[str, str]]:
        return self.pods

    def read(self, now: float) -> list[GpuReading]:
        if self._t0 is None:
            self._t0 = now
        energy = self.power_w * (now - self._t0)
        return [
            GpuReading(
                index=i,
                uuid=self._uuids[i],
                name=GPU_NAME,
                driver_version="550.90.07",
                pci_bus_id=f"00000000:{0x18 + i:02X}:00.0",
                power_w=self.power_w,
                energy_j=energy,
                util=0.8,
                mem_used_bytes=40_000_000_000,
                mem_total_bytes=85_899_345_920,
                temp_c=60.0,
                power_limit_w=700.0,
                processes=self.processes[i],
            )
            for i in range(self.gpus)
        ]

    def close(self) -> None:
        pass


class ConstantCpuSource:
    """One package drawing constant power, with an energy counter."""

    name = "bench-cpu"

    def __init__(self, watts: float = 120.0) -> None:
        self.watts = watts
        self._t0: float | None = None

    def read(self, now: float) -> list[CpuReading]:
        if self._t0 is None:
            self._t0 = now
        return [CpuReading("package-0", "rapl", self.watts * (now - self._t0), self.watts)]

    def close(self) -> None:
        pass


@dataclass
class Rig:
    """A sampler over fake sources with real attribution and carbon accounting, plus its registry."""

    sampler: Sampler
    source: ScaledGpuSource
    clock: FakeClock
    wall: FakeClock
    registry: CollectorRegistry
    procfs: tempfile.TemporaryDirectory[str] = field(repr=False)

    def tick(self, seconds: float = 1.0) -> None:
        self.clock.t += seconds
        self.wall.t += seconds
        self.sampler.tick()

    def close(self) -> None:
        self.procfs.cleanup()


def attribution_for(
    pods: PodLister | None,
    procfs_root: str,
    max_series: int = 500,
    retention_s: float = 600.0,
    policy: str = "proportional",
) -> Attribution:
    """Attribution as ``exporter.cli.build_attribution`` wires it, CPU attribution off.

    ``procfs_root`` should be an empty directory: the processes carry comm, user and cgroup, so the
    resolver has nothing to read, and if it tried it would find nothing rather than this machine's /proc.
    """
    return Attribution(
        policy=AttributionPolicy(kind=policy),
        resolver=WorkloadResolver(procfs_root, pods),
        gpu_ledger=ProcessLedger("pid", max_series, retention_s),
        cpu_ledger=ProcessLedger("pid", max_series, retention_s),
        cpu_times=None,
    )


def build_rig(gpus: int, processes: int, warm_ticks: int = 3) -> Rig:
    """A warmed-up sampler (caches filled, every series created) over ``gpus`` x ``processes``."""
    procfs = tempfile.TemporaryDirectory(prefix="bench-procfs-")
    clock, wall = FakeClock(1000.0), FakeClock(1_700_000_000.0)
    source = ScaledGpuSource(gpus, processes)
    carbon = CarbonService(CarbonConfig(zone="DE", pue=1.2), clock=wall)
    sampler = Sampler(
        source,
        ConstantCpuSource(),
        carbon,
        attribution_for(source.list_pods, procfs.name),
        interval_s=1.0,
        clock=clock,
        wall_clock=wall,
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: sampler.snapshot, wall_clock=wall))
    rig = Rig(sampler, source, clock, wall, registry, procfs)
    sampler.tick()
    for _ in range(warm_ticks):
        rig.tick()
    return rig
