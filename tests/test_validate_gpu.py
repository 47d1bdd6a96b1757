"""The GPU validation kit driven end to end on the fake NVML board and a simulated load (virtual time)."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pynvml
import pytest
from fake_gpu_board import Board, SimulatedLoad, VirtualClock
from fake_pynvml import FakeGpu, FakeNvml, FakeProcess

from exporter.sampler import Sampler
from exporter.sources.nvml import NvmlGpuSource
from exporter.sources.replay import ReplayGpuSource
from exporter.validate_gpu import probe, stats
from exporter.validate_gpu.kit import Edges, Kit, Options
from exporter.validate_gpu.load import LoadError
from exporter.validate_gpu.main import main, parse_args

IDLE_W, BUSY_W = 70.0, 520.0
# Mean board power in each phase of the default plan (A computes 75% of each period, B the rest).
EXPECTED_MEAN_W = {
    "idle": IDLE_W,
    "shared": IDLE_W + BUSY_W,
    "alone_A": IDLE_W + 0.75 * BUSY_W,
    "alone_B": IDLE_W + 0.25 * BUSY_W,
}


class Run:
    """One kit run on the fakes, and everything a test needs to check it against the truth."""

    def __init__(
        self,
        tmp_path: Path,
        options: Options | None = None,
        *,
        gpu: dict[str, Any] | None = None,
        board: dict[str, Any] | None = None,
        load: dict[str, Any] | None = None,
        init_error: int | None = None,
        sleep_hook: Any = None,
    ) -> None:
        self.dir = tmp_path / "out"
        self.options = options or Options(out_dir=str(self.dir))
        self.options.out_dir = str(self.dir)
        self.clock = VirtualClock()
        self.fake = FakeNvml(
            gpus=[FakeGpu(uuid="GPU-h200", name="NVIDIA H200", **(gpu or {}))], init_error=init_error
        )
        self.load = SimulatedLoad(self.fake, self.clock, **(load or {}))
        self.board = Board(self.fake, self.clock, self.load, idle_w=IDLE_W, busy_w=BUSY_W, **(board or {}))
        self.stdout = io.StringIO()

        def sleep(seconds: float) -> None:
            if sleep_hook is not None:
                sleep_hook(self.clock)
            self.clock.sleep(seconds)

        self.kit = Kit(
            self.options,
            Edges(
                nvml=self.board,
                load_factory=lambda pci, gpu, launch_ms: self.load,
                clock=self.clock,
                sleep=sleep,
                wall=self.clock.wall,
                out=self.stdout,
                procfs_root=str(tmp_path / "no-proc"),
            ),
        )
        self.t0 = self.clock()

    def run(self) -> int:
        self.rc = self.kit.run()
        return self.rc

    @property
    def report(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.dir / "report.json").read_text())
        return data

    def steps(self) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in self.report["steps"]}

    def phase(self, name: str) -> dict[str, Any]:
        return next(p for p in self.report["phases"] if p["name"] == name)


def quick(tmp_path: Path) -> Options:
    return Options.quick_run(str(tmp_path / "out"))


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The default (full-length) run once, on a board whose power reading has no averaging lag."""
    run = Run(tmp_path_factory.mktemp("full"), board={"power_window_s": 0.04})
    run.run()
    return run


# ---------------------------------------------------------------------- the full run


