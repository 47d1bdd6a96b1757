"""MIG instances a pod holds with no process NVML shows: owners from pod-resources, shares in the sampler.

Device ids as the NVIDIA device plugin gives them to the kubelet (k8s-device-plugin
internal/rm/device_map.go, devices.go): the MIG device's UUID from NVML, ``MIG-<uuid>`` from driver
R470 on and ``MIG-GPU-<gpu uuid>/<gi>/<ci>`` before, under ``nvidia.com/mig-<profile>`` (strategy
mixed) or ``nvidia.com/gpu`` (strategy single); replicas (time-slicing, MPS) carry ``::N``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from fake_podresources import Container, FakeKubelet, PodResources, serve
from fake_pynvml import FakeGpu, FakeMigInstance, FakeNvml, FakeProcess

from exporter.attribution import AttributionPolicy, attribute_gpu_energy
from exporter.errors import ConfigError
from exporter.ledger import ProcessLedger
from exporter.migallocation import held_idle_instances
from exporter.model import GpuProcessSample, MigInstance
from exporter.podlookup import PodRef
from exporter.podresources import ContainerDevices, GpuAllocations, exclusive_mig_owners
from exporter.record import reading_to_json
from exporter.sampler import Attribution, Sampler
from exporter.sources.nvml import NvmlGpuSource
from exporter.sources.replay import ReplayGpuSource
from exporter.workload import WorkloadResolver

BOARD = "GPU-41255406-c9af-f94b-4ebf-9d57ad1853da"
MIG_3G = "MIG-a65afc88-50b5-5ccf-b0a8-f93b3247ae9e"  # gi 1, a process runs in it
MIG_2G = "MIG-90443af0-2fe6-57fb-86fe-54186d5a6581"  # gi 2, held by pod infer-2, no visible process
MIG_1G = "MIG-74c6a31a-fde5-5c61-973b-70e12346c202"  # gi 3, free
MIG_1G_SHARED = "MIG-0d3f1e52-6a7b-5c8d-9e0f-112233445566"  # gi 4, time-sliced between two pods
INFER = PodRef("infer-2", "serving")


def _groups(*entries: tuple[str, str, str, tuple[str, ...]]) -> list[ContainerDevices]:
    return [ContainerDevices(pod, ns, "main", resource, ids) for pod, ns, resource, ids in entries]


def test_mig_owners_under_the_mixed_and_single_strategies() -> None:
    mixed = _groups(
        ("trainer", "ml", "nvidia.com/mig-3g.40gb", (MIG_3G,)),
        ("infer-2", "serving", "nvidia.com/mig-2g.20gb", (MIG_2G,)),
        ("a", "ns", "nvidia.com/mig-1g.10gb", (f"{MIG_1G_SHARED}::0",)),
        ("b", "ns", "nvidia.com/mig-1g.10gb", (f"{MIG_1G_SHARED}::1",)),
        ("whole", "ns", "nvidia.com/gpu", ("GPU-11111111-2222-4333-8444-555555555555",)),
        ("nic", "net", "example.com/sriov", ("MIG-not-a-gpu",)),
    )
    assert exclusive_mig_owners(mixed) == {MIG_3G: PodRef("trainer", "ml"), MIG_2G: INFER}
    # Strategy single: MIG devices are nvidia.com/gpu.
    single = _groups(("infer-2", "serving", "nvidia.com/gpu", (MIG_2G, MIG_1G)))
    assert exclusive_mig_owners(single) == {MIG_2G: INFER, MIG_1G: INFER}
    # One replica alone is still a shared device: never owned.
    assert exclusive_mig_owners(_groups(("a", "ns", "nvidia.com/gpu", (f"{MIG_2G}::0",)))) == {}
    # Two pods on one device (a misconfigured plugin): nobody owns it.
    twice = _groups(
        ("a", "ns", "nvidia.com/mig-2g.20gb", (MIG_2G,)), ("b", "ns", "nvidia.com/gpu", (MIG_2G,))
    )
    assert exclusive_mig_owners(twice) == {}


def test_pre_r470_ids_match_by_gpu_and_instance() -> None:
    old = f"MIG-{BOARD}/2/0"
    owners = exclusive_mig_owners(_groups(("infer-2", "serving", "nvidia.com/mig-2g.20gb", (old,))))
    assert owners == {old: INFER, f"{BOARD}/2": INFER}
    shared = _groups(("a", "ns", "nvidia.com/gpu", (f"MIG-{BOARD}/2/0::1",)))
    assert exclusive_mig_owners(shared) == {}
    # Two compute instances of GPU instance 2 held by two pods: the instance is nobody's.
    split = _groups(
        ("a", "ns", "nvidia.com/gpu", (f"MIG-{BOARD}/2/0",)),
        ("b", "ns", "nvidia.com/gpu", (f"MIG-{BOARD}/2/1",)),
    )
    assert f"{BOARD}/2" not in exclusive_mig_owners(split)


def test_mig_owner_lookup_over_the_socket_keeps_then_drops_a_stale_answer(tmp_path: Path) -> None:
    pods = [
        PodResources("infer-2", "serving", [Container("server", {"nvidia.com/mig-2g.20gb": [MIG_2G]})]),
        PodResources("old", "ml", [Container("main", {"nvidia.com/gpu": [f"MIG-{BOARD}/3/0"]})]),
        PodResources("ts-a", "ml", [Container("main", {"nvidia.com/mig-1g.10gb": [f"{MIG_1G_SHARED}::0"]})]),
    ]
    clock = [0.0]
    with serve(tmp_path / "kubelet.sock", FakeKubelet(pods=pods)) as kubelet:
        allocations = GpuAllocations(
            str(tmp_path / "kubelet.sock"),
            stale_after_s=60.0,
            uid_of=lambda ns, name: "uid-2" if name == "infer-2" else "",
            clock=lambda: clock[0],
        )
        assert allocations.mig_owner(MIG_2G, BOARD, 2) is None  # nothing fetched yet
        allocations.refresh()
        assert allocations.mig_owner(MIG_2G, BOARD, 2) == PodRef("infer-2", "serving", "uid-2")
        # NVML names the device MIG-<uuid>, the plugin (an older driver's view) by GPU and instance.
        assert allocations.mig_owner(MIG_1G, BOARD, 3) == PodRef("old", "ml")
        assert allocations.mig_owner(MIG_1G_SHARED, BOARD, 4) is None
        assert allocations.mig_owner(MIG_3G, BOARD, 1) is None  # free
        assert allocations.owner(BOARD, 0) is None  # the board itself is not anybody's
        kubelet.fail_with = grpc.StatusCode.UNAVAILABLE
        clock[0] = 50.0
        allocations.refresh()
        assert allocations.mig_owner(MIG_2G, BOARD, 2) is not None  # the last answer, 50 s old
        clock[0] = 61.0
        assert allocations.mig_owner(MIG_2G, BOARD, 2) is None  # too old to charge anyone


# An A100-like board: MIG hands out 98 SMs (7 x 14); 3g = 42, 2g = 28, 1g = 14.
def _board(power_w: float = 350.0) -> FakeGpu:
    return FakeGpu(
        uuid=BOARD,
        power_w=power_w,
        board_sm_count=108,
        profile_sm_counts={0: 14, 9: 98},
        mig=[
            FakeMigInstance(1, 42, uuid=MIG_3G),
            FakeMigInstance(2, 28, uuid=MIG_2G),
            FakeMigInstance(3, 14, uuid=MIG_1G),
            FakeMigInstance(4, 14, uuid=MIG_1G_SHARED),
        ],
        processes=[FakeProcess(pid=501, gpu_instance_id=1, compute_instance_id=0)],
    )


def test_nvml_lists_mig_devices_with_their_uuids_even_without_processes() -> None:
    gpu = _board()
    gpu.processes = []
    nvml = FakeNvml(gpus=[gpu, FakeGpu(uuid="GPU-plain")])
    source = NvmlGpuSource(nvml=nvml)
    mig, plain = source.read(0.0)
    assert mig.mig_instances == (
        MigInstance(1, MIG_3G, pytest.approx(42 / 98)),
        MigInstance(2, MIG_2G, pytest.approx(28 / 98)),
        MigInstance(3, MIG_1G, pytest.approx(14 / 98)),
        MigInstance(4, MIG_1G_SHARED, pytest.approx(14 / 98)),
    )
    assert plain.mig_instances is None
    # An instance created while no process shows in it is listed at the next minute's look.
    gpu.mig = (gpu.mig or []) + [FakeMigInstance(5, 14)]
    assert len(source.read(30.0)[0].mig_instances or ()) == 4
    listed = source.read(61.0)[0].mig_instances or ()
    assert [m.gpu_instance_id for m in listed] == [1, 2, 3, 4, 5]
    # The fake's canonical UUID for an instance created without one: stable from read to read.
    assert listed[4].uuid.startswith("MIG-") and (source.read(62.0)[0].mig_instances or ())[4] == listed[4]
    assert nvml.calls["nvmlDeviceGetMaxMigDeviceCount"] == 2


def test_held_idle_instance_gets_the_share_an_occupied_one_gets_and_conservation_is_exact() -> None:
    instances = (
        MigInstance(1, MIG_3G, 42 / 98),
        MigInstance(2, MIG_2G, 28 / 98),
        MigInstance(3, MIG_1G, 14 / 98),
        MigInstance(4, MIG_1G_SHARED, 14 / 98),
    )
    visible = (GpuProcessSample(pid=501, gpu_instance_id=1, mig_sm_share=42 / 98),)
    owners = {MIG_2G: INFER, MIG_3G: PodRef("trainer", "ml")}
    held = held_idle_instances(instances, BOARD, visible, lambda uuid, gpu, gi: owners.get(uuid))
    # gi 1 is occupied (its process is charged as a process), gi 3 and 4 have no owner.
    assert held == [(INFER, GpuProcessSample(pid=0, gpu_instance_id=2, mig_sm_share=28 / 98))]
    for energy in (3500.0, 0.1 + 0.2, 1234.5678901):
        shares, unattributed = attribute_gpu_energy(energy, 1.0, (*visible, held[0][1]))
        assert math.fsum([*shares, unattributed]) == energy
        assert shares == [pytest.approx(energy * 42 / 98), pytest.approx(energy * 28 / 98)]
    # Not knowing the instance's share, or the instance being occupied, charges nobody.
    unknown = (MigInstance(2, MIG_2G, None),)
    assert held_idle_instances(unknown, BOARD, (), lambda *a: INFER) == []
    busy = (GpuProcessSample(pid=7, gpu_instance_id=2, mig_sm_share=28 / 98),)
    assert held_idle_instances(instances[1:2], BOARD, busy, lambda *a: INFER) == []
    # Two compute instances of one GPU instance held by two pods: the instance is nobody's.
    two = (MigInstance(2, MIG_2G, 28 / 98), MigInstance(2, MIG_1G, 28 / 98))
    pods = {MIG_2G: INFER, MIG_1G: PodRef("other", "ns")}
    assert held_idle_instances(two, BOARD, (), lambda uuid, gpu, gi: pods.get(uuid)) == []
    assert held_idle_instances(two, BOARD, (), lambda *a: INFER)[0][0] == INFER


def _sampler(
    tmp_path: Path, owners: dict[str, PodRef] | None, group_by: str = "pid"
) -> tuple[Sampler, FakeNvml, Callable[[], None]]:
    nvml = FakeNvml(gpus=[_board()])
    att = Attribution(
        policy=AttributionPolicy(),
        resolver=WorkloadResolver(str(tmp_path / "noproc")),
        gpu_ledger=ProcessLedger(group_by),
        cpu_ledger=ProcessLedger(group_by),
        gpu_owner=lambda uuid, index: None,
        mig_owner=None if owners is None else (lambda uuid, gpu, gi: owners.get(uuid)),
    )
    clock = [0.0]
    sampler = Sampler(
        NvmlGpuSource(nvml=nvml, procfs_root=str(tmp_path)), None, attribution=att, clock=lambda: clock[0]
    )
    sampler.tick()

    def tick() -> None:
        nvml.advance(1.0)
        clock[0] += 1.0
        sampler.tick()

    return sampler, nvml, tick


@pytest.mark.parametrize("group_by", ["pid", "pod"])
def test_the_sampler_charges_the_held_idle_instance_to_its_pod(tmp_path: Path, group_by: str) -> None:
    sampler, _, tick = _sampler(tmp_path, {MIG_2G: INFER}, group_by)
    tick()
    # One interval: every figure is a single value, so conservation is checked exactly.
    snap = sampler.snapshot
    (gpu,) = snap.gpus
    series = {(p.pid, p.workload.pod): p.energy_j_total for p in snap.gpu_processes}
    pod = series.pop(("", "infer-2"))
    (process,) = series.values()
    assert gpu.energy_j_total == pytest.approx(350.0)
    assert process == pytest.approx(350.0 * 42 / 98, rel=1e-12)  # the occupied 3g instance, as before
    assert pod == pytest.approx(350.0 * 28 / 98, rel=1e-12)  # the held 2g instance, same rule
    assert gpu.unattributed_energy_j_total == pytest.approx(350.0 * 28 / 98, rel=1e-12)  # two free 1g
    assert math.fsum([process, pod, gpu.unattributed_energy_j_total]) == gpu.energy_j_total
    for _ in range(9):
        tick()
    snap = sampler.snapshot
    (gpu,) = snap.gpus
    (held,) = [p for p in snap.gpu_processes if p.workload.pod == "infer-2" and p.pid == ""]
    assert (held.workload.namespace, held.workload.comm) == ("serving", "")
    assert held.energy_j_total == pytest.approx(3500.0 * 28 / 98, rel=1e-12)
    attributed = math.fsum(p.energy_j_total for p in snap.gpu_processes)
    assert attributed + gpu.unattributed_energy_j_total == pytest.approx(gpu.energy_j_total, rel=1e-12)


def test_without_owners_the_held_instance_stays_unattributed_as_before(tmp_path: Path) -> None:
    sampler, _, tick = _sampler(tmp_path, None)
    for _ in range(10):
        tick()
    snap = sampler.snapshot
    (gpu,) = snap.gpus
    (process,) = snap.gpu_processes
    assert process.pid == "501"
    assert process.energy_j_total == pytest.approx(3500.0 * 42 / 98, rel=1e-12)
    assert gpu.unattributed_energy_j_total == pytest.approx(3500.0 * 56 / 98, rel=1e-12)


def test_a_process_showing_in_the_held_instance_is_charged_instead_of_the_pod(tmp_path: Path) -> None:
    sampler, nvml, tick = _sampler(tmp_path, {MIG_2G: INFER})
    for _ in range(2):
        tick()
    nvml.gpus[0].processes.append(FakeProcess(pid=777, gpu_instance_id=2))
    before = next(p for p in sampler.snapshot.gpu_processes if p.workload.pod == "infer-2").energy_j_total
    for _ in range(3):
        tick()
    snap = sampler.snapshot
    pod = next(p for p in snap.gpu_processes if p.workload.pod == "infer-2")
    assert pod.energy_j_total == before  # no longer charged as an allocation
    (newcomer,) = [p for p in snap.gpu_processes if p.pid == "777"]
    assert newcomer.energy_j_total == pytest.approx(3 * 350.0 * 28 / 98, rel=1e-12)


def test_replay_traces_carry_mig_instances_and_check_them(tmp_path: Path) -> None:
    gpu = {
        "index": 0,
        "uuid": BOARD,
        "power_w": 350.0,
        "processes": [{"pid": 501, "gpu_instance_id": 1, "mig_sm_share": 42 / 98}],
        "mig_instances": [
            {"gpu_instance_id": 1, "uuid": MIG_3G, "sm_share": 42 / 98},
            {"gpu_instance_id": 2, "uuid": MIG_2G, "sm_share": 28 / 98},
            {"gpu_instance_id": 3, "uuid": MIG_1G},
        ],
    }
    path = tmp_path / "mig.jsonl"
    path.write_text(
        json.dumps({"t": 0.0, "gpus": [gpu]}) + "\n" + json.dumps({"t": 1.0, "gpus": [gpu]}) + "\n"
    )
    (reading,) = ReplayGpuSource(str(path)).read(0.5)
    assert reading.mig_instances == (
        MigInstance(1, MIG_3G, 42 / 98),
        MigInstance(2, MIG_2G, 28 / 98),
        MigInstance(3, MIG_1G, None),
    )
    (process,) = reading.processes or ()
    assert (process.gpu_instance_id, process.mig_sm_share) == (1, 42 / 98)
    # What record writes, replay reads back the same.
    assert reading_to_json(reading)["mig_instances"] == gpu["mig_instances"]  # type: ignore[index]
    assert reading_to_json(reading)["processes"][0]["gpu_instance_id"] == 1  # type: ignore[index]
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"t": 0.0, "gpus": [{"index": 0, "uuid": BOARD, "power_w": 1.0}]}) + "\n")
    assert ReplayGpuSource(str(plain)).read(0.0)[0].mig_instances is None


@pytest.mark.parametrize(
    ("mig", "fragment"),
    [
        ({"gpu_instance_id": 1}, "line 1.gpus[0].mig_instances[0] needs gpu_instance_id and uuid"),
        ({"gpu_instance_id": -1, "uuid": MIG_2G}, "line 1.gpus[0].mig_instances[0].gpu_instance_id"),
        ({"gpu_instance_id": 1, "uuid": 7}, "line 1.gpus[0].mig_instances[0].uuid"),
        (
            {"gpu_instance_id": 1, "uuid": MIG_2G, "sm_share": 1.5},
            "mig_instances[0].sm_share: 1.5 is outside",
        ),
    ],
)
def test_bad_mig_instances_name_the_line(tmp_path: Path, mig: dict[str, object], fragment: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps({"t": 0, "gpus": [{"index": 0, "uuid": BOARD, "power_w": 1, "mig_instances": [mig]}]})
    )
    with pytest.raises(ConfigError) as info:
        ReplayGpuSource(str(path))
    assert fragment in info.value.problem
