"""NVIDIA GPUs counted from a sysfs PCI tree, whatever NVML can see."""

from __future__ import annotations

import os
from pathlib import Path

from exporter.sources.pci import count_nvidia_gpus


def device(
    root: Path, address: str, vendor: str, cls: str, driver: str | None = None, vf: bool = False
) -> None:
    """One PCI function as the kernel shows it under /sys/bus/pci/devices (files end in a newline)."""
    d = root / "bus" / "pci" / "devices" / address
    d.mkdir(parents=True)
    (d / "vendor").write_text(vendor + "\n")
    (d / "class").write_text(cls + "\n")
    if driver is not None:
        target = root / "bus" / "pci" / "drivers" / driver
        target.mkdir(parents=True, exist_ok=True)
        os.symlink(target, d / "driver")
    if vf:
        os.symlink(root / "bus" / "pci" / "devices" / "0000:18:00.0", d / "physfn")


def test_counts_gpus_by_driver_and_skips_everything_else(tmp_path: Path) -> None:
    device(tmp_path, "0000:18:00.0", "0x10de", "0x030200", "nvidia")  # H100 (3D controller)
    device(tmp_path, "0000:3b:00.0", "0x10de", "0x030000", "nvidia")  # VGA-compatible
    device(tmp_path, "0000:86:00.0", "0x10de", "0x030200", "vfio-pci")  # passed through to a VM
    device(tmp_path, "0000:af:00.0", "0x10de", "0x030200")  # no driver bound
    device(tmp_path, "0000:18:00.4", "0x10de", "0x030200", "nvidia", vf=True)  # SR-IOV VF
    device(tmp_path, "0000:05:00.0", "0x10de", "0x068000", "nvidia-nvswitch")  # NVSwitch
    device(tmp_path, "0000:18:00.1", "0x10de", "0x040300", "snd_hda_intel")  # the GPU's audio function
    device(tmp_path, "0000:00:02.0", "0x8086", "0x030000", "i915")  # another vendor's GPU
    assert count_nvidia_gpus(str(tmp_path)) == {"nvidia": 2, "vfio-pci": 1, "": 1}


def test_no_nvidia_gpu_is_zero_and_no_sysfs_is_unknown(tmp_path: Path) -> None:
    device(tmp_path, "0000:00:02.0", "0x8086", "0x030000", "i915")
    assert count_nvidia_gpus(str(tmp_path)) == {"nvidia": 0}
    assert count_nvidia_gpus(str(tmp_path / "absent")) is None
