"""Tests for exporter.sources.nvml against a fake pynvml that raises pynvml's real exceptions."""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import psutil
import pynvml
import pytest
from fake_pynvml import FakeGpu, FakeMigInstance, FakeNvml, FakeProcess
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.energy import EnergyTracker
from exporter.sources import SourceUnavailable
from exporter.sources import nvml as nvml_module
from exporter.sources.nvml import NvmlGpuSource


def three_gpus() -> FakeNvml:
    return FakeNvml(
        gpus=[
            FakeGpu(
                uuid="GPU-aaaa",
                name="NVIDIA H100 80GB HBM3",
                pci_bus_id="00000000:18:00.0",
                power_w=312.5,
                energy_j=10500.0,
                util_percent=87,
                mem_used_bytes=41_000_000_000,
                mem_total_bytes=85_899_345_920,
                temp_c=61,
                power_limit_w=700.0,
            ),
            FakeGpu(
                uuid="GPU-bbbb",
                name="Tesla P100-PCIE-16GB",
                pci_bus_id="00000000:3B:00.0",
                power_w=35.25,
                energy_j=None,
                util_percent=0,
                mem_used_bytes=0,
                mem_total_bytes=17_179_869_184,
                temp_c=33,
                power_limit_w=250.0,
            ),
            FakeGpu(
                uuid="GPU-cccc", pci_bus_id="00000000:86:00.0", power_w=99.999, energy_j=0.5, util_percent=100
            ),
        ]
    )


def test_constants_match_pynvml() -> None:
    assert nvml_module._SUCCESS == pynvml.NVML_SUCCESS
    assert nvml_module._NOT_SUPPORTED == pynvml.NVML_ERROR_NOT_SUPPORTED
    assert nvml_module._NO_PERMISSION == pynvml.NVML_ERROR_NO_PERMISSION
    assert nvml_module._NOT_FOUND == pynvml.NVML_ERROR_NOT_FOUND
    assert nvml_module._FUNCTION_NOT_FOUND == pynvml.NVML_ERROR_FUNCTION_NOT_FOUND
    assert nvml_module._GPU_IS_LOST == pynvml.NVML_ERROR_GPU_IS_LOST
    assert nvml_module._LIBRARY_NOT_FOUND == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    assert nvml_module._DRIVER_NOT_LOADED == pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    assert nvml_module._UNKNOWN == pynvml.NVML_ERROR_UNKNOWN
    assert nvml_module._INVALID_ARGUMENT == pynvml.NVML_ERROR_INVALID_ARGUMENT
    assert nvml_module._TEMPERATURE_GPU == pynvml.NVML_TEMPERATURE_GPU
    assert nvml_module._MIG_ENABLE == pynvml.NVML_DEVICE_MIG_ENABLE
    assert nvml_module._GPU_INSTANCE_PROFILE_COUNT == pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT
    # The fake raises the real classes, so the source's except clauses are tested for real.
    assert isinstance(pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED), pynvml.NVMLError_NotSupported)


def test_several_gpus_with_unit_conversions() -> None:
    nvml = three_gpus()
    source = NvmlGpuSource(nvml=nvml)
    a, b, c = source.read(0.0)
    assert source.name == "nvml"
    assert (a.index, a.uuid, a.name, a.pci_bus_id, a.driver_version) == (
        0,
        "GPU-aaaa",
        "NVIDIA H100 80GB HBM3",
        "00000000:18:00.0",
        "550.90.07",
    )
    assert a.up and a.error == ""
    assert a.power_w == pytest.approx(312.5)
    assert a.energy_j == pytest.approx(10500.0)
    assert a.util == pytest.approx(0.87)
    assert (a.mem_used_bytes, a.mem_total_bytes) == (41_000_000_000, 85_899_345_920)
    assert a.temp_c == 61.0
    assert a.power_limit_w == pytest.approx(700.0)
    assert a.processes == ()
    assert (b.index, b.uuid, b.name, b.pci_bus_id) == (
        1,
        "GPU-bbbb",
        "Tesla P100-PCIE-16GB",
        "00000000:3B:00.0",
    )
    assert b.power_w == pytest.approx(35.25)
    assert b.util == 0.0
    assert b.power_limit_w == pytest.approx(250.0)
    assert c.index == 2 and c.power_w == pytest.approx(99.999)
    assert c.energy_j == pytest.approx(0.5)
    assert c.util == pytest.approx(1.0)

    nvml.advance(2.0)
    a2, _, c2 = source.read(2.0)
    assert a2.energy_j == pytest.approx(10500.0 + 312.5 * 2.0)
    assert c2.energy_j == pytest.approx(0.5 + 99.999 * 2.0)
    assert source.errors() == {}


