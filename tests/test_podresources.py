"""exporter.podresources: protobuf decoding, gRPC calls to a real gRPC server, GPU owners in the sampler."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from fake_podresources import Container, FakeKubelet, PodResources, serve
from fake_pynvml import FakeGpu, FakeNvml, FakeProcess

from exporter.attribution import AttributionPolicy
from exporter.ledger import ProcessLedger
from exporter.podlookup import PodRef
from exporter.podresources import (
    ContainerDevices,
    GpuAllocations,
    PodResourcesError,
    call_list,
    decode_list_response,
    exclusive_owners,
)
from exporter.sampler import Attribution, Sampler
from exporter.sources.nvml import NvmlGpuSource
from exporter.workload import WorkloadResolver

GPU_A = "GPU-0c5e1a3b-7f2d-4e8a-9b6c-1d2e3f4a5b6c"
GPU_B = "GPU-9f8e7d6c-5b4a-4321-8765-0a1b2c3d4e5f"
GPU_C = "GPU-11111111-2222-4333-8444-555555555555"


def cluster() -> list[PodResources]:
    return [
        PodResources(
            "trainer-0",
            "ml",
            [
                Container("main", {"nvidia.com/gpu": [GPU_A]}, cpu_ids=[2, 3]),
                Container("sidecar", {}),
            ],
        ),
        # Time-sliced GPU: replicas of GPU_B held by two pods.
        PodResources("infer-a", "serving", [Container("server", {"nvidia.com/gpu": [f"{GPU_B}::0"]})]),
        PodResources("infer-b", "serving", [Container("server", {"nvidia.com/gpu": [f"{GPU_B}::3"]})]),
        PodResources("nic-user", "net", [Container("app", {"example.com/sriov": ["0000:3b:00.2"]})]),
        PodResources("no-devices", "default", [Container("app", {})]),
    ]


@pytest.fixture
def sock(tmp_path: Path) -> Iterator[tuple[Path, FakeKubelet]]:
    path = tmp_path / "kubelet.sock"
    with serve(path, FakeKubelet(pods=cluster())) as kubelet:
        yield path, kubelet


def test_decoder_reads_what_the_protobuf_library_wrote() -> None:
    raw = FakeKubelet(pods=cluster()).response().SerializeToString()
    groups = decode_list_response(raw)
    assert ContainerDevices("trainer-0", "ml", "main", "nvidia.com/gpu", (GPU_A,)) in groups
    assert ContainerDevices("infer-b", "serving", "server", "nvidia.com/gpu", (f"{GPU_B}::3",)) in groups
    assert ContainerDevices("nic-user", "net", "app", "example.com/sriov", ("0000:3b:00.2",)) in groups
    # cpu_ids, memory and topology were skipped, not mistaken for devices.
    assert len(groups) == 4


@pytest.mark.parametrize(
    "raw",
    [b"\x0a\x05\x0a\x03ab", b"\x0a", b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x0b\x0c"],
    ids=["runs-past-end", "truncated", "overlong-varint", "group-wire-type"],
)
def test_decoder_refuses_malformed_messages(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_list_response(raw)


def test_exclusive_owners_leave_out_shared_and_other_resources() -> None:
    groups = decode_list_response(FakeKubelet(pods=cluster()).response().SerializeToString())
    assert exclusive_owners(groups) == {GPU_A: PodRef("trainer-0", "ml")}
    # deviceIDStrategy=index names GPUs by their NVML index.
    by_index = [ContainerDevices("p", "ns", "c", "nvidia.com/gpu", ("0", "3"))]
    assert exclusive_owners(by_index) == {"index:0": PodRef("p", "ns"), "index:3": PodRef("p", "ns")}
    # Two pods on one GPU (a misconfigured plugin): nobody owns it.
    twice = [
        ContainerDevices("p", "ns", "c", "nvidia.com/gpu", (GPU_C,)),
        ContainerDevices("q", "ns", "c", "nvidia.com/gpu", (GPU_C,)),
    ]
    assert exclusive_owners(twice) == {}


def test_call_list_against_a_real_grpc_server(sock: tuple[Path, FakeKubelet]) -> None:
    path, kubelet = sock
    groups = decode_list_response(call_list(str(path)))
    assert ContainerDevices("trainer-0", "ml", "main", "nvidia.com/gpu", (GPU_A,)) in groups
    assert kubelet.calls == 1


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (grpc.StatusCode.UNAVAILABLE, "unavailable"),
        (grpc.StatusCode.PERMISSION_DENIED, "permission"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited"),
        (grpc.StatusCode.INTERNAL, "rpc"),
    ],
)
def test_grpc_errors_have_kinds(sock: tuple[Path, FakeKubelet], code: grpc.StatusCode, kind: str) -> None:
    path, kubelet = sock
    kubelet.fail_with = code
    with pytest.raises(PodResourcesError) as err:
        call_list(str(path))
    assert err.value.kind == kind


def test_an_unknown_method_is_unimplemented(tmp_path: Path) -> None:
    path = tmp_path / "other.sock"
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    server.add_insecure_port(f"unix://{path}")
    server.start()
    try:
        with pytest.raises(PodResourcesError) as err:
            call_list(str(path))
        assert err.value.kind == "unimplemented"
    finally:
        server.stop(grace=None).wait(5)


def test_no_socket_and_a_silent_listener(tmp_path: Path) -> None:
    with pytest.raises(PodResourcesError) as err:
        call_list(str(tmp_path / "missing.sock"))
    assert err.value.kind == "no_socket"
    # Something listens but never answers (a hung kubelet): the call times out instead of hanging.
    path = tmp_path / "silent.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    held: list[socket.socket] = []
    accept = threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True)
    accept.start()
    try:
        with pytest.raises(PodResourcesError) as err:
            call_list(str(path), timeout_s=0.5)
        assert err.value.kind == "timeout"
    finally:
        for conn in held:
            conn.close()
        listener.close()


def test_allocations_refresh_keep_and_go_stale(sock: tuple[Path, FakeKubelet]) -> None:
    path, kubelet = sock
    clock = [0.0]
    allocations = GpuAllocations(
        str(path),
        stale_after_s=30.0,
        uid_of=lambda ns, name: "uid-1" if name == "trainer-0" else "",
        clock=lambda: clock[0],
    )
    assert allocations.owner(GPU_A, 0) is None  # nothing fetched yet
    allocations.refresh()
    assert allocations.owner(GPU_A, 0) == PodRef("trainer-0", "ml", "uid-1")
    assert allocations.owner(GPU_B, 1) is None  # shared by time-slicing
    assert allocations.health.read() == (True, {}, 4)  # pods holding any device
    kubelet.fail_with = grpc.StatusCode.UNAVAILABLE
    clock[0] = 20.0
    allocations.refresh()
    assert allocations.health.read()[:2] == (False, {"unavailable": 1})
    assert allocations.owner(GPU_A, 0) is not None  # the last answer, still fresh enough
    clock[0] = 31.0
    assert allocations.owner(GPU_A, 0) is None  # too old to charge anyone


def owned_sampler(
    tmp_path: Path, owners: dict[str, PodRef], group_by: str = "pid"
) -> tuple[Sampler, FakeNvml]:
    nvml = FakeNvml(
        gpus=[
            FakeGpu(uuid=GPU_A, power_w=300.0),  # allocated to trainer-0, NVML shows no process
            FakeGpu(uuid=GPU_B, power_w=100.0),  # not allocated: its energy stays unattributed
            FakeGpu(uuid=GPU_C, power_w=200.0, processes=[FakeProcess(501)]),  # allocated, process visible
        ]
    )
    att = Attribution(
        policy=AttributionPolicy(),
        resolver=WorkloadResolver(str(tmp_path / "noproc")),
        gpu_ledger=ProcessLedger(group_by),
        cpu_ledger=ProcessLedger(group_by),
        gpu_owner=lambda uuid, index: owners.get(uuid),
    )
    clock = [0.0]

    def tick() -> None:
        nvml.advance(1.0)
        clock[0] += 1.0
        sampler.tick()

    sampler = Sampler(
        NvmlGpuSource(nvml=nvml, procfs_root=str(tmp_path)), None, attribution=att, clock=lambda: clock[0]
    )
    sampler.tick()
    for _ in range(10):
        tick()
    return sampler, nvml


@pytest.mark.parametrize("group_by", ["pid", "pod"])
def test_an_owned_gpu_without_visible_processes_charges_its_pod(tmp_path: Path, group_by: str) -> None:
    owners = {GPU_A: PodRef("trainer-0", "ml", "uid-1"), GPU_C: PodRef("infer-c", "serving", "uid-2")}
    sampler, _ = owned_sampler(tmp_path, owners, group_by)
    snap = sampler.snapshot
    gpus = {g.reading.uuid: g for g in snap.gpus}
    procs = [p for p in snap.gpu_processes if p.gpu_uuid == GPU_A]
    (pod,) = procs
    assert (pod.pid, pod.workload.comm, pod.workload.pod, pod.workload.namespace) == (
        "",
        "",
        "trainer-0",
        "ml",
    )
    assert pod.energy_j_total == pytest.approx(300.0 * 10, rel=1e-9)
    assert gpus[GPU_A].unattributed_energy_j_total == 0.0
    # Not allocated: unattributed, as before.
    assert gpus[GPU_B].unattributed_energy_j_total == pytest.approx(100.0 * 10, rel=1e-9)
    assert not [p for p in snap.gpu_processes if p.gpu_uuid == GPU_B]
    # A visible process is attributed as a process; the owner does not replace it.
    (visible,) = [p for p in snap.gpu_processes if p.gpu_uuid == GPU_C]
    assert visible.pid == ("501" if group_by == "pid" else "")
    # Conservation on every GPU.
    for uuid, gpu in gpus.items():
        attributed = sum(p.energy_j_total for p in snap.gpu_processes if p.gpu_uuid == uuid)
        assert attributed + gpu.unattributed_energy_j_total == pytest.approx(gpu.energy_j_total, rel=1e-12)


def test_the_pods_counter_runs_on_when_its_processes_become_visible(tmp_path: Path) -> None:
    # At the pod level the allocation and the pod's processes share one series: no counter reset.
    owners = {GPU_A: PodRef("trainer-0", "ml", "5a7c1e3b-9d2f-4b8a-a6c4-2e0f9b7d3c15")}
    sampler, nvml = owned_sampler(tmp_path, owners, "pod")
    before = next(p for p in sampler.snapshot.gpu_processes if p.gpu_uuid == GPU_A).energy_j_total
    proc = tmp_path / "proc" / "777"
    proc.mkdir(parents=True)
    (proc / "comm").write_text("python\n")
    (proc / "status").write_text("Uid:\t0\t0\t0\t0\n")
    (proc / "cgroup").write_text(
        "0::/kubepods.slice/kubepods-pod5a7c1e3b_9d2f_4b8a_a6c4_2e0f9b7d3c15.slice/"
        "cri-containerd-" + "ab" * 32 + ".scope\n"
    )
    att = sampler.attribution
    assert att is not None
    att.resolver = WorkloadResolver(
        str(tmp_path / "proc"), kubelet_pods=lambda: {owners[GPU_A].uid: ("trainer-0", "ml")}
    )
    nvml.gpus[0].processes = [FakeProcess(777)]
    for _ in range(3):
        nvml.advance(1.0)
        sampler.clock = (lambda t: lambda: t)(sampler.clock() + 1.0)
        sampler.tick()
    series = [p for p in sampler.snapshot.gpu_processes if p.gpu_uuid == GPU_A]
    assert len(series) == 1
    assert series[0].energy_j_total == pytest.approx(before + 3 * 300.0, rel=1e-9)
