"""The real exporter process: serving, promtool-clean output, config errors, state across restarts."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.exporter_proc import start_exporter
from tests.metrics_text import parse, select

pytestmark = pytest.mark.integration


def wait_for(predicate, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_simulated_fleet_passes_promtool_and_conserves_energy(tmp_path: Path) -> None:
    config = tmp_path / "c.yml"
    config.write_text("carbon:\n  zone: DE\n")
    exp = start_exporter(
        [
            "--source.gpu=simulated",
            "--source.gpu.simulated.count=3",
            "--sample.interval=100ms",
            "--source.cpu=estimated",
            # Idle power configured, not learned: the learner takes a low percentile of the package's
            # power as idle, and on a machine whose load is steady for the test's few seconds (a quiet
            # CI runner) that is all of it, so no process would be charged and the CPU identity below
            # would hold trivially. With 0 W idle every joule is active and split by CPU time.
            "--attribution.cpu-package-idle-watts=0",
            f"--config.file={config}",
        ]
    )
    try:
        wait_for(lambda: select(parse(exp.metrics()), "footprint_process_gpu_energy_joules_total"))
        cpu_family = "footprint_process_cpu_energy_joules_total"
        wait_for(lambda: sum(select(parse(exp.metrics()), cpu_family).values()))
        time.sleep(1.0)
        text = exp.metrics()
        lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout + lint.stderr
        samples = parse(text)
        gpus = select(samples, "footprint_gpu_energy_joules_total")
        assert len(gpus) == 3
        for labels, total in gpus.items():
            uuid = dict(labels)["uuid"]
            procs = sum(select(samples, "footprint_process_gpu_energy_joules_total", uuid=uuid).values())
            idle = select(samples, "footprint_gpu_unattributed_energy_joules_total", uuid=uuid)
            assert total > 0
            assert procs + sum(idle.values()) == pytest.approx(total, rel=1e-9)
        # The same identity for the CPU: processes (by CPU time) plus unattributed = package energy.
        cpu_total = sum(select(samples, "footprint_cpu_energy_joules_total").values())
        cpu_procs = sum(select(samples, "footprint_process_cpu_energy_joules_total").values())
        cpu_idle = sum(select(samples, "footprint_cpu_unattributed_energy_joules_total").values())
        assert cpu_total > 0 and cpu_procs > 0
        assert cpu_procs + cpu_idle == pytest.approx(cpu_total, rel=1e-9)
        # Emissions from the embedded table for DE, with the zone and provider exported.
        intensity = select(
            samples, "footprint_grid_carbon_intensity_grams_per_kwh", zone="DE", signal="average"
        )
        assert intensity and all(v > 0 for v in intensity.values())
        assert sum(select(samples, "footprint_gpu_emissions_grams_total").values()) > 0
        # Nothing from a process's command line or environment reaches the output.
        assert "--source.gpu" not in text and "PATH=" not in text
        assert select(samples, "footprint_source_up", source="simulated") == {
            frozenset({("source", "simulated")}): 1.0
        }
    finally:
        code, err = exp.stop()
    assert code == 0, err


@pytest.mark.parametrize(
    ("args", "yaml_text", "key"),
    [
        ([], "sample:\n  intervall: 1s\n", "sample.intervall"),
        (["--sample.interval=soon"], "", "--sample.interval"),
        ([], "carbon:\n  zone: NOWHERE\n", "carbon.zone"),
        (
            ["--source.gpu=replay", "--source.gpu.replay.file=/nonexistent.jsonl"],
            "",
            "source.gpu.replay.file",
        ),
        (["--web.config.file=/nonexistent/web.yml"], "", "web.config.file"),
    ],
)
def test_bad_configuration_exits_2_with_one_line(
    tmp_path: Path, args: list[str], yaml_text: str, key: str
) -> None:
    config = tmp_path / "c.yml"
    config.write_text(yaml_text)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            *args,
            f"--config.file={config}",
            "--web.listen-address=127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert key in lines[0] and lines[0].startswith("footprint-exporter: error:")


def test_unreadable_config_file_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", f"--config.file={tmp_path / 'none.yml'}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "config.file" in proc.stderr


def test_explicit_source_that_cannot_work_exits_1_with_one_line() -> None:
    # No powercap tree there: asked for explicitly, RAPL is fatal (auto falls back to the estimate).
    args, key = ["--source.gpu=none", "--source.cpu=rapl", "--path.sysfs=/nonexistent"], "source.cpu"
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", *args, "--web.listen-address=127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"footprint-exporter: error: {key}: "), proc.stderr


def gpu_total(text: str) -> float:
    return sum(select(parse(text), "footprint_gpu_energy_joules_total").values())


def test_state_file_carries_totals_across_restarts(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    args = [
        "--source.gpu=simulated",
        "--source.gpu.simulated.count=2",
        "--sample.interval=100ms",
        "--source.cpu=none",
        f"--state.file={state}",
        "--state.interval=1s",
    ]
    first = start_exporter(args)
    try:
        wait_for(lambda: gpu_total(first.metrics()) > 500)
    finally:
        code, _ = first.stop(signal.SIGTERM)
    assert code == 0
    saved = json.loads(state.read_text())
    saved_total = sum(g["energy_j"] for g in saved["totals"]["gpus"].values())
    assert saved_total > 500

    second = start_exporter(args)
    try:
        # The first snapshot the sampler publishes already continues from the saved total. (A scrape
        # before that first tick has no GPU series at all: /healthz answers a moment earlier.)
        assert gpu_total(second.wait_for_first_sample()) >= saved_total
        saves = wait_for(lambda: select(parse(second.metrics()), "footprint_state_saves_total"))
        assert next(iter(saves.values())) >= 0
    finally:
        second.stop()


def test_corrupt_state_file_is_set_aside(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text("{not json")
    exp = start_exporter(
        ["--source.gpu=simulated", "--source.cpu=none", f"--state.file={state}", "--sample.interval=100ms"]
    )
    try:
        # From the first published snapshot on (before it the series are absent, and this held trivially).
        first = exp.wait_for_first_sample()
        assert select(parse(first), "footprint_gpu_energy_joules_total")
        assert gpu_total(first) < 10_000  # started from zero
    finally:
        code, err = exp.stop()
    assert code == 0
    aside = list(tmp_path.glob("state.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text() == "{not json"
    assert "unusable" in err and "moved to" in err and "level=warning" in err
    assert json.loads(state.read_text())["version"] == 2  # a good state was written at shutdown


def test_replay_source_serves_the_trace(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text(
        "".join(
            json.dumps(
                {
                    "t": float(k),
                    "gpus": [
                        {
                            "index": 0,
                            "uuid": "GPU-replay",
                            "name": "NVIDIA H100 80GB HBM3",
                            "power_w": 300.0,
                            "util": 0.9,
                            "processes": [
                                {
                                    "pid": 42,
                                    "comm": "python",
                                    "user": "alice",
                                    "sm_util": 0.9,
                                    "cgroup": "0::/system.slice/slurmstepd.scope/job_777/step_0/user/task_0",
                                }
                            ],
                        }
                    ],
                }
            )
            + "\n"
            for k in range(100)
        )
    )
    exp = start_exporter(
        [
            "--source.gpu=replay",
            f"--source.gpu.replay.file={trace}",
            "--sample.interval=100ms",
            "--source.cpu=none",
        ]
    )
    try:
        samples = wait_for(
            lambda: (
                (s := parse(exp.metrics()))
                and select(s, "footprint_process_gpu_energy_joules_total", slurm_job_id="777")
                and s
            )
        )
        power = select(samples, "footprint_gpu_power_watts", uuid="GPU-replay")
        assert list(power.values()) == [300.0]
        procs = select(samples, "footprint_process_gpu_energy_joules_total", uuid="GPU-replay")
        assert {dict(k)["comm"] for k in procs} == {"python"}
    finally:
        exp.stop()


def test_gpus_on_the_pci_bus_come_from_path_sysfs_and_a_directory_state_path_is_reported(
    tmp_path: Path,
) -> None:
    sysfs = tmp_path / "sys"
    for address, cls in (
        ("0000:00:06.0", "0x030200"),
        ("0000:00:07.0", "0x030200"),
        ("0000:00:08.0", "0x040300"),
    ):
        device = sysfs / "bus" / "pci" / "devices" / address
        device.mkdir(parents=True)
        (device / "vendor").write_text("0x10de\n")  # as an H200 shows it: class 0x030200, driver nvidia
        (device / "class").write_text(cls + "\n")
        (sysfs / "bus" / "pci" / "drivers" / "nvidia").mkdir(parents=True, exist_ok=True)
        (device / "driver").symlink_to(sysfs / "bus" / "pci" / "drivers" / "nvidia")
    state_dir = tmp_path / "state.json"
    state_dir.mkdir()
    exp = start_exporter(
        [
            "--source.gpu=simulated",
            "--source.gpu.simulated.count=1",
            "--source.cpu=none",
            "--sample.interval=100ms",
            f"--path.sysfs={sysfs}",
            f"--state.file={state_dir}",
        ]
    )
    try:
        samples = wait_for(
            lambda: (s := parse(exp.metrics())) and select(s, "footprint_gpu_pci_devices") and s
        )
        assert select(samples, "footprint_gpu_pci_devices") == {frozenset({("driver", "nvidia")}): 2.0}
        assert list(select(samples, "footprint_state_restore_info")) == [
            frozenset({("result", "unreadable")})
        ]
    finally:
        code, log = exp.stop()
    assert code == 0 and state_dir.is_dir()
    line = next(x for x in log.splitlines() if "level=error" in x and "state.file" in x)
    assert str(state_dir) in line and "is a directory" in line
    # The save at shutdown fails too, and says why.
    assert any(
        "cannot save state" in x and "err=" not in x and "Is a directory" in x for x in log.splitlines()
    )


@pytest.mark.parametrize(
    ("args", "lookup"),
    [
        (["--kubernetes.node-name=n1"], "apiserver"),
        (["--kubernetes.node-name=n1", "--kubernetes.kubelet-url=https://10.0.0.5:10250"], "kubelet"),
        (["--kubernetes.node-name=n1", "--kubernetes.pod-lookup=none"], None),
        (["--kubernetes.pod-lookup=apiserver"], None),  # no node name: no lookup at all
    ],
)
def test_pod_lookup_auto_follows_a_given_kubelet_url(args: list[str], lookup: str | None) -> None:
    from exporter.config import load_config
    from exporter.podidentity import build_pod_identity

    identity = build_pod_identity(load_config([*args, "--kubernetes.pod-resources-socket="], environ={}))
    assert [h.lookup for h in identity.healths] == ([lookup] if lookup else [])
    assert identity.allocations is None  # the socket was turned off with ""
