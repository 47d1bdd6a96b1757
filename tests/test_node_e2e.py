"""The real exporter with a node source: a fake BMC on loopback HTTPS, a fake ipmitool, config errors."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from tests.exporter_proc import ExporterProcess, start_exporter
from tests.fake_redfish import FakeBmc, Fault, Profile, dmtf_modern
from tests.metrics_text import parse, select
from tests.test_ipmi import FakeIpmitool

pytestmark = pytest.mark.integration

T = TypeVar("T")
CREDS = {"FOOTPRINT_REDFISH_USERNAME": "monitor", "FOOTPRINT_REDFISH_PASSWORD": "s3cret-Pw"}


def wait_for(predicate: Callable[[], T], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def metrics_when(exp: ExporterProcess, ready: Callable[[str], bool], timeout: float = 30.0) -> str:
    """The exporter's /metrics text once ``ready`` holds for it."""

    def check() -> str | None:
        text = exp.metrics()
        return text if ready(text) else None

    return wait_for(check, timeout)


def one(text: str, name: str, **labels: str) -> float | None:
    found = select(parse(text), name, **labels)
    return sum(found.values()) if found else None


def run_exporter(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args, "--web.listen-address=127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "env", "key"),
    [
        (["--source.node=redfish"], CREDS, "source.node.redfish.url"),
        (
            ["--source.node=redfish", "--source.node.redfish.url=http://bmc/redfish/v1"],
            CREDS,
            "source.node.redfish.url",
        ),
        (
            ["--source.node=redfish", "--source.node.redfish.url=https://bmc/redfish/v1"],
            {},
            "source.node.redfish",
        ),
        (
            [
                "--source.node=redfish",
                "--source.node.redfish.url=https://bmc/redfish/v1",
                "--source.node.redfish.password-file=/nonexistent/pw",
                "--source.node.redfish.username-file=/nonexistent/user",
            ],
            {},
            "source.node.redfish",
        ),
        (
            [
                "--source.node=redfish",
                "--source.node.redfish.url=https://bmc/redfish/v1",
                "--source.node.redfish.insecure-skip-verify",
                "--source.node.redfish.ca-file=/etc/hostname",
            ],
            CREDS,
            "source.node.redfish.insecure-skip-verify",
        ),
        (
            ["--source.node=redfish", "--source.node.redfish.url=https://root:hunter2@bmc/redfish/v1"],
            CREDS,
            "source.node.redfish.url",
        ),
        (["--source.node=bmc"], {}, "--source.node"),
        (["--source.node.interval=10"], {}, "--source.node.interval"),
    ],
)
def test_bad_node_configuration_exits_2_with_one_line(args: list[str], env: dict[str, str], key: str) -> None:
    proc = run_exporter(["--source.gpu=none", "--source.cpu=estimated", *args], env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("footprint-exporter: error:") and key in lines[0], (
        proc.stderr
    )
    assert "s3cret" not in proc.stderr and "hunter2" not in proc.stderr


def test_ipmi_lan_without_credentials_exits_2(tmp_path: Path) -> None:
    fake = FakeIpmitool(tmp_path)
    proc = run_exporter(
        [
            "--source.gpu=none",
            "--source.node=ipmi",
            f"--source.node.ipmi.path={fake.path}",
            "--source.node.ipmi.host=10.0.0.7",
        ]
    )
    assert proc.returncode == 2 and "source.node.ipmi" in proc.stderr and proc.stderr.count("\n") == 1


def test_missing_ipmitool_exits_1_with_one_line() -> None:
    proc = run_exporter(
        ["--source.gpu=none", "--source.node=ipmi", "--source.node.ipmi.path=/nonexistent/ipmitool"]
    )
    assert proc.returncode == 1
    assert (
        proc.stderr.strip().startswith("footprint-exporter: error: source.node: ")
        and proc.stderr.count("\n") == 1
    )


def test_redfish_node_in_the_exporter_failure_isolation_and_logout(tmp_path: Path) -> None:
    bmc = FakeBmc(tmp_path, Profile(base_w=6000.0))
    dmtf_modern(bmc, energy_in_environment=True)
    args = [
        "--source.gpu=simulated",
        "--source.gpu.simulated.count=2",
        "--source.cpu=estimated",
        "--sample.interval=100ms",
        "--source.node=redfish",
        f"--source.node.redfish.url={bmc.url}",
        f"--source.node.redfish.ca-file={bmc.ca_file}",
        "--source.node.interval=1s",
        "--source.node.timeout=500ms",
        f"--state.file={tmp_path / 'state.json'}",
    ]
    exp = start_exporter(args, env=CREDS)
    try:
        text = metrics_when(exp, lambda t: bool((one(t, "footprint_node_energy_joules_total") or 0) > 0))
        lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert lint.returncode == 0, lint.stdout + lint.stderr
        assert one(text, "footprint_node_power_watts", method="redfish") == 6000.0
        assert one(text, "footprint_node_energy_basis_info", basis="node", method="redfish") == 1.0
        assert one(text, "footprint_node_reading_info", part="1U:energy:EnvironmentMetrics/EnergykWh") == 1.0
        # Simulated GPUs and the CPU estimate draw far less than 6 kW: most of the node is unmetered.
        text = metrics_when(
            exp, lambda t: bool((one(t, "footprint_node_unmetered_energy_joules_total") or 0) > 0)
        )
        assert one(text, "footprint_source_up", source="redfish") == 1.0

        # The BMC fails: only the node series go (after three intervals), the GPUs and CPU carry on.
        energy_before = one(text, "footprint_node_energy_joules_total") or 0.0
        bmc.fault("*", Fault(status=503))
        gpu_before = one(exp.metrics(), "footprint_gpu_energy_joules_total") or 0.0
        text = metrics_when(exp, lambda t: bool("footprint_node_energy_joules_total" not in t), 20)
        assert one(text, "footprint_source_up", source="redfish") == 0.0
        assert (one(text, "footprint_source_errors_total", source="redfish", kind="http_5xx") or 0) >= 1
        assert one(text, "footprint_node_energy_basis_info", basis="components", method="redfish") == 1.0
        assert (one(text, "footprint_gpu_energy_joules_total") or 0) > gpu_before
        assert one(text, "footprint_source_up", source="simulated") == 1.0

        # Back again: the counter continues from where it was, never lower.
        bmc.clear_faults()
        text = metrics_when(exp, lambda t: bool("footprint_node_energy_joules_total" in t), 20)
        assert (one(text, "footprint_node_energy_joules_total") or 0) >= energy_before
        served = one(text, "footprint_node_energy_joules_total") or 0.0
    finally:
        code, log = exp.stop()
    assert code == 0, log
    assert bmc.sessions == {}, "the exporter left its Redfish session open on the BMC"
    assert bmc.hits("DELETE")
    assert "s3cret-Pw" not in log

    # A clean restart continues the node totals from the state file.
    again = start_exporter(args, env=CREDS)
    try:
        text = metrics_when(again, lambda t: bool("footprint_node_energy_joules_total" in t))
        assert (one(text, "footprint_node_energy_joules_total") or 0) >= served
    finally:
        again.stop()
        bmc.close()


def test_ipmi_node_in_the_exporter(tmp_path: Path) -> None:
    fake = FakeIpmitool(tmp_path)
    fake.scenario(base_w=2500.0)
    exp = start_exporter(
        [
            "--source.gpu=none",
            "--source.cpu=estimated",
            "--sample.interval=100ms",
            "--source.node=ipmi",
            f"--source.node.ipmi.path={fake.path}",
            "--source.node.interval=1s",
        ]
    )
    try:
        text = metrics_when(exp, lambda t: bool((one(t, "footprint_node_energy_joules_total") or 0) > 0))
        assert one(text, "footprint_node_power_watts", method="ipmi") == 2500.0
        assert one(text, "footprint_node_reading_info", method="ipmi", part="dcmi:instantaneous") == 1.0
        fake.scenario(mode="not_available")
        text = metrics_when(
            exp, lambda t: bool(one(t, "footprint_source_errors_total", source="ipmi", kind="not_available"))
        )
        assert one(text, "footprint_source_up", source="ipmi") == 0.0
    finally:
        exp.stop()
