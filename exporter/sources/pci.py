"""NVIDIA GPUs present on the PCI bus, from sysfs: what a node has, whether or not NVML can see it."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

# PCI-SIG vendor ID of NVIDIA, and the base class / sub-class codes of display controllers that are
# GPUs: 0x0300 VGA-compatible controller, 0x0302 3D controller (data-center GPUs). NVSwitches
# (0x0680, bridge) and NVIDIA audio functions (0x0403) are not GPUs.
NVIDIA_VENDOR = "0x10de"
GPU_CLASSES = ("0x0300", "0x0302")


def _read(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as fh:
        return fh.read(64).strip().lower()


def count_nvidia_gpus(sysfs_root: str = "/sys") -> dict[str, int] | None:
    """Physical NVIDIA GPUs under ``<sysfs>/bus/pci/devices`` by the driver bound to them (on an H200 node:
    one function, class 0x030200, driver ``nvidia``, the GPU NVML lists).

    The key is the driver's name (``nvidia``; ``vfio-pci`` for a GPU passed through to a virtual
    machine, which this node's NVML cannot see by design; ``""`` when no driver is bound). SR-IOV
    virtual functions (they have a ``physfn`` link) are not counted: NVML counts physical GPUs.
    Returns None when the directory cannot be listed (no sysfs in this container), so that "no
    NVIDIA GPU" is never claimed without looking.
    """
    base = os.path.join(sysfs_root, "bus", "pci", "devices")
    try:
        entries = os.listdir(base)
    except OSError as exc:
        log.debug("cannot list %s: %s", base, exc)
        return None
    counts: dict[str, int] = {"nvidia": 0}  # served even at 0: "looked and found none"
    for entry in entries:
        device = os.path.join(base, entry)
        try:
            if _read(os.path.join(device, "vendor")) != NVIDIA_VENDOR:
                continue
            if _read(os.path.join(device, "class"))[:6] not in GPU_CLASSES:
                continue
        except OSError:
            continue
        if os.path.lexists(os.path.join(device, "physfn")):
            continue
        try:
            driver = os.path.basename(os.readlink(os.path.join(device, "driver")))
        except OSError:
            driver = ""
        counts[driver] = counts.get(driver, 0) + 1
    return counts