def test_full_run_completes_within_the_time_budget_and_writes_every_file(full: Run) -> None:
    report = full.report
    assert full.rc == 0
    assert {s["status"] for s in report["steps"]} == {"ok"}, full.stdout.getvalue()
    assert report["schema"] == "footprint-validate-gpu/1"
    assert report["status"] == "complete"
    assert [p["name"] for p in report["phases"]] == ["idle", "shared", "alone_A", "alone_B"]
    # Virtual seconds of phases and waits; on a GPU worker start-up and JIT add some 10-20 s.
    assert report["wall_s"] < 200
    gpu = report["gpu"]
    assert (gpu["name"], gpu["driver_version"], gpu["nvml_version"]) == (
        "NVIDIA H200",
        "550.90.07",
        "12.550.90.07",
    )
    for name in ("report.json", "report.md", "trace.jsonl", "samples.jsonl", "polls.jsonl.gz"):
        assert (full.dir / name).stat().st_size > 0, name
    md = (full.dir / "report.md").read_text()
    assert "NVIDIA H200" in md and "## Energy counter against integrated power" in md
    summary = full.stdout.getvalue()
    assert "split A: measured 75." in summary and "status: complete" in summary


def test_report_json_schema(full: Run) -> None:
    """The keys and types a reader of report.json (and the docs) rely on."""
    report = full.report
    top = {
        "schema": str,
        "status": str,
        "started_at": str,
        "finished_at": str,
        "wall_s": float,
        "options": dict,
        "environment": dict,
        "gpu": dict,
        "steps": list,
        "failed_steps": list,
        "selfcheck": dict,
        "workers": dict,
        "pid_mapping": dict,
        "phases": list,
        "update_periods": dict,
        "process_samples": dict,
        "costs": dict,
        "split": dict,
        "replay_check": dict,
        "files": dict,
    }
    assert set(report) == set(top)
    for key, kind in top.items():
        assert isinstance(report[key], kind), key
    for step in report["steps"]:
        assert {"name", "status", "start_s", "duration_s"} <= set(step)
    for key in (
        "index",
        "name",
        "uuid",
        "pci_bus_id",
        "driver_version",
        "nvml_version",
        "cuda_driver_version",
    ):
        assert key in report["gpu"], key
    assert set(report["selfcheck"]) == {"nvml", "cuda"}
    assert set(report["workers"]) == {"A", "B"}
    assert {"pid", "iters", "launch_ms", "tag_bytes", "device"} <= set(report["workers"]["A"])
    for phase in report["phases"]:
        assert {
            "name",
            "plan",
            "period_s",
            "start_s",
            "duration_s",
            "energy",
            "process_samples",
            "attribution",
        } <= set(phase)
        assert {
            "counter_j",
            "span_s",
            "counter_mean_w",
            "power_usage",
            "power_instant",
            "power_average",
        } <= set(phase["energy"])
        assert {"integral_j", "over_counter", "integral_at_tick_j", "at_tick_over_counter"} <= set(
            phase["energy"]["power_usage"]
        )
        assert {
            "gpu_j",
            "unattributed_j",
            "by_pid",
            "by_worker",
            "share_of_attributed",
            "share_of_gpu",
        } <= set(phase["attribution"])
    for signal in ("energy_counter", "power_usage", "power_instant", "power_average"):
        assert {"n", "median", "p90", "min", "max", "changes", "polls", "poll_ms", "poll_ms_achieved"} <= set(
            report["update_periods"]["shared"][signal]
        )
    assert {"nvml_calls_per_read", "other_nvml_calls", "nvml_floor_us", "source_read", "sampler_tick"} <= set(
        report["costs"]
    )
    assert {"measured_share_A", "nominal_share_A", "work_share_A", "busy_share_A"} <= set(report["split"])
    assert report["files"] == {"trace": "trace.jsonl", "samples": "samples.jsonl", "polls": "polls.jsonl.gz"}


def test_update_periods_are_the_boards(full: Run) -> None:
    for phase in ("idle", "shared"):
        periods = full.report["update_periods"][phase]
        # 2 ms polls resolve a 100 ms counter step and a 40 ms power refresh to within a poll.
        assert periods["energy_counter"]["median"] == pytest.approx(100.0, abs=2.5)
        assert periods["energy_counter"]["p90"] == pytest.approx(100.0, abs=2.5)
        assert periods["power_usage"]["median"] == pytest.approx(40.0, abs=2.5)
        assert periods["power_instant"]["median"] == pytest.approx(40.0, abs=2.5)
        # The field values carry NVML's own timestamps: exact.
        assert periods["power_instant_timestamp"]["median"] == pytest.approx(40.0, abs=1e-6)
        assert periods["energy_counter"]["changes"] >= 25
        assert periods["energy_counter"]["poll_ms_achieved"] == pytest.approx(2.0)