def test_gpu_without_energy_counter_is_none_and_not_asked_again() -> None:
    nvml = three_gpus()
    source = NvmlGpuSource(nvml=nvml)
    for step in range(4):
        nvml.advance(1.0)
        readings = source.read(float(step))
        assert readings[1].energy_j is None
        assert readings[1].power_w == pytest.approx(35.25)  # power is still there to integrate
        assert readings[1].up
    # GPUs 0 and 2 are asked on each of the 4 reads; GPU 1 only on the first.
    assert nvml.calls["nvmlDeviceGetTotalEnergyConsumption"] == 4 + 4 + 1
    assert source.errors() == {}


def test_unsupported_fields_are_none_not_zero() -> None:
    gpu = FakeGpu(
        uuid="GPU-old",
        unsupported={
            "nvmlDeviceGetTemperature",
            "nvmlDeviceGetEnforcedPowerLimit",
            "nvmlDeviceGetUtilizationRates",
            "nvmlDeviceGetMemoryInfo",
            "nvmlDeviceGetGraphicsRunningProcesses",
        },
        processes=[FakeProcess(pid=987654321)],
    )
    source = NvmlGpuSource(nvml=FakeNvml(gpus=[gpu]))
    (r,) = source.read(0.0)
    assert r.up
    assert r.power_w == pytest.approx(300.0)
    assert r.temp_c is None
    assert r.power_limit_w is None
    assert r.util is None
    assert r.mem_used_bytes is None and r.mem_total_bytes is None
    assert [p.pid for p in r.processes or ()] == [987654321]  # compute list still works
    assert source.errors() == {}


def test_no_permission_field_is_none_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    gpu = FakeGpu(
        uuid="GPU-p",
        failures={
            "nvmlDeviceGetComputeRunningProcesses": pynvml.NVML_ERROR_NO_PERMISSION,
            "nvmlDeviceGetGraphicsRunningProcesses": pynvml.NVML_ERROR_NO_PERMISSION,
            "nvmlDeviceGetTotalEnergyConsumption": pynvml.NVML_ERROR_NO_PERMISSION,
        },
    )
    nvml = FakeNvml(gpus=[gpu])
    source = NvmlGpuSource(nvml=nvml)
    (r,) = source.read(0.0)
    (r,) = source.read(1.0)
    assert r.up
    assert r.processes is None  # cannot list: not "no process"
    assert r.energy_j is None
    assert source.errors() == {"permission": 6}
    warnings = [r.getMessage() for r in caplog.records if "no permission" in r.getMessage()]
    assert len(warnings) == 3  # once per GPU and call, not once per read
    # Unlike NOT_SUPPORTED, a permission problem may be fixed at run time: it is asked again.
    assert nvml.calls["nvmlDeviceGetTotalEnergyConsumption"] == 2


