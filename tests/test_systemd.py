"""Tests of deploy/systemd: the unit's flags, hardening, state path, and its companion files."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exporter.carbon.config import parse_carbon_config
from exporter.config import FLAGS_BY_NAME, load_config, load_file
from tests.exporter_proc import start_exporter

REPO = Path(__file__).resolve().parents[1]
SYSTEMD = REPO / "deploy" / "systemd"
UNIT = SYSTEMD / "footprint-exporter.service"
EXPORTER = Path(sys.executable).with_name("footprint-exporter")


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as section -> key -> values (keys may repeat), with continued lines joined."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith(("#", ";"))):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    for line in logical:
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"key outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not key=value: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text(encoding="utf-8"))["Service"]


def _one(key: str) -> str:
    values = _service()[key]
    assert len(values) == 1, f"{key} set {len(values)} times"
    return values[0]


def _exec_start() -> tuple[str, dict[str, str]]:
    binary, *args = shlex.split(_one("ExecStart"))
    flags: dict[str, str] = {}
    for arg in args:
        assert arg.startswith("--") and "=" in arg, arg
        name, value = arg[2:].split("=", 1)
        assert name not in flags, f"--{name} given twice"
        flags[name] = value
    return binary, flags


def test_parser_joins_continuations_and_keeps_repeated_keys() -> None:
    unit = parse_unit("[Service]\n# c\nExecStart=/bin/x \\\n    --a=1 \\\n    --b=2\nK=1\nK=2\n")
    assert unit["Service"]["K"] == ["1", "2"]
    assert shlex.split(unit["Service"]["ExecStart"][0]) == ["/bin/x", "--a=1", "--b=2"]


def test_exec_start_flags_are_flags_the_exporter_accepts() -> None:
    binary, flags = _exec_start()
    assert binary == "/opt/footprint-exporter/bin/footprint-exporter"
    assert set(flags) <= set(FLAGS_BY_NAME)
    assert len(flags) == 6
    # Convert every value as the exporter would, with the example config in place of /etc's.
    argv = [f"--{k}={v}" for k, v in flags.items() if k != "config.file"]
    config = load_config([*argv, f"--config.file={SYSTEMD / 'config.yaml'}"], environ={})
    assert config["web.listen-address"] == ":9877"
    assert config["state.interval"] == 60.0
    assert config.sources["state.file"] == "flag"
    assert config["sample.interval"] == 1.0 and config.sources["sample.interval"] == "file"


def test_exec_start_flags_appear_in_the_installed_exporters_help() -> None:
    result = subprocess.run(
        [str(EXPORTER), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    _, flags = _exec_start()
    for name in flags:
        assert f"--{name}" in result.stdout


def test_state_file_is_in_the_state_directory() -> None:
    _, flags = _exec_start()
    state_directory = _one("StateDirectory")
    assert state_directory == "footprint"
    assert flags["state.file"] == f"/var/lib/{state_directory}/state.json"
    assert _one("WorkingDirectory") == f"/var/lib/{state_directory}"


def test_secrets_come_from_an_optional_environment_file() -> None:
    # The leading '-' lets the service start before anyone has created the file.
    assert _one("EnvironmentFile") == "-/etc/default/footprint-exporter"
    assert "Environment" not in _service()


def test_hardening_settings() -> None:
    service = _service()
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "DevicePolicy": "closed",
        "DeviceAllow": "char-nvidia* rw",
        "User": "footprint",
    }
    for key, value in expected.items():
        assert service[key] == [value], key
    assert service["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    # NVML needs the NVIDIA device nodes, so devices are limited by DeviceAllow rather than hidden.
    assert "PrivateDevices" not in service
    # Other users' processes must stay visible for attribution.
    assert "ProtectProc" not in service


def test_restart_and_stop_behaviour() -> None:
    assert _one("Restart") == "on-failure"
    assert _one("KillSignal") == "SIGTERM"
    # Exit status 2 is a configuration error (DESIGN section 4): restarting would only loop.
    assert _one("RestartPreventExitStatus") == "2"
    timeout = _one("TimeoutStopSec")
    assert timeout.endswith("s") and int(timeout[:-1]) >= 10


def test_sysusers_and_tmpfiles_name_the_units_user() -> None:
    user = _one("User")
    assert _one("Group") == user
    sysusers = [
        ln.split()
        for ln in (SYSTEMD / "footprint-exporter.sysusers.conf").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert [(f[0], f[1]) for f in sysusers] == [("u", user)]
    tmpfiles = [
        ln.split()
        for ln in (SYSTEMD / "footprint-exporter.tmpfiles.conf").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert len(tmpfiles) == 2
    for kind, path, mode, owner, group, _age in tmpfiles:
        assert (kind, mode, owner, group) == ("z", "0440", "root", user)
        assert path.startswith("/sys/class/powercap/intel-rapl:") and path.endswith("/energy_uj")


def test_example_config_is_accepted(tmp_path: Path) -> None:
    values, carbon_raw = load_file(str(SYSTEMD / "config.yaml"))
    assert values == {"sample.interval": 1.0, "attribution.group-by": "pid", "attribution.max-series": 500}
    carbon = parse_carbon_config(carbon_raw)
    assert (carbon.zone, carbon.providers[0].type) == ("DE", "electricitymaps")


def test_example_environment_file_names_only_known_flags_and_holds_no_secret() -> None:
    names: list[str] = []
    for line in (SYSTEMD / "footprint-exporter.default").read_text().splitlines():
        match = re.match(r"^#?([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            names.append(match.group(1))
            if not line.startswith("#"):
                pytest.fail(f"example env file sets a value: {match.group(1)}")
    known = {f.env for f in FLAGS_BY_NAME.values()}
    flag_vars = [n for n in names if n.startswith("FOOTPRINT_")]
    assert len(flag_vars) == 3
    assert set(flag_vars) <= known
    assert "ELECTRICITYMAPS_TOKEN" in names


@pytest.fixture()
def unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's exporter, so systemd can resolve it."""
    assert EXPORTER.exists()
    text = UNIT.read_text(encoding="utf-8").replace(
        "/opt/footprint-exporter/bin/footprint-exporter", str(EXPORTER)
    )
    path = tmp_path / "footprint-exporter.service"
    path.write_text(text, encoding="utf-8")
    return path


