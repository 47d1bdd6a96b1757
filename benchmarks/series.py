"""Series per node on a realistic 8-GPU Kubernetes node, for sizing: ``python -m benchmarks.series``.

The node (what a GPU node of a shared cluster runs; counts from the pods, not from the simulation):

- GPUs: a 4-GPU training pod (torchrun: one process per GPU) and two 2-GPU inference pods (vLLM,
  tensor parallel 2: one process per GPU); every GPU busy.
- CPU: the training pod's launcher and 32 data-loader workers, each inference pod's API server and 4
  helpers; 14 DaemonSet pods of a GPU Operator cluster (kube-proxy, CNI with 2 containers, node
  exporter, DCGM exporter, device plugin, GPU feature discovery, container toolkit, driver with 2
  containers, DCGM, operator validator, NFD worker, log shipper, this exporter, CSI node with 3
  containers); 10 CPU-only application pods of 3 processes; and 350 host processes (systemd,
  kubelet, containerd and its shims, sshd, kernel threads). Every process uses some CPU in each
  interval: within the 10-minute retention almost every one does.

The exporter's real sampler, ledger, resolver (reading cgroup files from a fake /proc), collectors
and encoder produce the scrape; only the hardware and /proc's CPU times are fakes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from benchmarks.fakes import ConstantCpuSource, FakeClock
from exporter.attribution import AttributionPolicy
from exporter.carbon.config import CarbonConfig
from exporter.carbon.service import CarbonService
from exporter.collector import SnapshotCollector
from exporter.exposition import render_text
from exporter.ledger import ProcessLedger
from exporter.model import GpuProcessSample, GpuReading
from exporter.podlookup import LookupCollector, LookupHealth
from exporter.sampler import Attribution, Sampler
from exporter.workload import WorkloadResolver

GPU_NAME = "NVIDIA H100 80GB HBM3"
HOST_PROCESSES = 350


@dataclass(frozen=True)
class Proc:
    pid: int
    comm: str
    cgroup: str  # "" for a host process
    gpu: int | None = None


def _pod_cgroup(uid: str, container: str) -> str:
    slice_uid = uid.replace("-", "_")
    return (
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{slice_uid}.slice/"
        f"cri-containerd-{container}.scope"
    )


def realistic_node() -> tuple[list[Proc], dict[str, tuple[str, str]]]:
    """Every process of the node and the pods they belong to (uid -> (name, namespace))."""
    procs: list[Proc] = []
    pods: dict[str, tuple[str, str]] = {}
    pid = 10_000

    def pod(name: str, namespace: str, containers: list[list[tuple[str, int | None]]]) -> None:
        nonlocal pid
        uid = f"{len(pods):08x}-0000-4000-8000-{len(pods):012x}"
        pods[uid] = (name, namespace)
        for c, members in enumerate(containers):
            container = f"{len(pods):032x}{c:032x}"
            for comm, gpu in members:
                pid += 1
                procs.append(Proc(pid, comm, _pod_cgroup(uid, container), gpu))

    pod(
        "train-llm-0",
        "ml-training",
        [[("torchrun", None)] + [("python", g) for g in range(4)] + [("pt_data_worker", None)] * 32],
    )
    for k, first in ((0, 4), (1, 6)):
        pod(
            f"vllm-{k}",
            "inference",
            [[("vllm", first), ("vllm", first + 1), ("api_server", None)] + [("python", None)] * 4],
        )
    daemonsets = [
        ("kube-proxy", "kube-system", [1]), ("calico-node", "kube-system", [4, 2]),
        ("node-exporter", "monitoring", [1]), ("dcgm-exporter", "gpu-operator", [1]),
        ("nvidia-device-plugin", "gpu-operator", [1]), ("gpu-feature-discovery", "gpu-operator", [1]),
        ("nvidia-container-toolkit", "gpu-operator", [1]), ("nvidia-driver", "gpu-operator", [3, 1]),
        ("nvidia-dcgm", "gpu-operator", [1]), ("operator-validator", "gpu-operator", [1]),
        ("nfd-worker", "node-feature-discovery", [1]), ("fluent-bit", "logging", [1]),
        ("footprint-exporter", "ai-footprint", [1]), ("csi-node", "kube-system", [1, 1, 1]),
    ]  # fmt: skip
    for name, namespace, sizes in daemonsets:
        pod(f"{name}-x7k2p", namespace, [[(name[:15], None)] * n for n in sizes])
    for k in range(10):
        pod(f"app-{k}", "research", [[("python", None)] * 3])
    for k in range(HOST_PROCESSES):
        pid += 1
        procs.append(Proc(pid, "kworker" if k % 2 else "containerd-shim", ""))
    return procs, pods


class NodeGpus:
    """Eight busy H100s with the node's GPU processes."""

    name = "bench-gpus"

    def __init__(self, procs: list[Proc]) -> None:
        self.by_gpu: dict[int, list[GpuProcessSample]] = {g: [] for g in range(8)}
        for p in procs:
            if p.gpu is not None:
                sample = GpuProcessSample(
                    p.pid, p.comm, "ml", 0.9, 40 << 30, p.cgroup, 1_700_000_000.0 + p.pid
                )
                self.by_gpu[p.gpu].append(sample)
        self.energy = [0.0] * 8

    def read(self, now: float) -> list[GpuReading]:
        out = []
        for g in range(8):
            self.energy[g] += 600.0
            uuid = f"GPU-{g:08x}-0000-4000-8000-000000000000"
            out.append(
                GpuReading(g, uuid, GPU_NAME, "550.54.15", f"0000:{g:02x}:00.0", power_w=600.0,
                           energy_j=self.energy[g], util=0.9, mem_used_bytes=40 << 30,
                           mem_total_bytes=80 << 30, temp_c=60.0, power_limit_w=700.0,
                           processes=tuple(self.by_gpu[g]))
            )  # fmt: skip
        return out

    def close(self) -> None:
        pass


