"""Tests for the RAPL powercap source and for select_cpu_source's RAPL side, on sysfs trees in tmp_path."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from exporter.errors import ConfigError
from exporter.model import CpuReading
from exporter.sources import SourceUnavailable, rapl
from exporter.sources.cpu import select_cpu_source
from exporter.sources.cpu_estimate import EstimatedCpuSource
from exporter.sources.rapl import RaplCpuSource

MAX_RANGE = 262143328850  # what Intel server parts report in max_energy_range_uj


def zone(path: Path, name: str, energy_uj: int, max_range: int = MAX_RANGE) -> Path:
    path.mkdir(parents=True)
    (path / "name").write_text(name + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_range}\n")
    return path


def package(
    powercap: Path, index: int, energy_uj: int, dram_uj: int | None, prefix: str = "intel-rapl"
) -> Path:
    """A package zone laid out as the kernel does: core, uncore and dram inside, links at the top."""
    top = zone(powercap / f"{prefix}:{index}", f"package-{index}", energy_uj)
    subs = [("core", 1_000_000), ("uncore", 2_000_000)]
    if dram_uj is not None:
        subs.append(("dram", dram_uj))
    for m, (name, uj) in enumerate(subs):
        zone(top / f"{prefix}:{index}:{m}", name, uj)
        os.symlink(top / f"{prefix}:{index}:{m}", powercap / f"{prefix}:{index}:{m}")
    return top


def set_energy(zone_dir: Path, energy_uj: int) -> None:
    (zone_dir / "energy_uj").write_text(f"{energy_uj}\n")


@pytest.fixture
def powercap(tmp_path: Path) -> Path:
    path = tmp_path / "sys" / "class" / "powercap"
    path.mkdir(parents=True)
    (path / "intel-rapl").mkdir()  # the control-type directory, which has no counter of its own
    return path


def sysfs(powercap: Path) -> str:
    return str(powercap.parent.parent)


def by_label(readings: list[CpuReading]) -> dict[str, CpuReading]:
    return {r.package: r for r in readings}


def test_one_package_exports_package_and_dram_but_not_core_or_uncore(powercap: Path) -> None:
    pkg = package(powercap, 0, energy_uj=5_000_000, dram_uj=7_000_000)
    source = RaplCpuSource(sysfs(powercap))
    assert source.name == "rapl"
    assert source.labels == ["package-0", "package-0-dram"]

    first = by_label(source.read(100.0))
    assert first["package-0"].energy_j == 0.0
    assert first["package-0"].power_w is None
    assert first["package-0"].method == "rapl"

    set_energy(pkg, 5_000_000 + 50_000_000)  # +50 J
    set_energy(pkg / "intel-rapl:0:2", 7_000_000 + 4_000_000)  # +4 J
    set_energy(pkg / "intel-rapl:0:0", 99_000_000)  # core moves too, and must stay invisible
    second = by_label(source.read(102.0))
    assert set(second) == {"package-0", "package-0-dram"}
    assert second["package-0"].energy_j == pytest.approx(50.0, rel=1e-12)
    assert second["package-0"].power_w == pytest.approx(25.0, rel=1e-12)
    assert second["package-0-dram"].energy_j == pytest.approx(4.0, rel=1e-12)
    assert second["package-0-dram"].power_w == pytest.approx(2.0, rel=1e-12)
    assert source.errors() == {}


def test_two_packages_skip_psys_and_mmio_duplicates(powercap: Path) -> None:
    p0 = package(powercap, 0, energy_uj=1_000_000, dram_uj=1_000_000)
    # Client-style psys zone and the MMIO twin of package-0: both would double count.
    zone(powercap / "intel-rapl:1", "psys", 3_000_000)
    p1 = package(powercap, 2, energy_uj=2_000_000, dram_uj=None)
    zone(powercap / "intel-rapl-mmio:0", "package-0", 4_000_000)
    source = RaplCpuSource(sysfs(powercap))
    assert source.labels == ["package-0", "package-0-dram", "package-2"]

    source.read(0.0)
    set_energy(p0, 1_000_000 + 100_000_000)
    set_energy(p1, 2_000_000 + 300_000_000)
    set_energy(powercap / "intel-rapl-mmio:0", 4_000_000 + 100_000_000)
    readings = by_label(source.read(1.0))
    assert readings["package-0"].power_w == pytest.approx(100.0, rel=1e-12)
    assert readings["package-2"].power_w == pytest.approx(300.0, rel=1e-12)
    assert readings["package-0-dram"].power_w == 0.0
    assert sum(r.energy_j or 0.0 for r in readings.values()) == pytest.approx(400.0, rel=1e-12)


def test_sub_zones_listed_only_at_top_level_are_found(powercap: Path) -> None:
    zone(powercap / "intel-rapl:0", "package-0", 10)
    zone(powercap / "intel-rapl:0:0", "core", 10)
    zone(powercap / "intel-rapl:0:1", "dram", 10)
    zone(powercap / "intel-rapl:1:0", "dram", 10)  # belongs to a package that is not there
    assert RaplCpuSource(sysfs(powercap)).labels == ["package-0", "package-0-dram"]


def test_amd_rapl_zones_are_accepted_and_not_doubled_with_intel_names(powercap: Path) -> None:
    package(powercap, 0, energy_uj=10, dram_uj=None)
    package(powercap, 0, energy_uj=10, dram_uj=None, prefix="amd-rapl")
    package(powercap, 1, energy_uj=10, dram_uj=None, prefix="amd-rapl")
    assert RaplCpuSource(sysfs(powercap)).labels == ["package-0", "package-1"]


def test_wrap_around_is_unwrapped_exactly(powercap: Path) -> None:
    pkg = package(powercap, 0, energy_uj=MAX_RANGE - 328_850, dram_uj=None)
    source = RaplCpuSource(sysfs(powercap))
    source.read(10.0)
    set_energy(pkg, 1_000_000)  # wrapped: 328_850 uJ to the top, then 1_000_000 past zero
    wrapped = source.read(10.5)[0]
    assert wrapped.energy_j == pytest.approx(1.32885, rel=1e-12)
    assert wrapped.power_w == pytest.approx(2.6577, rel=1e-12)
    set_energy(pkg, 3_000_000)
    after = source.read(11.5)[0]
    assert after.energy_j == pytest.approx(3.32885, rel=1e-12)
    assert after.power_w == pytest.approx(2.0, rel=1e-12)


def test_counter_going_back_without_known_range_never_decreases_total(powercap: Path) -> None:
    pkg = package(powercap, 0, energy_uj=5_000_000, dram_uj=None)
    (pkg / "max_energy_range_uj").unlink()
    source = RaplCpuSource(sysfs(powercap))
    source.read(0.0)
    set_energy(pkg, 8_000_000)
    assert source.read(1.0)[0].energy_j == pytest.approx(3.0)
    set_energy(pkg, 1_000_000)  # backwards, range unknown: cannot be unwrapped
    assert source.read(2.0) == []
    assert source.errors() == {"range": 1}
    set_energy(pkg, 2_500_000)
    resumed = source.read(3.0)[0]
    assert resumed.energy_j == pytest.approx(4.5)
    assert resumed.power_w == pytest.approx(1.5)


def denying(target_suffix: str, calls: list[str]) -> Callable[[str], str]:
    """A reader that refuses energy_uj as a non-root user sees it on a patched kernel."""

    def read(path: str) -> str:
        if path.endswith(target_suffix):
            calls.append(path)
            raise PermissionError(errno.EACCES, "Permission denied", path)
        with open(path, encoding="ascii") as f:
            return f.read()

    return read


def test_permission_denied_raises_source_unavailable_with_advice(powercap: Path) -> None:
    package(powercap, 0, energy_uj=10, dram_uj=10)
    calls: list[str] = []
    with pytest.raises(SourceUnavailable) as info:
        RaplCpuSource(sysfs(powercap), opener=denying("energy_uj", calls))
    assert info.value.kind == "permission"
    assert calls == [str(powercap / "intel-rapl:0" / "energy_uj")]
    message = str(info.value)
    assert f"permission denied on {powercap}/intel-rapl:0/energy_uj" in message
    assert "root" in message and "estimated" in message


def test_auto_falls_back_to_estimate_on_permission_denied(
    powercap: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package(powercap, 0, energy_uj=10, dram_uj=None)
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cpuinfo").write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz\n"
        "physical id\t: 0\ncpu cores\t: 40\n\n"
    )
    (proc / "stat").write_text("cpu  100 0 100 800 0 0 0 0 0 0\n")
    calls: list[str] = []
    # select_cpu_source builds RaplCpuSource with the default reader: replace that reader.
    monkeypatch.setattr(rapl, "_read_text", denying("energy_uj", calls))
    source, reason = select_cpu_source("auto", sysfs_root=sysfs(powercap), procfs_root=str(proc))
    assert calls, "the permission path was not exercised"
    assert isinstance(source, EstimatedCpuSource)
    assert source.name == "estimated"
    assert reason.startswith(f"RAPL not readable: permission denied on {powercap}/intel-rapl:0/energy_uj")
    assert "using estimated CPU power (TDP 270 W per socket, Intel Xeon Platinum 8380" in reason
    assert "permission denied" in source.reason
    with pytest.raises(SourceUnavailable) as info:
        select_cpu_source("rapl", sysfs_root=sysfs(powercap), procfs_root=str(proc))
    assert info.value.kind == "permission"


def test_absent_powercap_is_source_unavailable_absent(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable) as info:
        RaplCpuSource(str(tmp_path))
    assert info.value.kind == "absent"
    assert "--path.sysfs" in str(info.value)


def test_powercap_without_rapl_zones_is_absent(powercap: Path) -> None:
    zone(powercap / "dtpm", "dtpm", 10)  # another powercap driver, not RAPL
    with pytest.raises(SourceUnavailable) as info:
        RaplCpuSource(sysfs(powercap))
    assert info.value.kind == "absent"
    assert "no RAPL package zones" in str(info.value)


def test_auto_with_absent_powercap_uses_estimate(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cpuinfo").write_text("processor\t: 0\nmodel name\t: AMD EPYC 7763 64-Core Processor\n\n")
    (proc / "stat").write_text("cpu  1 0 1 8 0 0 0 0 0 0\n")
    source, reason = select_cpu_source("auto", sysfs_root=str(tmp_path), procfs_root=str(proc))
    assert isinstance(source, EstimatedCpuSource)
    assert reason.startswith("RAPL not readable: no powercap interface at")
    # One visible core of a 64-core part: 280 W x 1/64.
    assert source.tdp_watts_per_socket == {0: pytest.approx(4.375)}


def test_auto_and_rapl_modes_pick_rapl_when_readable(powercap: Path, tmp_path: Path) -> None:
    package(powercap, 0, energy_uj=10, dram_uj=20)
    for mode in ("auto", "rapl"):
        source, reason = select_cpu_source(mode, sysfs_root=sysfs(powercap), procfs_root=str(tmp_path))
        assert isinstance(source, RaplCpuSource)
        assert reason == f"using RAPL energy counters under {powercap} (package-0, package-0-dram)"


def test_none_mode_and_bad_values() -> None:
    assert select_cpu_source("none") == (None, "CPU power disabled by --source.cpu=none")
    with pytest.raises(ConfigError) as bad_mode:
        select_cpu_source("magic")
    assert bad_mode.value.key == "source.cpu"
    with pytest.raises(ConfigError) as bad_tdp:
        select_cpu_source("estimated", tdp_watts=0.0)
    assert bad_tdp.value.key == "source.cpu.tdp-watts"


def test_io_error_on_one_domain_skips_it_and_counts(powercap: Path) -> None:
    p0 = package(powercap, 0, energy_uj=0, dram_uj=None)
    p1 = package(powercap, 1, energy_uj=0, dram_uj=None)
    failing = {"on": False}

    def flaky(path: str) -> str:
        if failing["on"] and path == str(p1 / "energy_uj"):
            raise OSError(errno.EIO, "Input/output error", path)
        with open(path, encoding="ascii") as f:
            return f.read()

    source = RaplCpuSource(sysfs(powercap), opener=flaky)
    source.read(0.0)
    set_energy(p0, 10_000_000)
    set_energy(p1, 20_000_000)
    failing["on"] = True
    during = source.read(1.0)
    assert [r.package for r in during] == ["package-0"]
    assert source.errors() == {"io": 1}

    failing["on"] = False
    set_energy(p0, 20_000_000)
    set_energy(p1, 40_000_000)
    after = by_label(source.read(2.0))
    assert after["package-0"].energy_j == pytest.approx(20.0)
    assert after["package-0"].power_w == pytest.approx(10.0)
    # package-1 resumes from its last good read at t=0: 40 J over 2 s, nothing lost.
    assert after["package-1"].energy_j == pytest.approx(40.0)
    assert after["package-1"].power_w == pytest.approx(20.0)


def test_every_domain_failing_raises_so_the_source_shows_down(powercap: Path) -> None:
    pkg = package(powercap, 0, energy_uj=0, dram_uj=None)
    source = RaplCpuSource(sysfs(powercap))
    source.read(0.0)
    (pkg / "energy_uj").unlink()
    (pkg / "energy_uj").mkdir()  # reading it now fails with EISDIR
    with pytest.raises(OSError, match="no RAPL counter"):
        source.read(1.0)
    assert source.errors() == {"io": 1}


def test_unreadable_dram_counter_is_dropped_at_start(powercap: Path) -> None:
    pkg = package(powercap, 0, energy_uj=0, dram_uj=0)
    dram = pkg / "intel-rapl:0:2" / "energy_uj"
    dram.unlink()
    dram.mkdir()  # some AMD parts list a dram zone whose counter cannot be read
    assert RaplCpuSource(sysfs(powercap)).labels == ["package-0"]


def test_unreadable_package_counter_is_an_io_failure(powercap: Path) -> None:
    pkg = package(powercap, 0, energy_uj=0, dram_uj=None)
    (pkg / "energy_uj").write_text("not a number\n")
    with pytest.raises(SourceUnavailable) as info:
        RaplCpuSource(sysfs(powercap))
    assert info.value.kind == "io"
