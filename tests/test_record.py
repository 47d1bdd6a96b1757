"""Tests for exporter.record: trace lines from readings, the recording loop, and the command line."""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pynvml
import pytest
from fake_pynvml import FakeGpu, FakeNvml, FakeProcess

from exporter.model import GpuProcessSample, GpuReading
from exporter.record import main, read_cgroup, reading_to_json, record, write_sample
from exporter.sources import GpuSource, SourceUnavailable
from exporter.sources.nvml import NvmlGpuSource
from exporter.sources.replay import ReplayGpuSource

V2_CGROUP = (
    "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice/cri-containerd-ab.scope\n"
)
V1_CGROUP = "12:memory:/docker/0123abcd\n11:cpu,cpuacct:/docker/0123abcd\n0::/\n"


class FakeTime:
    """A clock that only moves when the recorder sleeps; the fake GPUs' counters move with it."""

    def __init__(self, nvml: FakeNvml | None = None, start: float = 1000.0) -> None:
        self.now = start
        self.nvml = nvml
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.nvml is not None:
            self.nvml.advance(seconds)


def fake_fleet() -> FakeNvml:
    return FakeNvml(
        gpus=[
            FakeGpu(
                uuid="GPU-1f6c0000",
                name="NVIDIA H100 80GB HBM3",
                power_w=312.5,
                energy_j=10500.0,
                util_percent=87,
                mem_used_bytes=41_000_000_000,
                mem_total_bytes=85_899_345_920,
                temp_c=61,
                power_limit_w=700.0,
                processes=[FakeProcess(pid=4242, used_memory_bytes=40_000_000_000)],
            ),
            FakeGpu(
                uuid="GPU-2b7d0000", name="Tesla P100-PCIE-16GB", power_w=40.0, energy_j=None, util_percent=5
            ),
        ]
    )


def procfs(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    (root / "4242").mkdir(parents=True)
    (root / "4242" / "cgroup").write_text(V2_CGROUP)
    (root / "4242" / "cmdline").write_text("python\0train.py\0--api-key=SECRET\0")
    (root / "4242" / "environ").write_text("TOKEN=SECRET\0")
    return root


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------- pure parts


def test_reading_to_json_has_the_contract_fields_and_omits_none() -> None:
    reading = GpuReading(
        index=3, uuid="GPU-x", name="NVIDIA A100-SXM4-40GB", driver_version="550.90.07",
        pci_bus_id="00000000:07:00.0", power_w=250.5, energy_j=None, util=0.5, mem_used_bytes=10,
        mem_total_bytes=20, temp_c=None, power_limit_w=400.0,
        processes=(GpuProcessSample(pid=7, comm="python", user="alice", sm_util=0.25, used_memory_bytes=None),
                   GpuProcessSample(pid=8, comm="vllm", user="bob", sm_util=None, used_memory_bytes=5,
                                    cgroup="0::/system.slice/docker-ff.scope", start_time=12.5)),
    )  # fmt: skip
    got = reading_to_json(reading, cgroup_of=lambda pid: f"/from/proc/{pid}")
    assert got == {
        "index": 3, "uuid": "GPU-x", "name": "NVIDIA A100-SXM4-40GB", "power_w": 250.5, "util": 0.5,
        "mem_used_bytes": 10, "mem_total_bytes": 20, "power_limit_w": 400.0, "driver_version": "550.90.07",
        "pci_bus_id": "00000000:07:00.0",
        "processes": [
            {"pid": 7, "comm": "python", "user": "alice", "sm_util": 0.25, "cgroup": "/from/proc/7"},
            {"pid": 8, "comm": "vllm", "user": "bob", "used_memory_bytes": 5,
             "cgroup": "0::/system.slice/docker-ff.scope", "start_time": 12.5},
        ],
    }  # fmt: skip


def test_down_gpu_or_gpu_without_power_is_left_out_of_the_line() -> None:
    out = io.StringIO()
    write_sample(out, 1.5, [
        GpuReading(index=0, uuid="GPU-a", up=False, error="lost"),
        GpuReading(index=1, uuid="GPU-b", power_w=None, util=0.1),
        GpuReading(index=2, uuid="GPU-c", power_w=80.0, processes=None),
    ])  # fmt: skip
    line = out.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line) == {
        "t": 1.5,
        "gpus": [{"index": 2, "uuid": "GPU-c", "name": "", "power_w": 80.0}],
    }