def test_systemd_analyze_verify_is_clean(unit_copy: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is missing (Debian package systemd; .ci/run installs it)"
    result = subprocess.run(
        [analyze, "verify", str(unit_copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    # verify only warns (exit 0) on unknown keys or bad values: any line naming the unit is a problem.
    problems = [ln for ln in (result.stdout + result.stderr).splitlines() if unit_copy.name in ln]
    assert problems == []


def test_systemd_analyze_security_exposure_is_low(unit_copy: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is missing (Debian package systemd; .ci/run installs it)"
    result = subprocess.run(
        [analyze, "security", "--offline=yes", str(unit_copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert match is not None, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0


@pytest.mark.integration
def test_sigterm_saves_the_state_file_the_unit_relies_on(tmp_path: Path) -> None:
    """KillSignal=SIGTERM is only right if the exporter saves its state on SIGTERM: check it does."""
    state = tmp_path / "state.json"
    exporter = start_exporter(
        [
            "--source.gpu=simulated",
            "--source.cpu=none",
            "--sample.interval=100ms",
            f"--state.file={state}",
            "--state.interval=1h",
        ],
        env={"PATH": "/usr/bin:/bin"},
        program=[str(EXPORTER)],
        inherit_env=False,
        wait=60,
    )
    time.sleep(1.0)  # a few samples, so there is energy to save
    assert not state.exists()  # --state.interval=1h: nothing saved before the signal
    code, log = exporter.stop(signal.SIGTERM, timeout=30)
    assert code == 0, log
    saved = json.loads(state.read_text(encoding="utf-8"))
    assert saved["version"] == 2
    assert saved["clean"] is True  # the only kind of save the next start continues from
    assert saved["totals"]