def test_counter_energy_and_integrated_power_per_phase(full: Run) -> None:
    for name, mean_w in EXPECTED_MEAN_W.items():
        energy = full.phase(name)["energy"]
        # The counter moves in 100 ms steps: at most one step of energy off at each end of the span.
        step_j = 0.1 * (IDLE_W if name == "idle" else IDLE_W + BUSY_W)
        assert energy["counter_j"] == pytest.approx(mean_w * energy["span_s"], abs=2 * step_j), name
        assert energy["power_usage"]["over_counter"] == pytest.approx(1.0, abs=0.02), name
        assert energy["power_instant"]["over_counter"] == pytest.approx(1.0, abs=0.02), name


def test_per_process_samples_period_per_call_and_not_found(full: Run) -> None:
    samples = full.report["process_samples"]
    fast, cadence = samples["fast"], samples["exporter_cadence"]
    assert samples["pid_names"] == {"4242": "A", "4343": "B"}
    assert fast["driver_sample_period_ms"]["median"] == pytest.approx(500.0, abs=1e-3)
    # Polled every 50 ms against a 500 ms sample period: 9 calls in 10 find nothing new.
    assert fast["empty_fraction"] == pytest.approx(0.9, abs=0.02)
    assert fast["results"]["NVML_ERROR_NOT_FOUND"] > 0
    a, b = fast["per_pid"]["4242"], fast["per_pid"]["4343"]
    assert a["period_ms"]["median"] == pytest.approx(500.0, abs=1e-3)
    assert a["sm_util_mean"] == pytest.approx(75.0, abs=3.0)
    assert b["sm_util_mean"] == pytest.approx(25.0, abs=3.0)
    assert a["samples_per_call_max"] == 1
    # At the exporter's 1 s cadence every call finds the samples of the last second.
    assert cadence["empty_fraction"] == 0.0
    assert 1.0 <= cadence["per_pid"]["4242"]["samples_per_call_mean"] <= 2.0


def test_split_through_the_exporter_matches_3_to_1_and_conserves_energy(full: Run) -> None:
    split = full.report["split"]
    assert split["pid_mapping"] == "pid"
    assert split["measured_share_A"] == pytest.approx(0.75, abs=0.02)
    assert split["work_share_A"] == pytest.approx(0.75, abs=0.005)
    assert split["energy_share_A_from_alone_phases"] == pytest.approx(0.75, abs=0.02)
    assert split["alone_A_power_above_idle_w"] == pytest.approx(0.75 * BUSY_W, abs=2.0)
    assert split["error_pp_vs_nominal"] == pytest.approx(100 * (split["measured_share_A"] - 0.75))
    # A process holding the GPU without computing gets (close to) nothing.
    assert split["idle_holder_B_share_in_alone_A"] < 0.02
    assert split["idle_holder_A_share_in_alone_B"] < 0.02
    for phase in full.report["phases"]:
        att = phase["attribution"]
        total = sum(att["by_worker"].values()) + att["unattributed_j"]
        assert total == pytest.approx(att["gpu_j"], rel=1e-9), phase["name"]
    shared = full.phase("shared")
    assert shared["workers"]["A"]["launches"] == pytest.approx(
        3 * shared["workers"]["B"]["launches"], rel=0.01
    )
    assert full.phase("idle")["attribution"]["unattributed_share"] == pytest.approx(1.0)


