"""Tests for the utilisation x TDP CPU power estimate, on /proc fixture trees in tmp_path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from exporter.sources import SourceUnavailable
from exporter.sources.cpu import select_cpu_source
from exporter.sources.cpu_estimate import (
    DEFAULT_WATTS_PER_CORE,
    IDLE_FRACTION,
    TDP_TABLE,
    EstimatedCpuSource,
    ProcStatUtilisation,
    lookup_cpu_model,
    parse_cpuinfo,
)

XEON_8380 = "Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz"


def cpuinfo(model: str | None, sockets: dict[int, int] | None, cpus_per_socket: int = 2) -> str:
    """/proc/cpuinfo text: ``sockets`` maps physical id to `cpu cores`; None leaves both out."""
    blocks: list[str] = []
    layout = sockets if sockets is not None else {-1: 0}
    n = 0
    for socket, cores in layout.items():
        for _ in range(cpus_per_socket):
            lines = [f"processor\t: {n}", "vendor_id\t: GenuineIntel"]
            if model is not None:
                lines.append(f"model name\t: {model}")
            if socket >= 0:
                lines += [f"physical id\t: {socket}", f"siblings\t: {cores * 2}", f"cpu cores\t: {cores}"]
            blocks.append("\n".join(lines))
            n += 1
    return "\n\n".join(blocks) + "\n\n"


def proc_tree(tmp_path: Path, info: str, stat: str = "cpu  100 0 100 800 0 0 0 0 0 0\n") -> str:
    proc = tmp_path / "proc"
    proc.mkdir(exist_ok=True)
    (proc / "cpuinfo").write_text(info)
    (proc / "stat").write_text(stat)
    return str(proc)


def fixed(values: list[float | None]) -> Callable[[], float | None]:
    it: Iterator[float | None] = iter(values)
    return lambda: next(it)


@pytest.mark.parametrize(
    ("model_name", "label", "tdp"),
    [
        (XEON_8380, "Intel Xeon Platinum 8380", 270.0),
        ("Intel(R) Xeon(R) Platinum 8480+", "Intel Xeon Platinum 8480+", 350.0),
        ("Intel(R) Xeon(R) Platinum 8280 CPU @ 2.70GHz", "Intel Xeon Platinum 8280", 205.0),
        ("Intel(R) Xeon(R) Platinum 8280L CPU @ 2.70GHz", "Intel Xeon Platinum 8280", 205.0),
        ("AMD EPYC 9654 96-Core Processor", "AMD EPYC 9654", 360.0),
        ("AMD EPYC 7763 64-Core Processor", "AMD EPYC 7763", 280.0),
        ("AMD EPYC 7742 64-Core Processor", "AMD EPYC 7742", 225.0),
        ("AMD EPYC 9554 64-Core Processor", "AMD EPYC 9554", 360.0),
        ("Neoverse-V2", "NVIDIA Grace", 250.0),
    ],
)
def test_table_lookup_by_model_name(model_name: str, label: str, tdp: float) -> None:
    spec = lookup_cpu_model(model_name)
    assert spec is not None
    assert (spec.label, spec.tdp_w) == (label, tdp)


@pytest.mark.parametrize(
    "model_name",
    ["Intel(R) Xeon(R) Platinum 8380H CPU @ 2.90GHz", "AMD EPYC 77630", "Intel(R) Core(TM) i7-8550U", ""],
)
def test_lookup_does_not_match_neighbouring_models(model_name: str) -> None:
    assert lookup_cpu_model(model_name) is None


def test_default_watts_per_core_is_the_tables_median() -> None:
    per_core = sorted(spec.tdp_w / spec.cores for spec in TDP_TABLE)
    mid = len(per_core) // 2
    median = per_core[mid] if len(per_core) % 2 else (per_core[mid - 1] + per_core[mid]) / 2
    assert abs(DEFAULT_WATTS_PER_CORE - median) < 0.05


def test_parse_cpuinfo_two_sockets() -> None:
    topo = parse_cpuinfo(cpuinfo(XEON_8380, {0: 40, 1: 40}))
    assert topo.model_name == XEON_8380
    assert topo.cores_per_socket == {0: 40, 1: 40}


def test_parse_cpuinfo_without_physical_id_is_one_socket_of_its_cpus() -> None:
    topo = parse_cpuinfo(cpuinfo("Some CPU", None, cpus_per_socket=3))
    assert topo.cores_per_socket == {0: 3}


def test_parse_arm64_cpuinfo_names_grace() -> None:
    block = "processor\t: {n}\nBogoMIPS\t: 2000.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd4f\n"
    text = "\n".join(block.format(n=n) for n in range(72)) + "\nHardware\t: whatever\n"
    topo = parse_cpuinfo(text)
    assert topo.model_name == "Neoverse-V2"
    assert topo.cores_per_socket == {0: 72}


def test_power_follows_utilisation_and_tdp_per_the_model(tmp_path: Path) -> None:
    procfs = proc_tree(tmp_path, cpuinfo(XEON_8380, {0: 40, 1: 40}))
    source = EstimatedCpuSource(procfs, utilisation=fixed([0.0, 0.5, 1.0, 1.7]))
    assert source.tdp_watts_per_socket == {0: 270.0, 1: 270.0}
    assert source.tdp_source == "table"
    assert IDLE_FRACTION == 0.2
    expected = [54.0, 162.0, 270.0, 270.0]  # 270 x (0.2 + 0.8 u), u clamped to 1
    for t, watts in enumerate(expected):
        readings = source.read(float(t))
        assert [r.package for r in readings] == ["package-0", "package-1"]
        assert {r.method for r in readings} == {"estimated"}
        assert [r.power_w for r in readings] == [pytest.approx(watts, rel=1e-12)] * 2


def test_tdp_flag_wins_over_the_table(tmp_path: Path) -> None:
    procfs = proc_tree(tmp_path, cpuinfo(XEON_8380, {0: 40}))
    source = EstimatedCpuSource(procfs, tdp_watts=100.0, utilisation=fixed([0.25]))
    assert source.tdp_source == "flag"
    assert source.read(0.0)[0].power_w == pytest.approx(100.0 * (0.2 + 0.8 * 0.25), rel=1e-12)
    assert "TDP 100 W per socket from --source.cpu.tdp-watts" in source.describe()


def test_energy_integrates_exactly_for_constant_utilisation(tmp_path: Path) -> None:
    procfs = proc_tree(tmp_path, cpuinfo(XEON_8380, {0: 40, 1: 40}))
    source = EstimatedCpuSource(procfs, utilisation=lambda: 0.6)
    times = [10.0, 11.0, 13.5, 13.75, 20.0]  # uneven intervals on purpose
    readings = []
    for t in times:
        readings = source.read(t)
    watts = 270.0 * (0.2 + 0.8 * 0.6)  # 183.6 W per socket
    assert [r.energy_j for r in readings] == [pytest.approx(watts * 10.0, rel=1e-12)] * 2
    assert readings[0].energy_j == pytest.approx(1836.0, rel=1e-12)


def test_energy_of_each_interval_uses_that_intervals_average_utilisation(tmp_path: Path) -> None:
    procfs = proc_tree(tmp_path, cpuinfo(XEON_8380, {0: 40}))
    source = EstimatedCpuSource(procfs, utilisation=fixed([None, 0.0, 1.0, None]))
    first = source.read(0.0)[0]
    assert (first.energy_j, first.power_w) == (0.0, None)
    assert source.read(1.0)[0].energy_j == pytest.approx(54.0)  # idle for 1 s
    assert source.read(3.0)[0].energy_j == pytest.approx(54.0 + 2 * 270.0)  # full for 2 s
    # No new utilisation interval (same /proc/stat tick): the last value is held, not dropped.
    held = source.read(4.0)[0]
    assert held.power_w == pytest.approx(270.0)
    assert held.energy_j == pytest.approx(54.0 + 3 * 270.0)


def test_vm_is_charged_the_visible_share_of_the_socket(tmp_path: Path) -> None:
    procfs = proc_tree(tmp_path, cpuinfo(XEON_8380, {0: 4}))
    source = EstimatedCpuSource(procfs, utilisation=fixed([1.0]))
    assert source.tdp_watts_per_socket == {0: pytest.approx(27.0)}  # 270 W x 4/40 cores
    assert source.read(0.0)[0].power_w == pytest.approx(27.0)
    assert "scaled to the 4 of its 40 cores" in source.describe()


def test_unknown_cpu_uses_the_per_core_default(tmp_path: Path) -> None:
    procfs = proc_tree(tmp_path, cpuinfo("Mystery CPU 9000", {0: 8}))
    source = EstimatedCpuSource(procfs, utilisation=fixed([0.0]))
    assert source.tdp_source == "default"
    assert source.tdp_watts_per_socket == {0: pytest.approx(DEFAULT_WATTS_PER_CORE * 8)}
    assert source.read(0.0)[0].power_w == pytest.approx(0.2 * 6.3 * 8)
    assert "Mystery CPU 9000 is not in the built-in table" in source.describe()


def test_proc_stat_utilisation_excludes_steal_and_iowait(tmp_path: Path) -> None:
    procfs = proc_tree(tmp_path, "")
    stat = tmp_path / "proc" / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 0 50 800 50 0 0 20 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    util = ProcStatUtilisation(procfs)
    assert util() is None
    stat.write_text("cpu  400 20 100 1100 100 10 20 500 30 0\n")
    # busy +400 (300 user, 20 nice, 50 system, 10 irq, 20 softirq); idle +350 (300 idle, 50 iowait)
    assert util() == pytest.approx(400 / 750, rel=1e-12)
    assert util() is None  # no time passed


def test_default_utilisation_reads_procfs(tmp_path: Path) -> None:
    procfs = proc_tree(tmp_path, cpuinfo(XEON_8380, {0: 40}), stat="cpu  0 0 0 0 0 0 0 0 0 0\n")
    source = EstimatedCpuSource(procfs)
    (tmp_path / "proc" / "stat").write_text("cpu  300 0 0 100 0 0 0 0 0 0\n")  # 75% busy since start
    assert source.read(5.0)[0].power_w == pytest.approx(270.0 * (0.2 + 0.8 * 0.75), rel=1e-12)
    (tmp_path / "proc" / "stat").unlink()
    with pytest.raises(OSError, match="CPU utilisation unreadable"):
        source.read(6.0)
    assert source.errors() == {"io": 1}


def test_missing_proc_stat_makes_the_estimate_unavailable(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable) as info:
        EstimatedCpuSource(str(tmp_path / "nowhere"))
    assert info.value.kind == "absent"
    with pytest.raises(SourceUnavailable):
        select_cpu_source("estimated", sysfs_root=str(tmp_path), procfs_root=str(tmp_path))
    source, reason = select_cpu_source("auto", sysfs_root=str(tmp_path), procfs_root=str(tmp_path))
    assert source is None
    assert reason.startswith("RAPL not readable: ") and "no CPU power either" in reason


def test_select_estimated_mode_says_why_and_which_tdp(tmp_path: Path) -> None:
    procfs = proc_tree(tmp_path, cpuinfo("AMD EPYC 9654 96-Core Processor", {0: 96, 1: 96}))
    source, reason = select_cpu_source("estimated", procfs_root=procfs, sysfs_root=str(tmp_path))
    assert isinstance(source, EstimatedCpuSource)
    assert source.reason == "selected by --source.cpu=estimated"
    assert reason == (
        "using estimated CPU power (TDP 360 W per socket, AMD EPYC 9654; 2 sockets), "
        "selected by --source.cpu=estimated"
    )
    source, reason = select_cpu_source("estimated", procfs_root=procfs, tdp_watts=320.0)
    assert isinstance(source, EstimatedCpuSource)
    assert source.tdp_watts_per_socket == {0: 320.0, 1: 320.0}


def test_bad_parameters_are_refused(tmp_path: Path) -> None:
    procfs = proc_tree(tmp_path, cpuinfo(XEON_8380, {0: 40}))
    with pytest.raises(ValueError, match="TDP"):
        EstimatedCpuSource(procfs, tdp_watts=-5.0)
    with pytest.raises(ValueError, match="idle fraction"):
        EstimatedCpuSource(procfs, idle_fraction=1.5)