def test_lost_gpu_is_down_while_others_are_read_and_comes_back() -> None:
    nvml = three_gpus()
    source = NvmlGpuSource(nvml=nvml)
    source.read(0.0)
    nvml.lose(1)
    nvml.advance(1.0)
    readings = source.read(1.0)
    assert [r.up for r in readings] == [True, False, True]
    lost = readings[1]
    assert (lost.index, lost.uuid, lost.name, lost.error) == (1, "GPU-bbbb", "Tesla P100-PCIE-16GB", "lost")
    assert lost.power_w is None and lost.energy_j is None and lost.processes is None
    assert readings[0].energy_j == pytest.approx(10500.0 + 312.5)
    readings = source.read(2.0)
    assert readings[1].up is False
    assert source.errors() == {"lost": 2}

    nvml.recover(1)
    nvml.gpus[1].power_w = 40.0
    readings = source.read(3.0)
    assert [r.up for r in readings] == [True, True, True]
    assert (readings[1].index, readings[1].uuid) == (1, "GPU-bbbb")
    assert readings[1].power_w == pytest.approx(40.0)
    # Found again by its UUID, so a renumbering cannot swap it with another GPU.
    assert nvml.calls["nvmlDeviceGetHandleByUUID"] >= 1
    assert source.errors() == {"lost": 2}


def test_gpu_lost_at_start_shows_down_then_gets_its_facts() -> None:
    nvml = three_gpus()
    nvml.lose(2)
    source = NvmlGpuSource(nvml=nvml)
    readings = source.read(0.0)
    assert (readings[2].index, readings[2].uuid, readings[2].up, readings[2].error) == (2, "", False, "lost")
    nvml.recover(2)
    readings = source.read(1.0)
    assert (readings[2].uuid, readings[2].pci_bus_id, readings[2].up) == (
        "GPU-cccc",
        "00000000:86:00.0",
        True,
    )


def test_unknown_error_takes_that_gpu_down() -> None:
    nvml = three_gpus()
    nvml.gpus[0].failures["nvmlDeviceGetPowerUsage"] = pynvml.NVML_ERROR_UNKNOWN
    nvml.gpus[2].failures["nvmlDeviceGetMemoryInfo"] = pynvml.NVML_ERROR_TIMEOUT
    source = NvmlGpuSource(nvml=nvml)
    readings = source.read(0.0)
    assert [(r.up, r.error) for r in readings] == [(False, "unknown"), (True, ""), (False, "timeout")]
    assert source.errors() == {"unknown": 1, "timeout": 1}


def test_sm_util_averages_only_samples_newer_than_the_last_read() -> None:
    gpu = FakeGpu(
        uuid="GPU-u",
        processes=[FakeProcess(pid=987654301), FakeProcess(pid=987654302), FakeProcess(pid=987654303)],
    )
    nvml = FakeNvml(gpus=[gpu])
    t0 = nvml.now_us
    nvml.add_sample(0, 987654301, 90, at_us=t0 - 2_000_000)
    nvml.add_sample(0, 987654301, 70, at_us=t0 - 1_000_000)
    nvml.add_sample(0, 987654302, 20, at_us=t0 - 1_000_000)
    source = NvmlGpuSource(nvml=nvml)
    (r,) = source.read(0.0)
    utils = {p.pid: p.sm_util for p in r.processes or ()}
    assert utils[987654301] == pytest.approx(0.80)
    assert utils[987654302] == pytest.approx(0.20)
    assert utils[987654303] == 0.0  # others were sampled, this one was idle

    nvml.advance(1.0)
    nvml.add_sample(0, 987654301, 10)
    nvml.add_sample(0, 987654303, 40, at_us=nvml.now_us - 500_000)
    nvml.add_sample(0, 987654303, 60)
    # NVML should not return it, but an old sample must not count twice even if it does.
    nvml.add_sample(0, 987654302, 100, at_us=t0 - 5_000_000)
    original = nvml.nvmlDeviceGetProcessUtilization
    nvml.nvmlDeviceGetProcessUtilization = lambda handle, ts: original(handle, 0)  # type: ignore[method-assign]
    (r,) = source.read(1.0)
    utils = {p.pid: p.sm_util for p in r.processes or ()}
    assert utils[987654301] == pytest.approx(0.10)
    assert utils[987654302] == 0.0
    assert utils[987654303] == pytest.approx(0.50)