class NodeCpuTimes:
    """Every process used 10 ms of CPU in each interval; the machine was 30 % busy on 64 CPUs."""

    def __init__(self, procs: list[Proc]) -> None:
        self.keys = {(p.pid, 1_700_000_000.0 + p.pid): (0.01, p.comm, "root") for p in procs}

    def read(self) -> tuple[dict[tuple[int, float], tuple[float, str, str]], float]:
        return dict(self.keys), 0.3 * 64


@contextmanager
def _procfs(procs: list[Proc]) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="series-procfs-") as root:
        for p in procs:
            os.mkdir(os.path.join(root, str(p.pid)))
            with open(os.path.join(root, str(p.pid), "cgroup"), "w", encoding="utf-8") as handle:
                handle.write(p.cgroup or "0::/system.slice/containerd.service\n")
        yield root


@dataclass
class Count:
    series: int
    scrape_bytes: int
    by_family: Counter[str]


def count_series(group_by: str, cpu_group_by: str, ticks: int = 5) -> Count:
    procs, pods = realistic_node()
    with _procfs(procs) as root:
        clock, wall = FakeClock(1000.0), FakeClock(1_700_000_000.0)
        attribution = Attribution(
            policy=AttributionPolicy(),
            resolver=WorkloadResolver(root, lambda: pods),
            gpu_ledger=ProcessLedger(group_by),
            cpu_ledger=ProcessLedger(cpu_group_by, system_series=True),
            cpu_times=NodeCpuTimes(procs),  # type: ignore[arg-type]
        )
        carbon = CarbonService(CarbonConfig(zone="DE", pue=1.2), clock=wall)
        sampler = Sampler(NodeGpus(procs), ConstantCpuSource(), carbon, attribution, 1.0, clock, wall)
        for _ in range(ticks):
            clock.t += 1.0
            wall.t += 1.0
            sampler.tick()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SnapshotCollector(lambda: sampler.snapshot, wall_clock=wall))
        lookups = [LookupHealth("apiserver"), LookupHealth("pod-resources")]
        registry.register(LookupCollector(lookups, lambda: attribution.resolver.pods_unresolved_total))
        text = render_text(registry)
    families: Counter[str] = Counter()
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            families[line.split("{")[0].split(" ")[0]] += 1
    return Count(sum(families.values()), len(text), families)


CONFIGS = (
    ("defaults (--attribution.group-by=pid, --attribution.cpu-group-by=workload)", "pid", "workload"),
    ("Kubernetes manifests (group-by=pod, cpu-group-by=pod)", "pod", "pod"),
    ("before this change (pid for GPU and CPU)", "pid", "pid"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    procs, pods = realistic_node()
    print(f"node: 8 GPUs, {len(pods)} pods, {len(procs)} processes ({HOST_PROCESSES} on the host)")
    for title, group_by, cpu_group_by in CONFIGS:
        c = count_series(group_by, cpu_group_by)
        process = sum(v for k, v in c.by_family.items() if k.startswith("footprint_process_"))
        print(
            f"{title}: {c.series} series ({process} per-process/pod), scrape {c.scrape_bytes / 1024:.1f} KiB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
