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
from exporter.attribution import AttributionPolicy, CpuIdlePolicy
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

    cpu_count = 64

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
            # The fake package draws a constant 120 W: give its idle power, or the learner would
            # take all of it for idle and leave no active energy to split.
            cpu_idle=CpuIdlePolicy(package_watts=60.0),
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
    parser.add_argument(
        "--overhead", type=float, metavar="SECONDS", help="also measure RSS and CPU as deployed"
    )
    args = parser.parse_args(argv)
    procs, pods = realistic_node()
    print(f"node: 8 GPUs, {len(pods)} pods, {len(procs)} processes ({HOST_PROCESSES} on the host)")
    for title, group_by, cpu_group_by in CONFIGS:
        c = count_series(group_by, cpu_group_by)
        process = sum(v for k, v in c.by_family.items() if k.startswith("footprint_process_"))
        print(
            f"{title}: {c.series} series ({process} per-process/pod), scrape {c.scrape_bytes / 1024:.1f} KiB"
        )
    if args.overhead:
        o = overhead(args.overhead)
        print(
            f"as deployed (lookups live, real /proc): RSS median {o['rss_mb_median']:.1f} MB, "
            f"max {o['rss_mb_max']:.1f} MB, CPU {o['cpu_percent']:.2f} % of a core, {o['series']:.0f} series"
        )
    return 0


def overhead(duration_s: float = 60.0) -> dict[str, float]:
    """Resident memory and CPU of the exporter run as the DaemonSet runs it, with its lookups live.

    A looping replay trace of the node's 8 GPUs stands in for NVML (the simulated source names its
    own pods and would bypass the lookups); a fake API server (HTTPS, watch) and a fake pod-resources
    socket (real gRPC) answer the lookups; CPU attribution reads this machine's real /proc.
    """
    import json
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import psutil
    import requests

    from tests.fake_apiserver import FakeApiServer, serve
    from tests.fake_podresources import Container, FakeKubelet, PodResources
    from tests.fake_podresources import serve as serve_kubelet
    from tests.prom_procs import free_port

    procs, pods = realistic_node()
    gpus = NodeGpus(procs)
    api = FakeApiServer()
    for uid, (name, namespace) in pods.items():
        api.add(name, namespace, "gpu-node-1", uid=uid)
    owners = {"train-llm-0": range(4), "vllm-0": range(4, 6), "vllm-1": range(6, 8)}

    def uuid(g: int) -> str:
        return f"GPU-{g:08x}-0000-4000-8000-000000000000"

    kubelet = FakeKubelet(
        pods=[
            PodResources(name, ns, [Container("main", {"nvidia.com/gpu": [uuid(g) for g in owners[name]]})])
            for name, ns in pods.values()
            if name in owners
        ]
    )
    with tempfile.TemporaryDirectory(prefix="series-overhead-") as tmp_name:
        tmp = Path(tmp_name)
        lines = []
        for k in range(121):
            row = []
            for g, samples in gpus.by_gpu.items():
                power = 550.0 + 50.0 * ((k + g) % 3)
                processes = [{"pid": p.pid, "comm": p.comm, "user": "ml", "sm_util": 0.9, "cgroup": p.cgroup}
                             for p in samples]  # fmt: skip
                row.append({"index": g, "uuid": uuid(g), "power_w": power, "processes": processes})
            lines.append(json.dumps({"t": float(k), "gpus": row}))
        (tmp / "trace.jsonl").write_text("\n".join(lines) + "\n")
        with serve(tmp, api) as served, serve_kubelet(tmp / "kubelet.sock", kubelet):
            port = free_port()
            cmd = [
                sys.executable, "-m", "exporter", "--source.gpu=replay", "--source.gpu.replay.loop",
                f"--source.gpu.replay.file={tmp / 'trace.jsonl'}", f"--web.listen-address=127.0.0.1:{port}",
                "--attribution.group-by=pod", "--attribution.cpu-group-by=pod",
                "--kubernetes.node-name=gpu-node-1", f"--kubernetes.apiserver-url={served.url}",
                f"--kubernetes.token-file={served.token_file}", f"--kubernetes.ca-file={served.ca_file}",
                f"--kubernetes.pod-resources-socket={tmp / 'kubelet.sock'}",
            ]  # fmt: skip
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                url = f"http://127.0.0.1:{port}"
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    try:
                        if requests.get(url + "/healthz", timeout=1).status_code == 200:
                            break
                    except requests.RequestException:
                        time.sleep(0.2)
                ps = psutil.Process(proc.pid)
                time.sleep(5)
                requests.get(url + "/metrics", timeout=10)
                cpu0, started, rss = sum(ps.cpu_times()[:2]), time.monotonic(), []
                next_scrape = started
                while time.monotonic() - started < duration_s:
                    rss.append(ps.memory_info().rss / 1048576)
                    if time.monotonic() >= next_scrape:
                        body = requests.get(url + "/metrics", timeout=10).text
                        next_scrape += 15.0
                    time.sleep(0.5)
                cpu = (sum(ps.cpu_times()[:2]) - cpu0) / (time.monotonic() - started) * 100
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    rss.sort()
    series = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
    return {"rss_mb_median": rss[len(rss) // 2], "rss_mb_max": rss[-1], "cpu_percent": cpu, "series": series}


if __name__ == "__main__":
    raise SystemExit(main())
