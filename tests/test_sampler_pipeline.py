"""The sampler with attribution and carbon wired in: shares, conservation, retention, emissions over time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_pynvml import FakeGpu, FakeMigInstance, FakeNvml, FakeProcess

from exporter.attribution import AttributionPolicy
from exporter.ledger import ProcessLedger
from exporter.model import ForecastState, IntensityState, ProviderState
from exporter.sampler import Attribution, Sampler
from exporter.sources.nvml import NvmlGpuSource
from exporter.sources.replay import ReplayGpuSource
from exporter.workload import WorkloadResolver


def attribution(tmp_path: Path, retention_s: float = 600.0, max_series: int = 500) -> Attribution:
    return Attribution(
        policy=AttributionPolicy(),
        resolver=WorkloadResolver(str(tmp_path / "noproc")),
        gpu_ledger=ProcessLedger("pid", max_series, retention_s),
        cpu_ledger=ProcessLedger("pid", max_series, retention_s),
    )


def _nvml_sampler(
    tmp_path: Path, gpu: FakeGpu, nvml_sample_period_s: float | None = None
) -> tuple[FakeNvml, Sampler, list[float]]:
    nvml = FakeNvml(gpus=[gpu])
    clock = [0.0]
    source = NvmlGpuSource(nvml=nvml, procfs_root=str(tmp_path), nvml_sample_period_s=nvml_sample_period_s)
    sampler = Sampler(source, None, attribution=attribution(tmp_path), clock=lambda: clock[0])
    return nvml, sampler, clock


def _run(nvml: FakeNvml, sampler: Sampler, clock: list[float], seconds: int, step: float = 1.0) -> None:
    for _ in range(round(seconds / step)):
        nvml.advance(step)
        clock[0] += step
        sampler.tick()


def _energy_by_pid(sampler: Sampler) -> dict[str, float]:
    return {p.pid: p.energy_j_total for p in sampler.snapshot.gpu_processes}


def _assert_conserved(sampler: Sampler) -> None:
    for gpu in sampler.snapshot.gpus:
        attributed = sum(
            p.energy_j_total for p in sampler.snapshot.gpu_processes if p.gpu_uuid == gpu.reading.uuid
        )
        assert attributed + gpu.unattributed_energy_j_total == pytest.approx(gpu.energy_j_total, rel=1e-12)


def test_fake_nvml_two_processes_sharing_3_to_1(tmp_path: Path) -> None:
    gpu = FakeGpu(
        uuid="GPU-a",
        power_w=400.0,
        # NVML samples every 200 ms (as an H200 did), faster than we read: one process per moment,
        # and a read gets each one's mean over the moments since the previous read.
        sample_period_s=0.2,
        processes=[FakeProcess(101, sm_util=60), FakeProcess(202, sm_util=20)],
    )
    nvml, sampler, clock = _nvml_sampler(tmp_path, gpu)
    _run(nvml, sampler, clock, 120)
    by_pid = _energy_by_pid(sampler)
    assert by_pid["101"] / by_pid["202"] == pytest.approx(3.0, rel=0.02)
    total = sampler.snapshot.gpus[0]
    assert total.energy_j_total == pytest.approx(400.0 * 119, rel=1e-9)  # first read is the baseline
    _assert_conserved(sampler)


def test_ninety_ten_with_nvml_sampling_every_2s_and_ticks_every_1s(tmp_path: Path) -> None:
    # Every other tick NVML has nothing new (NOT_FOUND). Falling back to an equal split there made
    # this 70/30; holding each process's latest sample keeps it 90/10.
    gpu = FakeGpu(
        uuid="GPU-9010",
        power_w=300.0,
        sample_period_s=2.0,
        processes=[FakeProcess(101, sm_util=90), FakeProcess(202, sm_util=10)],
    )
    nvml, sampler, clock = _nvml_sampler(tmp_path, gpu)
    _run(nvml, sampler, clock, 300)
    by_pid = _energy_by_pid(sampler)
    share = by_pid["101"] / (by_pid["101"] + by_pid["202"])
    assert share == pytest.approx(0.9, abs=0.01)
    assert sampler.snapshot.gpus[0].unattributed_energy_j_total == 0.0
    _assert_conserved(sampler)


def test_idle_process_holding_the_gpu_gets_close_to_nothing(tmp_path: Path) -> None:
    gpu = FakeGpu(
        uuid="GPU-idle",
        power_w=250.0,
        processes=[FakeProcess(101, sm_util=70), FakeProcess(202, sm_util=0, used_memory_bytes=20 << 30)],
    )
    nvml, sampler, clock = _nvml_sampler(tmp_path, gpu)
    _run(nvml, sampler, clock, 60)
    by_pid = _energy_by_pid(sampler)
    # Before the first sample nobody had one (equal split, at most the first tick or two).
    assert by_pid["202"] / (by_pid["101"] + by_pid["202"]) < 0.02
    _assert_conserved(sampler)


def test_mig_job_on_one_of_seven_slices_gets_a_seventh_of_the_board_at_most(tmp_path: Path) -> None:
    gpu = FakeGpu(
        uuid="GPU-mig",
        power_w=210.0,
        board_sm_count=108,
        profile_sm_counts={0: 14, 4: 98},
        mig=[FakeMigInstance(gpu_instance_id=7 + k, multiprocessor_count=14) for k in range(7)],
        processes=[FakeProcess(101, gpu_instance_id=7, compute_instance_id=0, sm_util=100)],
    )
    nvml, sampler, clock = _nvml_sampler(tmp_path, gpu)
    _run(nvml, sampler, clock, 30)
    snap = sampler.snapshot
    board = snap.gpus[0].energy_j_total
    assert _energy_by_pid(sampler)["101"] == pytest.approx(board / 7, rel=1e-9)
    assert snap.gpus[0].unattributed_energy_j_total == pytest.approx(board * 6 / 7, rel=1e-9)
    _assert_conserved(sampler)


def test_mps_clients_share_the_gpu_and_the_server_is_not_charged(tmp_path: Path) -> None:
    server = 303
    (tmp_path / str(server)).mkdir()
    rest = " ".join(["S"] + ["0"] * 30)
    (tmp_path / str(server) / "stat").write_text(f"{server} (nvidia-cuda-mps) {rest}\n")
    gpu = FakeGpu(
        uuid="GPU-mps",
        power_w=300.0,
        processes=[
            FakeProcess(server, mps_server=True),
            FakeProcess(101, compute=False, mps=True, sm_util=75),
            FakeProcess(202, compute=False, mps=True, sm_util=25),
        ],
    )
    nvml, sampler, clock = _nvml_sampler(tmp_path, gpu)
    _run(nvml, sampler, clock, 60)
    by_pid = _energy_by_pid(sampler)
    assert set(by_pid) == {"101", "202"}
    assert by_pid["101"] / by_pid["202"] == pytest.approx(3.0, rel=0.02)
    _assert_conserved(sampler)


def test_replay_processes_come_and_go_energy_conserved_and_retained(tmp_path: Path) -> None:
    lines = []
    for k in range(40):
        procs = []
        if k < 20:
            procs.append({"pid": 1, "comm": "train", "sm_util": 0.9})
        if 10 <= k < 30:
            procs.append({"pid": 2, "comm": "serve", "sm_util": 0.3})
        lines.append(
            json.dumps(
                {
                    "t": float(k),
                    "gpus": [{"index": 0, "uuid": "GPU-r", "power_w": 100.0 + 5 * k, "processes": procs}],
                }
            )
        )
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join(lines) + "\n")
    clock = [0.0]
    sampler = Sampler(
        ReplayGpuSource(str(trace)),
        None,
        attribution=attribution(tmp_path, retention_s=5.0),
        clock=lambda: clock[0],
    )
    seen: dict[str, list[float]] = {"1": [], "2": []}
    while clock[0] < 45:
        snap = sampler.tick()
        gpu = snap.gpus[0]
        procs = {p.pid: p for p in snap.gpu_processes}
        # Conservation at every tick while every series is retained; once a process's series is
        # dropped (retention), exactly their final totals are missing from the sum.
        shown = sum(p.energy_j_total for p in procs.values()) + gpu.unattributed_energy_j_total
        dropped = sum(max(v) for pid, v in seen.items() if v and max(v) > 0 and pid not in procs)
        assert shown + dropped == pytest.approx(gpu.energy_j_total, rel=1e-12, abs=1e-9)
        for pid in seen:
            seen[pid].append(procs[pid].energy_j_total if pid in procs else -1.0)
        clock[0] += 0.5
    # Process 1 ended at t=20: retained (final value, power 0) for 5 s, then dropped.
    t_index = {round(k * 0.5, 1): k for k in range(len(seen["1"]))}
    assert seen["1"][t_index[22.0]] > 0 and seen["1"][t_index[22.0]] == seen["1"][t_index[24.0]]
    assert seen["1"][t_index[27.0]] == -1.0
    assert seen["2"][t_index[5.0]] == -1.0 and seen["2"][t_index[15.0]] > 0
    # Energy while both ran is split 0.9 : 0.3; alone, each takes everything.
    assert sampler.snapshot.gpus[0].unattributed_energy_j_total > 0  # t >= 30: nobody on the GPU


class SteppedCarbon:
    """A carbon service whose intensity steps from 100 to 500 g/kWh at wall time 1050."""

    pue = 1.0
    wue_litres_per_kwh: float | None = None
    has_marginal = False
    market = None

    def segments(self, signal: str, t0: float, t1: float) -> list[tuple[float, float]]:
        step = 1050.0
        if t1 <= step:
            return [(t1 - t0, 100.0)]
        if t0 >= step:
            return [(t1 - t0, 500.0)]
        return [(step - t0, 100.0), (t1 - step, 500.0)]

    def gpu_embodied_grams_per_second(self, name: str) -> float:
        return 0.0

    def node_embodied_grams_per_second(self) -> float | None:
        return None

    def intensities(self) -> tuple[IntensityState, ...]:
        return (IntensityState("DE", "static", "average", 100.0, 0.0),)

    def providers(self) -> tuple[ProviderState, ...]:
        return ()

    def forecasts(self) -> tuple[ForecastState, ...]:
        return ()

    def emission_factors(self) -> tuple[()]:
        return ()


def test_emissions_use_the_intensity_valid_during_each_interval(tmp_path: Path) -> None:
    nvml = FakeNvml(gpus=[FakeGpu(uuid="GPU-a", power_w=360.0)])
    clock = [1000.0]
    sampler = Sampler(
        NvmlGpuSource(nvml=nvml, procfs_root=str(tmp_path)),
        None,
        carbon=SteppedCarbon(),  # type: ignore[arg-type]
        clock=lambda: clock[0],
        wall_clock=lambda: clock[0],
    )
    sampler.tick()
    while clock[0] < 1100.0 - 1e-9:
        nvml.advance(0.7)
        clock[0] += 0.7  # 0.7 s ticks straddle the step at 1050
        sampler.tick()
    elapsed = clock[0] - 1000.0
    exact = 360.0 * 50.0 / 3.6e6 * 100.0 + 360.0 * (elapsed - 50.0) / 3.6e6 * 500.0
    grams = sampler.snapshot.gpus[0].emissions_g_total
    assert abs(grams - exact) / exact < 0.005
    naive = sampler.snapshot.gpus[0].energy_j_total / 3.6e6 * 500.0
    assert abs(grams - naive) / naive > 0.2  # not energy x final intensity


def test_field_permission_errors_reach_source_errors_without_downing_the_gpu(tmp_path: Path) -> None:
    import pynvml

    nvml = FakeNvml(
        gpus=[FakeGpu(uuid="GPU-a", failures={"nvmlDeviceGetTemperature": pynvml.NVML_ERROR_NO_PERMISSION})]
    )
    clock = [0.0]
    sampler = Sampler(NvmlGpuSource(nvml=nvml, procfs_root=str(tmp_path)), None, clock=lambda: clock[0])
    for _ in range(3):
        nvml.advance(1.0)
        clock[0] += 1.0
        snap = sampler.tick()
    gpu = snap.gpus[0]
    assert gpu.reading.up and gpu.reading.temp_c is None and gpu.reading.power_w == 300.0
    status = next(s for s in snap.sources if s.name == "nvml")
    assert status.up and status.errors_total.get("field_permission", 0) >= 1