def test_no_new_samples_gives_no_sm_util() -> None:
    gpu = FakeGpu(uuid="GPU-u", processes=[FakeProcess(pid=987654301), FakeProcess(pid=987654302)])
    nvml = FakeNvml(gpus=[gpu])
    nvml.add_sample(0, 987654301, 50)
    source = NvmlGpuSource(nvml=nvml)
    (r,) = source.read(0.0)
    assert [p.sm_util for p in r.processes or ()] == [pytest.approx(0.5), 0.0]
    nvml.advance(1.0)
    (r,) = source.read(1.0)  # NVML answers NOT_FOUND: nothing new
    assert [p.sm_util for p in r.processes or ()] == [None, None]
    assert r.up
    nvml.add_sample(0, 987654302, 30)
    (r,) = source.read(2.0)
    assert [p.sm_util for p in r.processes or ()] == [0.0, pytest.approx(0.3)]


def test_processes_are_deduplicated_and_memory_may_be_unavailable() -> None:
    gpu = FakeGpu(
        uuid="GPU-d",
        processes=[
            FakeProcess(pid=987654311, used_memory_bytes=3_000_000_000, compute=True, graphics=True),
            FakeProcess(pid=987654312, used_memory_bytes=None),
            FakeProcess(pid=987654313, used_memory_bytes=1_000_000, compute=False, graphics=True),
        ],
    )
    source = NvmlGpuSource(nvml=FakeNvml(gpus=[gpu]))
    (r,) = source.read(0.0)
    procs = {p.pid: p for p in r.processes or ()}
    assert sorted(procs) == [987654311, 987654312, 987654313]
    assert len(r.processes or ()) == 3
    assert procs[987654311].used_memory_bytes == 3_000_000_000  # not doubled
    assert procs[987654312].used_memory_bytes is None
    assert procs[987654313].used_memory_bytes == 1_000_000
    assert all(p.gpu_instance_id is None and p.mig_sm_share is None for p in procs.values())
    # Unknown PIDs (another PID namespace, already gone): empty strings, no crash.
    assert (procs[987654312].comm, procs[987654312].user, procs[987654312].start_time) == ("", "", None)


def test_mig_share_from_instance_and_board_attributes() -> None:
    gpu = FakeGpu(
        uuid="GPU-mig",
        board_sm_count=132,
        mig=[
            FakeMigInstance(gpu_instance_id=1, multiprocessor_count=66),
            FakeMigInstance(gpu_instance_id=5, multiprocessor_count=16),
        ],
        processes=[
            FakeProcess(pid=987654321, gpu_instance_id=1, compute_instance_id=0),
            FakeProcess(pid=987654322, gpu_instance_id=5, compute_instance_id=0),
        ],
    )
    nvml = FakeNvml(gpus=[gpu])
    nvml.add_sample(0, 987654321, 50)
    source = NvmlGpuSource(nvml=nvml)
    for now in (0.0, 1.0):
        (r,) = source.read(now)
        procs = {p.pid: p for p in r.processes or ()}
        assert procs[987654321].gpu_instance_id == 1
        assert procs[987654321].mig_sm_share == pytest.approx(0.5)
        assert procs[987654322].gpu_instance_id == 5
        assert procs[987654322].mig_sm_share == pytest.approx(16 / 132)
        assert all(p.sm_util is None for p in procs.values())  # no per-process utilisation on MIG
    assert nvml.calls["nvmlDeviceGetProcessUtilization"] == 0
    assert nvml.calls["nvmlDeviceGetMaxMigDeviceCount"] == 1  # layout cached while it does not change

    # A new instance appears: the layout is looked up again.
    gpu.mig.append(FakeMigInstance(gpu_instance_id=9, multiprocessor_count=33))
    gpu.processes.append(FakeProcess(pid=987654323, gpu_instance_id=9))
    (r,) = source.read(2.0)
    procs = {p.pid: p for p in r.processes or ()}
    assert procs[987654323].mig_sm_share == pytest.approx(0.25)