def test_costs_cover_every_call_the_source_makes_per_read(full: Run, tmp_path: Path) -> None:
    # What NvmlGpuSource calls in one steady-state read with two processes on the GPU, found here
    # independently of the kit by counting the fake's calls.
    fake = FakeNvml(gpus=[FakeGpu(uuid="GPU-x", processes=[FakeProcess(1), FakeProcess(2)])])
    source = NvmlGpuSource(nvml=fake, procfs_root=str(tmp_path))
    source.read(0.0)
    before = Counter(fake.calls)
    source.read(1.0)
    per_read = Counter(fake.calls) - before
    costs = full.report["costs"]
    calls = costs["nvml_calls_per_read"]
    assert {k: v["calls_per_read"] for k, v in calls.items()} == dict(per_read)
    for name, c in calls.items():
        assert c["n"] == full.options.cost_calls, name
        assert 0 < c["median"] <= c["p90"], name
    assert calls["nvmlDeviceGetProcessUtilization"]["errors"].keys() <= {"NVML_ERROR_NOT_FOUND"}
    assert costs["nvml_floor_us"] == pytest.approx(
        sum(c["median"] * c["calls_per_read"] for c in calls.values())
    )
    assert costs["tick_over_floor"] == pytest.approx(costs["sampler_tick"]["median"] / costs["nvml_floor_us"])
    assert costs["under_load"] is True
    assert 0 < costs["nvml_share_of_tick"]["median"] < 1
    assert costs["other_nvml_calls"]["nvmlDeviceGetFieldValues"]["n"] == full.options.cost_calls
    assert costs["workers"]["A"]["launches"] > 0


def test_trace_replays_to_the_boards_true_energy(full: Run) -> None:
    trace = full.dir / "trace.jsonl"
    times = [line["t"] for line in lines(trace)]
    replay = ReplayGpuSource(str(trace))
    now = [0.0]
    sampler = Sampler(replay, None, clock=lambda: now[0])
    for t in times:
        now[0] = t
        sampler.tick()
    replayed = sampler.snapshot.gpus[0].energy_j_total
    first = full.t0 + full.phase("idle")["start_s"]
    truth = full.board.true_energy_j(first, first + times[-1])
    # Exact up to the counter's 100 ms steps at both ends.
    assert replayed == pytest.approx(truth, abs=2 * 0.1 * (IDLE_W + BUSY_W))
    check = full.report["replay_check"]
    assert check["trace_lines"] == len(times)
    assert check["replay_gpu_j"] == pytest.approx(replayed, rel=1e-12)
    assert check["replay_vs_live_relative"] == pytest.approx(0.0, abs=1e-9)
    assert check["max_abs_pid_diff_j"] < 1e-6
    pids = {p["pid"] for line in lines(trace) for g in line["gpus"] for p in g["processes"]}
    assert pids == {4242, 4343}


def test_raw_sample_and_poll_files_hold_every_call(full: Run) -> None:
    records = lines(full.dir / "samples.jsonl")
    shared_fast = [r for r in records if r["phase"] == "shared" and r["poller"] == "fast"]
    assert len(shared_fast) == full.report["process_samples"]["fast"]["calls"]
    with_samples = [r for r in shared_fast if r["samples"]]
    assert with_samples and all(r["result"] == "ok" for r in with_samples)
    sample = with_samples[0]["samples"][0]
    assert set(sample) == {"pid", "ts_us", "sm", "mem", "enc", "dec"}
    assert {r["poller"] for r in records if r.get("prime")} == {"fast", "exporter_cadence"}
    with gzip.open(full.dir / "polls.jsonl.gz", "rt") as fh:
        polls = [json.loads(line) for line in fh]
    assert sum(1 for p in polls if p["phase"] == "idle") == full.phase("idle")["energy"]["polls"]
    assert all("e_mj" in p and "p_mw" in p for p in polls)


# ---------------------------------------------------------------------- what NVML does not give