def test_read_cgroup_gives_the_v2_path_or_the_raw_lines(tmp_path: Path) -> None:
    root = tmp_path / "proc"
    for pid, text in ((1, V2_CGROUP), (2, V1_CGROUP), (3, "")):
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "cgroup").write_text(text)
    assert read_cgroup(str(root), 1) == V2_CGROUP.strip()[3:]
    assert read_cgroup(str(root), 2) == V1_CGROUP.strip()
    assert read_cgroup(str(root), 3) == ""
    assert read_cgroup(str(root), 4) == ""  # gone, or in a PID namespace we do not see


# ---------------------------------------------------------------------- recording


def test_recorded_fake_nvml_trace_parses_back_with_contract_values(tmp_path: Path) -> None:
    nvml = fake_fleet()
    fake = FakeTime(nvml)
    out = tmp_path / "trace.jsonl"
    root = procfs(tmp_path)

    def factory(kind: str, count: int, procfs_root: str) -> GpuSource:
        assert (kind, procfs_root) == ("nvml", str(root))
        return NvmlGpuSource(nvml=nvml, procfs_root=procfs_root)

    argv = [
        "--output",
        str(out),
        "--duration",
        "5s",
        "--sample.interval",
        "500ms",
        "--path.procfs",
        str(root),
    ]
    assert main(argv, clock=fake.clock, sleep=fake.sleep, source_factory=factory) == 0
    assert nvml.initialised == 0  # the source was closed

    samples = lines_of(out)
    assert [s["t"] for s in samples] == pytest.approx([k * 0.5 for k in range(11)])
    assert all(b["t"] > a["t"] for a, b in itertools.pairwise(samples))
    for k, sample in enumerate(samples):
        h100, p100 = sample["gpus"]
        assert h100 == {
            "index": 0, "uuid": "GPU-1f6c0000", "name": "NVIDIA H100 80GB HBM3", "power_w": 312.5,
            "energy_j": pytest.approx(10500.0 + 312.5 * 0.5 * k), "util": pytest.approx(0.87),
            "mem_used_bytes": 41_000_000_000, "mem_total_bytes": 85_899_345_920, "temp_c": 61.0,
            "power_limit_w": 700.0, "driver_version": "550.90.07", "pci_bus_id": "00000000:18:00.0",
            "processes": [{"pid": 4242, "comm": "", "user": "", "used_memory_bytes": 40_000_000_000,
                           "cgroup": V2_CGROUP.strip()[3:]}],
        }  # fmt: skip
        assert "energy_j" not in p100
        assert (p100["uuid"], p100["power_w"], p100["util"]) == ("GPU-2b7d0000", 40.0, pytest.approx(0.05))
    assert "SECRET" not in out.read_text()

    # The replay source takes it: the H100 by its counter, the P100 by integrating its power.
    replay = ReplayGpuSource(str(out))
    first = replay.read(0.0)
    last = replay.read(5.0)
    assert last[0].energy_j - first[0].energy_j == pytest.approx(312.5 * 5.0)
    assert last[1].energy_j - first[1].energy_j == pytest.approx(40.0 * 5.0)


def test_lost_gpu_is_left_out_while_it_is_down(tmp_path: Path) -> None:
    nvml = fake_fleet()
    fake = FakeTime(nvml)
    out = io.StringIO()
    source = NvmlGpuSource(nvml=nvml)
    stop = threading.Event()
    reads = 0
    original = source.read

    def read(now: float) -> list[GpuReading]:
        nonlocal reads
        reads += 1
        if reads == 2:
            nvml.lose(0)
        if reads == 4:
            nvml.recover(0)
        return original(now)

    source.read = read  # type: ignore[method-assign]
    n = record(source, out, duration_s=4.0, interval_s=1.0, clock=fake.clock, sleep=fake.sleep, stop=stop,
               cgroup_of=lambda pid: "")  # fmt: skip
    assert n == 5
    samples = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [[g["index"] for g in s["gpus"]] for s in samples] == [[0, 1], [1], [1], [0, 1], [0, 1]]


def test_stop_event_ends_an_open_ended_recording() -> None:
    nvml = fake_fleet()
    fake = FakeTime(nvml)
    stop = threading.Event()

    def sleep(seconds: float) -> None:
        fake.sleep(seconds)
        if len(fake.sleeps) == 7:
            stop.set()

    out = io.StringIO()
    n = record(NvmlGpuSource(nvml=nvml), out, duration_s=0.0, interval_s=2.0, clock=fake.clock, sleep=sleep,
               stop=stop, cgroup_of=lambda pid: "")  # fmt: skip
    assert n == 7
    assert [json.loads(line)["t"] for line in out.getvalue().splitlines()] == [0.0, 2, 4, 6, 8, 10, 12]