def test_mig_share_falls_back_to_profiles_then_none() -> None:
    mig = [FakeMigInstance(gpu_instance_id=2, multiprocessor_count=49)]
    procs = [FakeProcess(pid=987654321, gpu_instance_id=2)]
    gpu = FakeGpu(
        uuid="GPU-a100", board_attributes=False, profile_sm_counts={0: 14, 4: 98}, mig=mig, processes=procs
    )
    (r,) = NvmlGpuSource(nvml=FakeNvml(gpus=[gpu])).read(0.0)
    assert (r.processes or ())[0].mig_sm_share == pytest.approx(0.5)

    gpu = FakeGpu(uuid="GPU-a100", board_attributes=False, mig=list(mig), processes=list(procs))
    (r,) = NvmlGpuSource(nvml=FakeNvml(gpus=[gpu])).read(0.0)
    assert r.up
    assert (r.processes or ())[0].gpu_instance_id == 2
    assert (r.processes or ())[0].mig_sm_share is None


def test_process_names_users_and_start_times_from_psutil() -> None:
    me = psutil.Process()
    gpu = FakeGpu(uuid="GPU-p", processes=[FakeProcess(pid=os.getpid())])
    source = NvmlGpuSource(nvml=FakeNvml(gpus=[gpu]))
    (r,) = source.read(0.0)
    (p,) = r.processes or ()
    assert p.comm == me.name() and p.comm != ""
    assert p.user == me.username()
    assert p.start_time == pytest.approx(me.create_time())


def test_process_facts_from_a_procfs_tree(tmp_path: Path) -> None:
    root = tmp_path / "proc"
    (root / "4242").mkdir(parents=True)
    ticks = os.sysconf("SC_CLK_TCK")
    rest = " ".join(["S"] + ["0"] * 18 + [str(500 * ticks)] + ["0"] * 10)
    (root / "4242" / "stat").write_text(f"4242 (py thon) x) {rest}\n")
    (root / "4242" / "status").write_text("Name:\tpy thon\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n")
    (root / "4242" / "cmdline").write_text("python\0--token=SECRET\0")
    gpu = FakeGpu(uuid="GPU-p", processes=[FakeProcess(pid=4242), FakeProcess(pid=4343)])
    source = NvmlGpuSource(nvml=FakeNvml(gpus=[gpu]), procfs_root=str(root))
    (r,) = source.read(0.0)
    p, missing = r.processes or ()
    assert (p.comm, p.user, p.start_time) == ("py thon) x", "root", pytest.approx(500.0))
    assert (missing.comm, missing.user, missing.start_time) == ("", "", None)
    assert "SECRET" not in repr(r)

    # Looked up once while it stays on the GPU...
    (root / "4242" / "stat").write_text("garbage")
    (r,) = source.read(1.0)
    assert (r.processes or ())[0].comm == "py thon) x"
    # ...and again when the PID comes back after leaving it (PID reuse): new name and start time.
    gpu.processes = [FakeProcess(pid=4343)]
    source.read(2.0)
    gpu.processes = [FakeProcess(pid=4242)]
    rest = " ".join(["S"] + ["0"] * 18 + [str(900 * ticks)] + ["0"] * 10)
    (root / "4242" / "stat").write_text(f"4242 (trainer) {rest}\n")
    (r,) = source.read(3.0)
    assert ((r.processes or ())[0].comm, (r.processes or ())[0].start_time) == (
        "trainer",
        pytest.approx(900.0),
    )