def test_unsupported_fields_and_process_utilisation_are_reported_and_the_run_goes_on(tmp_path: Path) -> None:
    run = Run(
        tmp_path,
        quick(tmp_path),
        gpu={"unsupported": {"nvmlDeviceGetProcessUtilization"}},
        board={"fields_supported": False},
    )
    assert run.run() == 0
    checks = run.report["selfcheck"]["nvml"]
    assert checks["NVML_FI_DEV_POWER_INSTANT"] == {"ok": False, "error": "NVML_ERROR_NOT_SUPPORTED"}
    assert checks["nvmlDeviceGetProcessUtilization"]["error"] == "NVML_ERROR_NOT_SUPPORTED"
    shared = run.phase("shared")
    assert shared["energy"]["power_instant"] is None
    assert shared["energy"]["power_usage"]["integral_j"] > 0
    fast = run.report["process_samples"]["fast"]
    assert fast["results"] == {"NVML_ERROR_NOT_SUPPORTED": fast["calls"]}
    # Without per-process utilisation the exporter can only split equally: the kit shows how far off.
    assert run.report["split"]["measured_share_A"] == pytest.approx(0.5, abs=0.01)
    assert run.report["split"]["error_pp_vs_nominal"] == pytest.approx(-25.0, abs=1.0)


def test_cuda_failure_skips_the_load_but_nvml_measurements_still_run(tmp_path: Path) -> None:
    error = "cuModuleLoadDataEx: CUDA_ERROR_INVALID_PTX (218): ptxas fatal: bad"
    run = Run(tmp_path, quick(tmp_path), load={"selfcheck_error": error})
    assert run.run() == 1
    steps = run.steps()
    assert steps["cuda_selfcheck"]["status"] == "failed"
    assert "CUDA_ERROR_INVALID_PTX" in steps["cuda_selfcheck"]["error"]
    assert steps["workers"]["status"] == "skipped"
    assert steps["shared"]["status"] == "skipped"
    assert steps["idle"]["status"] == "ok" and steps["costs"]["status"] == "ok"
    assert run.report["update_periods"]["idle"]["energy_counter"]["median"] == pytest.approx(100.0, abs=2.5)
    assert run.report["costs"]["under_load"] is False
    assert "CUDA_ERROR_INVALID_PTX" in (run.dir / "report.md").read_text()
    assert run.report["status"] == "complete_with_failures"


