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


def _handle(nvml: FakeNvml) -> object:
    nvml.nvmlInit()
    return nvml.nvmlDeviceGetHandleByIndex(0)


def test_fake_answers_process_utilisation_as_nvml_documents_and_as_a_real_h200_did() -> None:
    # The fake itself: one structure per process, only samples newer than the timestamp, idle
    # processes absent, NOT_FOUND when nothing is new; several sampling moments averaged with the
    # moments a process was not sampled counting as 0; one time-sliced process per moment.
    a, b = 1001, 1002
    gpu = FakeGpu(uuid="GPU-f", sample_period_s=2.0, processes=[FakeProcess(a, sm_util=90), FakeProcess(b)])
    nvml = FakeNvml(gpus=[gpu])
    handle = _handle(nvml)
    t0 = nvml.now_us  # a whole multiple of 2 s: the driver samples at t0 + 2 s, t0 + 4 s, ...
    nvml.advance(1.0)
    with pytest.raises(pynvml.NVMLError_NotFound):
        nvml.nvmlDeviceGetProcessUtilization(handle, 0)  # the driver has not sampled yet
    nvml.advance(1.0)
    (sample,) = nvml.nvmlDeviceGetProcessUtilization(handle, 0)  # b was idle: absent
    assert (sample.pid, sample.smUtil, sample.timeStamp) == (a, 90, t0 + 2_000_000)
    with pytest.raises(pynvml.NVMLError_NotFound):
        nvml.nvmlDeviceGetProcessUtilization(handle, sample.timeStamp)
    nvml.advance(2.0)
    gpu.processes[0].sm_util = 30
    nvml.advance(2.0)
    # Two moments (90, 30) newer than the timestamp: still one structure, with their mean.
    (sample,) = nvml.nvmlDeviceGetProcessUtilization(handle, t0 + 2_000_000)
    assert (sample.pid, sample.smUtil, sample.timeStamp) == (a, 60, t0 + 6_000_000)
    gpu.processes[0].sm_util, gpu.processes[1].sm_util = 0, 50
    nvml.advance(2.0)
    gpu.processes[0].sm_util, gpu.processes[1].sm_util = 80, 0
    nvml.advance(2.0)
    by_pid = {x.pid: x for x in nvml.nvmlDeviceGetProcessUtilization(handle, t0 + 6_000_000)}
    # Each was sampled at one of the two moments: half its value, the other moment counting as 0.
    assert {pid: x.smUtil for pid, x in by_pid.items()} == {a: 40, b: 25}
    assert (by_pid[a].timeStamp, by_pid[b].timeStamp) == (t0 + 10_000_000, t0 + 8_000_000)
    # Time-slicing: at a moment only one of the processes that ran gets a sample, with the GPU's
    # busy share of the period (the H200 gave 99 to one of three always-busy processes).
    gpu.processes[0].sm_util, gpu.processes[1].sm_util = 60, 40
    nvml.advance(2.0)
    (sample,) = nvml.nvmlDeviceGetProcessUtilization(handle, t0 + 10_000_000)
    assert (sample.pid in (a, b), sample.smUtil) == (True, 100)
    # The size query and the read are two calls; a sample in between makes the read fail.
    gpu.on_size_query = lambda: nvml.add_sample(0, 1003, 50)
    with pytest.raises(pynvml.NVMLError_InsufficientSize):
        nvml.nvmlDeviceGetProcessUtilization(handle, t0 + 10_000_000)
    gpu.mig = [FakeMigInstance(gpu_instance_id=1, multiprocessor_count=16)]
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nvml.nvmlDeviceGetProcessUtilization(handle, 0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        nvml.nvmlDeviceGetUtilizationRates(handle)  # not on MIG-enabled GPUs either (nvml.h)


def _read_utils(source: NvmlGpuSource, now: float) -> dict[int, float | None]:
    (r,) = source.read(now)
    return {p.pid: p.sm_util for p in r.processes or ()}


def test_sparse_samples_still_cover_every_interval() -> None:
    # NVML samples every 2 s, we read every 1 s: every other read answers NOT_FOUND. Each interval is
    # judged over a stretch NVML has reported on, so the weights always cover the busy GPU.
    a, b = 987654301, 987654302
    gpu = FakeGpu(
        uuid="GPU-s", sample_period_s=2.0, processes=[FakeProcess(a, sm_util=90), FakeProcess(b, sm_util=10)]
    )
    nvml = FakeNvml(gpus=[gpu])
    source = NvmlGpuSource(nvml=nvml)
    not_found = 0
    original = nvml.nvmlDeviceGetProcessUtilization

    def counting(handle: object, ts: int) -> list[object]:
        nonlocal not_found
        try:
            return original(handle, ts)
        except pynvml.NVMLError_NotFound:
            not_found += 1
            raise

    nvml.nvmlDeviceGetProcessUtilization = counting  # type: ignore[method-assign]
    for k in range(4):
        nvml.advance(1.0)
        source.read(float(k))
    total = {a: 0.0, b: 0.0}
    for k in range(4, 204):
        nvml.advance(1.0)
        utils = _read_utils(source, float(k))
        assert sum(u or 0.0 for u in utils.values()) == pytest.approx(1.0)
        for pid in total:
            total[pid] += utils[pid] or 0.0
    assert not_found >= 98
    # 100 sampling moments, each giving the period to one process: 90/10 to within a moment or so.
    assert total[a] / (total[a] + total[b]) == pytest.approx(0.9, abs=0.015)


def test_idle_holder_gets_zero_and_a_process_that_stops_drops_to_zero_within_two_periods() -> None:
    busy, stops, idle = 987654311, 987654312, 987654313
    gpu = FakeGpu(
        uuid="GPU-h",
        sample_period_s=1.0,
        processes=[FakeProcess(busy, sm_util=50), FakeProcess(stops, sm_util=50), FakeProcess(idle)],
    )
    nvml = FakeNvml(gpus=[gpu])
    source = NvmlGpuSource(nvml=nvml, nvml_sample_period_s=1.0)
    seen = {busy: 0.0, stops: 0.0, idle: 0.0}
    for k in range(100):
        nvml.advance(1.0)
        utils = _read_utils(source, float(k))
        if k >= 4:
            assert utils[idle] == 0.0
            for pid in seen:
                seen[pid] += utils[pid] or 0.0
    assert seen[busy] == pytest.approx(seen[stops], rel=0.05)
    gpu.processes[1].sm_util = 0  # it keeps holding the GPU but computes nothing from now on
    history = []
    for k in range(100, 107):
        nvml.advance(1.0)
        history.append(_read_utils(source, float(k))[stops])
    # Attribution runs a period behind NVML (so that every process is judged over the same stretch):
    # it stops counting within two reads, then it is idle like any process NVML leaves out.
    assert history[-5:] == [0.0] * 5


def test_not_found_streak_shares_idle_energy_by_who_computed_last_never_equally() -> None:
    a, b, newcomer = 987654321, 987654322, 987654323
    gpu = FakeGpu(
        uuid="GPU-n", sample_period_s=0.2, processes=[FakeProcess(a, sm_util=80), FakeProcess(b, sm_util=20)]
    )
    nvml = FakeNvml(gpus=[gpu])
    source = NvmlGpuSource(nvml=nvml)
    answers: list[dict[int, float]] = []
    original = nvml.nvmlDeviceGetProcessUtilization

    def recording(handle: object, ts: int) -> list[object]:
        result = original(handle, ts)
        answers.append({int(x.pid): x.smUtil / 100 for x in result})
        return result

    nvml.nvmlDeviceGetProcessUtilization = recording  # type: ignore[method-assign]
    for k in range(20):
        nvml.advance(1.0)
        source.read(float(k))
    last_busy = answers[-1]
    assert set(last_busy) == {a, b}  # five moments a second: both were sampled in the last one
    for proc in gpu.processes:
        proc.sm_util = 0  # both idle: NVML answers NOT_FOUND from now on
    gpu.processes.append(FakeProcess(newcomer))
    for k in range(20, 60):
        nvml.advance(1.0)
        utils = _read_utils(source, float(k))
        # The GPU's idle energy is shared as the last read that showed them busy shared it; the
        # newcomer never computed; no equal split.
        assert utils == {a: pytest.approx(last_busy[a]), b: pytest.approx(last_busy[b]), newcomer: 0.0}
    assert len(answers) == 20  # NOT_FOUND ever since


def test_equal_split_only_while_no_process_ever_had_a_sample() -> None:
    gpu = FakeGpu(uuid="GPU-e", processes=[FakeProcess(987654331), FakeProcess(987654332)])
    nvml = FakeNvml(gpus=[gpu])
    source = NvmlGpuSource(nvml=nvml)
    for k in range(5):
        nvml.advance(1.0)
        assert _read_utils(source, float(k)) == {987654331: None, 987654332: None}
    gpu.processes[1].sm_util = 40
    for k in range(5, 9):
        nvml.advance(1.0)
        utils = _read_utils(source, float(k))
    assert utils == {987654331: 0.0, 987654332: pytest.approx(0.4)}


def test_samples_arriving_between_size_query_and_read_are_not_lost() -> None:
    gpu = FakeGpu(uuid="GPU-r", processes=[FakeProcess(p) for p in (987654341, 987654342, 987654343)])
    nvml = FakeNvml(gpus=[gpu])
    source = NvmlGpuSource(nvml=nvml)
    nvml.add_sample(0, 987654341, 70)
    later = [987654342]
    gpu.on_size_query = lambda: nvml.add_sample(0, later.pop(), 30) if later else None
    # The first attempt fails with INSUFFICIENT_SIZE; the exporter asks once more and gets both.
    source.read(0.0)
    assert nvml.calls["nvmlDeviceGetProcessUtilization"] == 2
    seen_ts = source._gpus[0].last_util_timestamp_us
    assert seen_ts == nvml.now_us

    # Growing on every call: nothing this read, but the timestamp stays, so the next read has it all.
    nvml.advance(1.0)
    newcomers = iter((987654342, 987654343))
    gpu.on_size_query = lambda: nvml.add_sample(0, next(newcomers, 987654343), 90)
    nvml.add_sample(0, 987654341, 10)
    source.read(1.0)
    assert source._gpus[0].last_util_timestamp_us == seen_ts
    gpu.on_size_query = None
    source.read(2.0)
    assert source._gpus[0].last_util_timestamp_us == nvml.now_us


def test_mps_clients_are_listed_and_the_server_is_not_charged(tmp_path: Path) -> None:
    server, c1, c2 = 987654351, 987654352, 987654353
    root = tmp_path / "proc"
    (root / str(server)).mkdir(parents=True)
    rest = " ".join(["S"] + ["0"] * 30)
    (root / str(server) / "stat").write_text(f"{server} (nvidia-cuda-mps) {rest}\n")
    for mode, expected in (
        ("clients", {c1: pytest.approx(0.6), c2: pytest.approx(0.2)}),
        # All the work sampled under the server: nothing tells the clients apart, so equal halves.
        ("server", {c1: pytest.approx(0.3), c2: pytest.approx(0.3)}),
    ):
        gpu = FakeGpu(
            uuid="GPU-mps",
            mps_samples=mode,
            processes=[
                FakeProcess(server, mps_server=True),
                FakeProcess(c1, compute=False, mps=True, sm_util=60),
                # Also in the compute list (nvidia-smi shows clients as "M+C"): counted once.
                FakeProcess(c2, compute=True, mps=True, sm_util=20),
            ],
        )
        nvml = FakeNvml(gpus=[gpu])
        source = NvmlGpuSource(nvml=nvml, procfs_root=str(root))
        for k in range(4):
            nvml.advance(1.0)
            utils = _read_utils(source, float(k))
        assert utils == expected, mode
    # The server alone, no client: it is the only process holding the GPU and shows as such.
    gpu.processes = [FakeProcess(server, mps_server=True)]
    assert list(_read_utils(source, 5.0)) == [server]


def test_mps_listing_unsupported_is_not_asked_again() -> None:
    gpu = FakeGpu(
        uuid="GPU-old",
        unsupported={"nvmlDeviceGetMPSComputeRunningProcesses"},
        processes=[FakeProcess(987654361)],
    )
    nvml = FakeNvml(gpus=[gpu])
    source = NvmlGpuSource(nvml=nvml)
    for k in range(3):
        assert list(_read_utils(source, float(k))) == [987654361]
    assert nvml.calls["nvmlDeviceGetMPSComputeRunningProcesses"] == 1


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


def test_mig_shares_are_of_what_mig_hands_out_not_of_the_board() -> None:
    # A100: 108 SMs on the board, 98 of them in the 7g profile, 14 in each 1g instance.
    gpu = FakeGpu(
        uuid="GPU-a100-mig",
        board_sm_count=108,
        profile_sm_counts={0: 14, 1: 28, 2: 42, 3: 56, 4: 98},
        mig=[FakeMigInstance(gpu_instance_id=7 + k, multiprocessor_count=14) for k in range(7)],
        processes=[FakeProcess(987654371, gpu_instance_id=7)],
    )
    (r,) = NvmlGpuSource(nvml=FakeNvml(gpus=[gpu])).read(0.0)
    assert (r.processes or ())[0].mig_sm_share == pytest.approx(1 / 7)
    assert r.util is None  # no device utilisation on a MIG-enabled GPU