def test_slow_reads_skip_missed_slots() -> None:
    fake = FakeTime()

    class SlowSource:
        name = "slow"

        def read(self, now: float) -> list[GpuReading]:
            fake.now += 2.5  # a read that takes 2.5 intervals
            return [GpuReading(index=0, uuid="GPU-s", power_w=10.0)]

        def close(self) -> None:
            pass

    out = io.StringIO()
    n = record(SlowSource(), out, duration_s=10.0, interval_s=1.0, clock=fake.clock, sleep=fake.sleep,
               stop=threading.Event(), cgroup_of=lambda pid: "")  # fmt: skip
    ts = [json.loads(line)["t"] for line in out.getvalue().splitlines()]
    assert ts == [0.0, 3.0, 6.0, 9.0]
    assert n == 4
    assert fake.sleeps == [0.5, 0.5, 0.5]


def test_sigint_stops_the_recording_cleanly(tmp_path: Path) -> None:
    nvml = fake_fleet()
    fake = FakeTime(nvml)
    out = tmp_path / "trace.jsonl"

    def sleep(seconds: float) -> None:
        fake.sleep(seconds)
        if len(fake.sleeps) == 3:
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    code = main(["--output", str(out), "--duration", "0"], clock=fake.clock, sleep=sleep,
                source_factory=lambda kind, count, root: NvmlGpuSource(nvml=nvml))  # fmt: skip
    assert code == 0
    assert [s["t"] for s in lines_of(out)] == [0.0, 1.0, 2.0]
    assert signal.getsignal(signal.SIGINT) is before
    assert nvml.initialised == 0


def test_simulated_source_records_processes_with_cgroups(tmp_path: Path) -> None:
    fake = FakeTime()
    out = tmp_path / "sim.jsonl"
    argv = [
        "--output",
        str(out),
        "--duration",
        "3s",
        "--source.gpu",
        "simulated",
        "--source.gpu.simulated.count",
        "2",
    ]
    assert main(argv, clock=fake.clock, sleep=fake.sleep) == 0
    samples = lines_of(out)
    assert len(samples) == 4
    assert all(len(s["gpus"]) == 2 for s in samples)
    energies = [s["gpus"][0]["energy_j"] for s in samples]
    assert energies == sorted(energies) and energies[-1] > energies[0]
    procs = [p for s in samples for g in s["gpus"] for p in g.get("processes", [])]
    assert procs and all(p["cgroup"] for p in procs)


# ---------------------------------------------------------------------- command line


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([], "--output"),
        (["--output", "x", "--duration", "soon"], "--duration"),
        (["--output", "x", "--sample.interval", "0"], "--sample.interval"),
        (["--output", "x", "--sample.interval", "1 s"], "--sample.interval"),
        (["--output", "x", "--source.gpu", "replay"], "--source.gpu"),
        (["--output", "x", "--source.gpu.simulated.count", "many"], "--source.gpu.simulated.count"),
        (["--output", "x", "--source.gpu.simulated.count", "0"], "--source.gpu.simulated.count"),
        (["--output", "x", "--frobnicate"], "--frobnicate"),
        (["--output", "/nonexistent-dir/trace.jsonl", "--source.gpu", "simulated"], "--output"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    fake = FakeTime()
    argv = [str(tmp_path / "x") if a == "x" else a for a in argv]
    assert main(argv, clock=fake.clock, sleep=fake.sleep) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err
    assert not (tmp_path / "x").exists()


def test_unavailable_source_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    def factory(kind: str, count: int, root: str) -> GpuSource:
        return NvmlGpuSource(nvml=FakeNvml(gpus=[], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))

    out = tmp_path / "t.jsonl"
    assert main(["--output", str(out)], source_factory=factory) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nvml unavailable" in err and "libnvidia-ml.so.1" in err
    assert not out.exists()
    with pytest.raises(SourceUnavailable):
        factory("nvml", 1, "/proc")


@pytest.mark.integration
def test_record_command_runs_and_stops_on_sigterm(tmp_path: Path) -> None:
    out = tmp_path / "trace.jsonl"
    cmd = [sys.executable, "-m", "exporter", "record", "--output", str(out), "--duration", "0",
           "--sample.interval", "100ms", "--source.gpu", "simulated",
           "--source.gpu.simulated.count", "3"]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 3):
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    samples = lines_of(out)
    assert len(samples) >= 3
    assert all(len(s["gpus"]) == 3 for s in samples)
    assert all(b["t"] > a["t"] for a, b in itertools.pairwise(samples))
    assert f"wrote {len(samples)} samples" in err