def test_nvml_that_does_not_start_is_reported_with_its_error_name(tmp_path: Path) -> None:
    run = Run(tmp_path, quick(tmp_path), init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    assert run.run() == 1
    steps = run.steps()
    assert "NVML_ERROR_LIBRARY_NOT_FOUND" in steps["nvml"]["error"]
    assert {steps[n]["status"] for n in ("idle", "shared", "costs", "replay_check")} == {"skipped"}
    assert (run.dir / "report.md").exists()


def test_a_step_failing_mid_run_leaves_the_others_and_the_report(tmp_path: Path) -> None:
    run = Run(tmp_path, quick(tmp_path))
    collect = run.load.collect
    calls = [0]

    def failing_collect(timeout_s: float) -> dict[str, dict[str, Any]]:
        calls[0] += 1
        if calls[0] == 1:  # the shared phase's
            collect(timeout_s)
            raise LoadError("worker A: no done within 30 s")
        return collect(timeout_s)

    run.load.collect = failing_collect  # type: ignore[method-assign]
    assert run.run() == 1
    steps = run.steps()
    assert steps["shared"]["status"] == "failed" and "no done" in steps["shared"]["error"]
    assert steps["alone_A"]["status"] == "ok" and steps["replay_check"]["status"] == "ok"
    assert run.report["failed_steps"] == ["shared"]


def test_interrupted_run_keeps_what_was_measured_and_stops_the_workers(tmp_path: Path) -> None:
    def interrupt(clock: VirtualClock) -> None:
        if clock() > 1000.0 + 12.0:  # during the shared phase
            raise KeyboardInterrupt

    run = Run(tmp_path, quick(tmp_path), sleep_hook=interrupt)
    with pytest.raises(KeyboardInterrupt):
        run.run()
    report = run.report
    assert report["status"] == "interrupted"
    assert run.phase("idle")["energy"]["counter_j"] > 0
    assert run.steps()["shared"]["status"] == "running"
    assert run.load.stopped


def test_deadline_skips_what_would_overrun(tmp_path: Path) -> None:
    options = quick(tmp_path)
    options.deadline_s = 20.0
    run = Run(tmp_path, options)
    assert run.run() == 0
    steps = run.steps()
    assert steps["idle"]["status"] == "ok"
    assert steps["shared"]["status"] == "skipped" and "deadline" in steps["shared"]["reason"]
    assert steps["split"]["status"] == "skipped"


# ---------------------------------------------------------------------- PIDs in another namespace


def test_workers_in_another_pid_namespace_are_matched_by_their_memory(tmp_path: Path) -> None:
    run = Run(tmp_path, quick(tmp_path), load={"os_pids": {"A": 11, "B": 12}})
    assert run.run() == 0
    mapping = run.report["pid_mapping"]
    assert mapping["method"] == "memory"
    assert mapping["map"] == {"4242": "A", "4343": "B"}
    assert mapping["worker_pids"] == {"A": 11, "B": 12}
    assert run.report["split"]["measured_share_A"] == pytest.approx(0.75, abs=0.03)


def test_workers_matched_by_energy_rank_when_nvml_gives_no_memory(tmp_path: Path) -> None:
    run = Run(tmp_path, quick(tmp_path), load={"os_pids": {"A": 11, "B": 12}, "context_bytes": None})
    assert run.run() == 0
    mapping = run.report["pid_mapping"]
    assert mapping["method"] == "energy_rank"
    assert mapping["map"] == {"4242": "A", "4343": "B"}
    assert "assumed" in mapping["note"]


# ---------------------------------------------------------------------- pieces


def test_update_period_sees_only_changes() -> None:
    times = [i * 0.002 for i in range(100)]
    values = [i // 5 for i in range(100)]  # a new value every 10 ms
    values[50] = None  # a failed poll is skipped, not a change
    out = stats.update_period(times, values, 0.002)
    assert out["median"] == pytest.approx(10.0)
    assert out["changes"] == 19
    assert out["polls"] == 99
    flat = stats.update_period(times, [7] * 100, 0.002)
    assert flat["changes"] == 0 and flat["median"] is None


def test_integration_and_subsampling() -> None:
    times = [0.0, 0.5, 1.0, 1.5, 2.0]
    assert stats.trapezoid(times, [0.0, 1.0, 2.0, 3.0, 4.0]) == pytest.approx(4.0)
    assert stats.trapezoid(times, [1.0, None, 1.0, None, None]) == pytest.approx(1.0)
    assert stats.trapezoid([0.0], [1.0]) is None
    assert stats.every(times, [1.0, 2.0, 3.0, 4.0, 5.0], 1.0) == ([0.0, 1.0, 2.0], [1.0, 3.0, 5.0])
    assert stats.quantile([1.0, 2.0, 3.0, 4.0], 0.5) == pytest.approx(2.5)
    assert stats.quantile([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0], 0.9) == pytest.approx(
        10.0
    )


def test_process_sample_stats_counts_empties_duplicates_and_periods() -> None:
    calls = [
        {"result": "NVML_ERROR_NOT_FOUND", "samples": []},
        {
            "result": "ok",
            "samples": [{"pid": 1, "ts_us": 1_000_000, "sm": 80}, {"pid": 2, "ts_us": 1_000_000, "sm": 20}],
        },
        {"result": "NVML_ERROR_NOT_FOUND", "samples": []},
        {
            "result": "ok",
            "samples": [
                {"pid": 1, "ts_us": 1_200_000, "sm": 60},
                {"pid": 1, "ts_us": 1_400_000, "sm": 70},
                {"pid": 1, "ts_us": 1_400_000, "sm": 70},
            ],
        },
    ]
    out = stats.process_sample_stats(calls)
    assert out["calls"] == 4
    assert out["empty_fraction"] == 0.5
    assert out["driver_sample_period_ms"]["median"] == pytest.approx(200.0)
    one = out["per_pid"]["1"]
    assert one["samples"] == 4 and one["duplicate_samples"] == 1
    assert one["samples_per_call_max"] == 3 and one["samples_per_call_mean"] == 2.0
    assert one["period_ms"]["median"] == pytest.approx(200.0)
    assert out["per_pid"]["2"]["period_ms"]["n"] == 0


def test_nvml_error_names_and_field_values() -> None:
    assert probe.error_name(pynvml, pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)) == "NVML_ERROR_NOT_FOUND"
    assert (
        probe.error_name(pynvml, pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)) == "NVML_ERROR_GPU_IS_LOST"
    )
    assert probe.error_name(pynvml, pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)) == "NVML_ERROR_UNKNOWN"
    # pynvml's answer when a size query finds zero samples.
    assert probe.error_name(pynvml, pynvml.NVMLError(pynvml.NVML_SUCCESS)) == "NVML_SUCCESS_EMPTY"
    for code in range(1, 30):
        name = probe.error_name(pynvml, pynvml.NVMLError(code))
        assert getattr(pynvml, name) == code, name
    raw = pynvml.c_nvmlFieldValue_t()
    raw.nvmlReturn = pynvml.NVML_SUCCESS
    raw.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
    raw.value.ullVal = 312_500
    assert probe.field_value(pynvml, raw) == 312_500.0
    raw.valueType = pynvml.NVML_VALUE_TYPE_DOUBLE
    raw.value.dVal = 1.5
    assert probe.field_value(pynvml, raw) == 1.5
    raw.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
    assert probe.field_value(pynvml, raw) is None


