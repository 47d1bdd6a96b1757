"""The running exporter with its Kubernetes lookups: a fake API server and a fake pod-resources socket.

A replay trace stands in for NVML on a node named gpu-node-1: GPU 0 runs a process in pod trainer-0's
cgroup; GPU 1 shows no process but the kubelet says it is allocated to pod infer-1 alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fake_apiserver import FakeApiServer, serve
from fake_podresources import Container, FakeKubelet, PodResources
from fake_podresources import serve as serve_kubelet
from metrics_text import Sample, parse, select

from tests.exporter_proc import ExporterProcess, start_exporter

pytestmark = pytest.mark.integration
NODE = "gpu-node-1"
TRAINER_UID = "5a7c1e3b-9d2f-4b8a-a6c4-2e0f9b7d3c15"
GPU0, GPU1 = "GPU-0c5e1a3b-7f2d-4e8a-9b6c-1d2e3f4a5b6c", "GPU-9f8e7d6c-5b4a-4321-8765-0a1b2c3d4e5f"


def _trace(path: Path) -> Path:
    cgroup = (
        f"0::/kubepods.slice/kubepods-pod{TRAINER_UID.replace('-', '_')}.slice/"
        f"cri-containerd-{'ab' * 32}.scope"
    )
    lines = []
    for k in range(61):
        process = {"pid": 4242, "comm": "python", "user": "alice", "sm_util": 0.9, "cgroup": cgroup}
        lines.append(
            {
                "t": float(k),
                "gpus": [
                    {"index": 0, "uuid": GPU0, "power_w": 400.0, "processes": [process]},
                    {"index": 1, "uuid": GPU1, "power_w": 100.0, "processes": []},
                ],
            }
        )
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


@contextmanager
def _run(
    tmp: Path, api: FakeApiServer, trace: Path | None = None, kubelet: FakeKubelet | None = None
) -> Iterator[ExporterProcess]:
    """The exporter on ``trace`` (default: the module's two-GPU trace) with the fake API server and the
    fake kubelet's pod-resources socket (default: trainer-0 holds GPU 0, infer-1 GPU 1)."""
    kubelet = kubelet or FakeKubelet(
        pods=[
            PodResources("trainer-0", "ml", [Container("main", {"nvidia.com/gpu": [GPU0]})]),
            PodResources("infer-1", "serving", [Container("server", {"nvidia.com/gpu": [GPU1]})]),
        ]
    )
    socket = tmp / "kubelet.sock"
    with serve(tmp, api) as served, serve_kubelet(socket, kubelet):
        exporter = start_exporter(
            [
                "--source.gpu=replay",
                f"--source.gpu.replay.file={trace or _trace(tmp / 'trace.jsonl')}",
                "--source.gpu.replay.loop",
                "--source.cpu=estimated",
                "--sample.interval=250ms",
                "--attribution.group-by=pod",
                f"--kubernetes.node-name={NODE}",
                f"--kubernetes.apiserver-url={served.url}",
                f"--kubernetes.token-file={served.token_file}",
                f"--kubernetes.ca-file={served.ca_file}",
                f"--kubernetes.pod-resources-socket={socket}",
            ],
            wait=60,
        )
        try:
            yield exporter
        finally:
            code, log = exporter.stop()
            assert code == 0, log[-3000:]


def _scrape_until(
    exporter: ExporterProcess, ready: Callable[[dict[Sample, float]], bool], timeout: float = 60.0
) -> dict[Sample, float]:
    deadline = time.monotonic() + timeout
    while True:
        samples = parse(exporter.metrics())
        if ready(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.25)


def test_pods_are_named_from_the_api_server_and_an_owned_gpu_goes_to_its_pod(tmp_path: Path) -> None:
    api = FakeApiServer()
    api.add("trainer-0", "ml", NODE, uid=TRAINER_UID)
    api.add("infer-1", "serving", NODE)
    api.add("elsewhere", "ml", "gpu-node-2")
    with _run(tmp_path, api) as exporter:
        ready = _scrape_until(
            exporter,
            lambda s: bool(
                select(s, "footprint_process_gpu_energy_joules_total", pod="infer-1")
                and select(s, "footprint_process_gpu_energy_joules_total", pod="trainer-0")
            ),
        )
        # Eight more ticks (2 s at 250 ms) from the snapshot in which both pods had their series.
        ticks = sum(select(ready, "footprint_samples_total").values())
        s = _scrape_until(exporter, lambda s: sum(select(s, "footprint_samples_total").values()) >= ticks + 8)
        up = {dict(k)["lookup"]: v for k, v in select(s, "footprint_workload_lookup_up").items()}
        assert up == {"apiserver": 1.0, "pod-resources": 1.0}
        pods = {dict(k)["lookup"]: v for k, v in select(s, "footprint_workload_lookup_pods").items()}
        assert pods == {"apiserver": 2.0, "pod-resources": 2.0}  # only this node's pods
        (trainer,) = select(s, "footprint_process_gpu_energy_joules_total", gpu="0").items()
        assert dict(trainer[0])["pod"] == "trainer-0" and dict(trainer[0])["namespace"] == "ml"
        # GPU 1: no process visible, allocated to infer-1 alone: its energy is the pod's.
        energy1 = select(s, "footprint_process_gpu_energy_joules_total", gpu="1")
        (labels1,) = energy1
        assert (dict(labels1)["pod"], dict(labels1)["namespace"], dict(labels1)["pid"]) == (
            "infer-1",
            "serving",
            "",
        )
        total1 = select(s, "footprint_gpu_energy_joules_total", gpu="1")
        unattributed1 = select(s, "footprint_gpu_unattributed_energy_joules_total", gpu="1")
        (gpu_total,), (gpu_unattributed,) = total1.values(), unattributed1.values()
        assert energy1[labels1] + gpu_unattributed == pytest.approx(gpu_total, rel=1e-9)
        # Only what GPU 1 drew before the first pod-resources answer stayed unattributed: from the tick
        # that charged infer-1 on, not a joule more. (This compared with 20 % of the total after a fixed
        # 2 s, which also required the first answer within about half a second of the first tick.)
        (unattributed_when_named,) = select(
            ready, "footprint_gpu_unattributed_energy_joules_total", gpu="1"
        ).values()
        (total_when_named,) = select(ready, "footprint_gpu_energy_joules_total", gpu="1").values()
        assert gpu_total > total_when_named
        assert gpu_unattributed == pytest.approx(unattributed_when_named, rel=1e-9, abs=1e-9)
        assert select(s, "footprint_workload_pod_unresolved_total") == {frozenset(): 0.0}
    # The exporter asked for this node's pods, metadata only, and watched after listing.
    watches = [r for r in api.requests if r["query"].get("watch") == "1"]
    assert watches and all(r["query"]["fieldSelector"] == f"spec.nodeName={NODE}" for r in api.requests)
    assert all("as=PartialObjectMetadata" in r["accept"] for r in api.requests)


def test_a_forbidden_lookup_is_exported_and_pods_keep_their_uid(tmp_path: Path) -> None:
    api = FakeApiServer()
    api.add("trainer-0", "ml", NODE, uid=TRAINER_UID)
    api.rbac = False
    with _run(tmp_path, api) as exporter:
        s = _scrape_until(
            exporter,
            lambda s: bool(
                select(s, "footprint_workload_lookup_errors_total", lookup="apiserver", kind="forbidden")
                and select(s, "footprint_workload_pod_unresolved_total") != {frozenset(): 0.0}
                # The resolver's counter is read at scrape time, the process series from the last
                # published snapshot: the tick that counted the lookup may not have published yet.
                and select(s, "footprint_process_gpu_energy_joules_total", gpu="0")
            ),
        )
        assert select(s, "footprint_workload_lookup_up", lookup="apiserver") == {
            frozenset({("lookup", "apiserver")}): 0.0
        }
        assert select(s, "footprint_workload_lookup_errors_total", lookup="apiserver", kind="forbidden")
        (labels,) = select(s, "footprint_process_gpu_energy_joules_total", gpu="0")
        assert (dict(labels)["pod"], dict(labels)["namespace"]) == (TRAINER_UID, "")
        (unresolved,) = select(s, "footprint_workload_pod_unresolved_total").values()
        assert unresolved >= 1


MIG_3G, MIG_2G = "MIG-a65afc88-50b5-5ccf-b0a8-f93b3247ae9e", "MIG-90443af0-2fe6-57fb-86fe-54186d5a6581"


def test_a_mig_instance_held_idle_by_a_pod_is_charged_its_share(tmp_path: Path) -> None:
    # An A100 in MIG mode (98 SMs handed out): trainer-0's process runs in the 3g instance (42 SMs);
    # infer-2 holds the 2g instance (28) with no process NVML shows; a 1g instance (14) and 14 SMs
    # more are free. The device plugin (strategy mixed) names MIG devices by their MIG UUID.
    cgroup = (
        f"0::/kubepods.slice/kubepods-pod{TRAINER_UID.replace('-', '_')}.slice/"
        f"cri-containerd-{'ab' * 32}.scope"
    )
    process = {"pid": 4242, "comm": "python", "cgroup": cgroup, "gpu_instance_id": 1, "mig_sm_share": 42 / 98}
    instances = [
        {"gpu_instance_id": 1, "uuid": MIG_3G, "sm_share": 42 / 98},
        {"gpu_instance_id": 2, "uuid": MIG_2G, "sm_share": 28 / 98},
        {"gpu_instance_id": 3, "uuid": "MIG-74c6a31a-fde5-5c61-973b-70e12346c202", "sm_share": 14 / 98},
    ]
    gpu = {"index": 0, "uuid": GPU0, "power_w": 350.0, "processes": [process], "mig_instances": instances}
    trace = tmp_path / "mig.jsonl"
    trace.write_text("".join(json.dumps({"t": float(k), "gpus": [gpu]}) + "\n" for k in range(61)))
    api = FakeApiServer()
    api.add("trainer-0", "ml", NODE, uid=TRAINER_UID)
    api.add("infer-2", "serving", NODE)
    kubelet = FakeKubelet(
        pods=[
            PodResources("trainer-0", "ml", [Container("main", {"nvidia.com/mig-3g.40gb": [MIG_3G]})]),
            PodResources("infer-2", "serving", [Container("server", {"nvidia.com/mig-2g.20gb": [MIG_2G]})]),
        ]
    )
    with _run(tmp_path, api, trace, kubelet) as exporter:
        name = "footprint_process_gpu_energy_joules_total"
        ready = _scrape_until(
            exporter, lambda s: bool(select(s, name, pod="infer-2") and select(s, name, pod="trainer-0"))
        )
        ticks = sum(select(ready, "footprint_samples_total").values())
        s = _scrape_until(exporter, lambda s: sum(select(s, "footprint_samples_total").values()) >= ticks + 8)

    def figures(samples: dict[Sample, float]) -> tuple[float, float, float, float]:
        (trainer,) = select(samples, name, gpu="0", pod="trainer-0").values()
        (held,) = select(samples, name, gpu="0", pod="infer-2").values()
        (total,) = select(samples, "footprint_gpu_energy_joules_total", gpu="0").values()
        (unattributed,) = select(samples, "footprint_gpu_unattributed_energy_joules_total", gpu="0").values()
        return trainer, held, total, unattributed

    (labels,) = select(s, name, gpu="0", pod="infer-2")
    assert (dict(labels)["namespace"], dict(labels)["pid"]) == ("serving", "")
    trainer, held, total, unattributed = figures(s)
    assert trainer + held + unattributed == pytest.approx(total, rel=1e-9)
    # From the first answer on, each interval: 42/98 to trainer-0, 28/98 to infer-2, the rest free.
    before = figures(ready)
    d_trainer, d_held, d_total, d_free = (
        a - b for a, b in zip((trainer, held, total, unattributed), before, strict=True)
    )
    assert d_total > 0
    assert d_held == pytest.approx(d_total * 28 / 98, rel=1e-9)
    assert d_trainer == pytest.approx(d_total * 42 / 98, rel=1e-9)
    assert d_free == pytest.approx(d_total * 28 / 98, rel=1e-9)
