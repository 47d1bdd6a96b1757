"""MIG instances a pod holds without a visible process: stand-ins that let the split charge the pod."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from exporter.model import GpuProcessSample, MigInstance
from exporter.podlookup import PodRef

# (MIG device UUID, GPU UUID, GPU instance id) -> the pod the device plugin gave that device to alone.
MigOwner = Callable[[str, str, int], PodRef | None]


def held_idle_instances(
    instances: Sequence[MigInstance],
    gpu_uuid: str,
    processes: Sequence[GpuProcessSample],
    owner_of: MigOwner,
) -> list[tuple[PodRef, GpuProcessSample]]:
    """Each GPU instance that no visible process runs in and that one pod holds alone, with a stand-in.

    The stand-in is a process in that instance with the instance's share, so the MIG split gives it
    exactly what an occupied instance gets (docs/attribution.md, "MIG"). NVML may not show a pod's
    processes (the exporter is not root) or the pod may hold the instance idle: either way the
    device plugin gave it to that pod. An instance counts only when its share is known and every MIG
    device in it is the same pod's.
    """
    occupied = {p.gpu_instance_id for p in processes}
    devices: dict[int, list[MigInstance]] = {}
    for instance in instances:
        devices.setdefault(instance.gpu_instance_id, []).append(instance)
    held: list[tuple[PodRef, GpuProcessSample]] = []
    for gi_id, members in devices.items():
        share = members[0].sm_share
        if gi_id in occupied or share is None or not share > 0:
            continue
        owners = {owner_of(m.uuid, gpu_uuid, gi_id) for m in members}
        if len(owners) != 1:
            continue
        (owner,) = owners
        if owner is not None:
            held.append((owner, GpuProcessSample(pid=0, gpu_instance_id=gi_id, mig_sm_share=share)))
    return held