def test_arguments() -> None:
    options = parse_args(["--out", "x", "--quick", "--shared", "30s", "--duty", "0.6:0.2"])
    assert (options.shared_s, options.idle_s, options.duty_a, options.duty_b) == (30.0, 5.0, 0.6, 0.2)
    assert parse_args(["--out", "x"]).shared_s == 60.0
    assert parse_args(["--out", "x", "--launch", "8ms"]).launch_ms == pytest.approx(8.0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--out", "x", "--duty", "0.9:0.3"], "add up to at most 1"),
        (["--out", "x", "--shared", "soon"], "--shared: not a duration"),
        (["--out", "x", "--gpu", "first"], "--gpu: not a whole number"),
        (["--gpu", "0"], "--out"),
    ],
)
def test_bad_arguments_exit_2_naming_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv, nvml=FakeNvml(gpus=[])) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_module_form_needs_no_bcrypt_nor_the_exporters_web_side(tmp_path: Path) -> None:
    code = (
        "import sys, runpy\n"
        "sys.modules['bcrypt'] = None\n"  # importing bcrypt now fails, as where it is not installed
        "sys.argv = ['validate_gpu', '--help']\n"
        "try:\n"
        "    runpy.run_module('exporter.validate_gpu', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "import exporter.validate_gpu.kit, exporter.validate_gpu.worker\n"
        "bad = [m for m in ('exporter.web', 'exporter.cli', 'bcrypt') if sys.modules.get(m) is not None]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: footprint-exporter validate-gpu" in done.stdout and done.stdout.endswith("ok\n")


def test_cli_subcommand_runs_the_kit(capsys: pytest.CaptureFixture[str]) -> None:
    from exporter.cli import main as cli_main

    assert cli_main(["validate-gpu", "--out", "x", "--duty", "1:1"]) == 2
    assert "validate-gpu: duty cycles" in capsys.readouterr().err