def test_library_missing_is_source_unavailable() -> None:
    with pytest.raises(SourceUnavailable) as info:
        NvmlGpuSource(nvml=FakeNvml(gpus=[], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    assert info.value.kind == "missing"
    assert "libnvidia-ml.so.1" in str(info.value)

    with pytest.raises(SourceUnavailable) as info:
        NvmlGpuSource(nvml=FakeNvml(gpus=[], init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    assert info.value.kind == "driver"
    assert "driver is not loaded" in str(info.value)


def test_python_package_missing_is_source_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(SourceUnavailable) as info:
        NvmlGpuSource()
    assert info.value.kind == "missing"
    assert "nvidia-ml-py" in str(info.value)


def test_real_pynvml_without_a_driver_is_source_unavailable() -> None:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
        has_driver = True
    except OSError:
        has_driver = False
    if has_driver:
        source = NvmlGpuSource()
        try:
            readings = source.read(0.0)
            assert len(readings) >= 1 and readings[0].index == 0
        finally:
            source.close()
    else:
        with pytest.raises(SourceUnavailable) as info:
            NvmlGpuSource()
        assert info.value.kind == "missing"


def test_no_gpu_is_source_unavailable_and_shuts_nvml_down() -> None:
    nvml = FakeNvml(gpus=[])
    with pytest.raises(SourceUnavailable) as info:
        NvmlGpuSource(nvml=nvml)
    assert info.value.kind == "no_device"
    assert nvml.initialised == 0


def test_close_shuts_down_once() -> None:
    nvml = three_gpus()
    source = NvmlGpuSource(nvml=nvml)
    assert nvml.initialised == 1
    source.close()
    source.close()
    assert nvml.initialised == 0
    assert nvml.calls["nvmlShutdown"] == 1


def test_energy_never_goes_down_while_a_gpu_is_lost_and_another_has_no_counter() -> None:
    nvml = FakeNvml(
        gpus=[
            FakeGpu(uuid="GPU-v", power_w=200.0, energy_j=5000.0),
            FakeGpu(uuid="GPU-k", power_w=100.0, energy_j=None),
        ]
    )
    source = NvmlGpuSource(nvml=nvml)
    trackers = [EnergyTracker(), EnergyTracker()]
    totals = [0.0, 0.0]
    last_reported: list[float | None] = [None, None]
    for step in range(30):
        if step == 10:
            nvml.lose(0)
        if step == 15:
            nvml.recover(0, reset_energy=True)  # the reset restarts the hardware counter at 0
        readings = source.read(float(step))
        for i, r in enumerate(readings):
            if r.energy_j is not None:
                assert last_reported[i] is None or r.energy_j >= last_reported[i]
                last_reported[i] = r.energy_j
            if r.up:
                before = totals[i]
                totals[i] += trackers[i].update(float(step), r.energy_j, r.power_w)
                assert totals[i] >= before
        assert readings[1].energy_j is None
        assert readings[0].up == (not 10 <= step < 15)
        nvml.advance(1.0)
    # GPU 0: read at steps 0-9, lost 10-14, back at 15 with a counter restarted at 0 (the source carries
    # on from its last value), then read at 16-29.
    assert last_reported[0] == pytest.approx(5000.0 + 200.0 * 9 + 200.0 * 14)
    assert totals[1] == pytest.approx(100.0 * 29)
    assert nvml.calls["nvmlDeviceGetTotalEnergyConsumption"] == 10 + 15 + 1


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["advance", "lose", "recover", "reset"]), max_size=40))
def test_reported_energy_is_monotonic_whatever_happens(ops: list[str]) -> None:
    nvml = FakeNvml(gpus=[FakeGpu(uuid="GPU-h", power_w=123.0, energy_j=77.0)])
    source = NvmlGpuSource(nvml=nvml)
    last = -1.0
    for n, op in enumerate(ops):
        if op == "advance":
            nvml.advance(0.5)
        elif op == "lose":
            nvml.lose(0)
        else:
            nvml.recover(0, reset_energy=op == "reset")
        (r,) = source.read(float(n))
        assert r.up == (not nvml.gpus[0].lost)
        if r.energy_j is not None:
            assert r.energy_j >= last
            last = r.energy_j
    source.close()
