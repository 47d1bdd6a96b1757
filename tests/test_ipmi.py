"""IPMI DCMI node source: the parser on ipmitool's real output, and the source running a fake ipmitool."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from exporter.sources import SourceReadError
from exporter.sources.bmc_credentials import BmcCredentials
from exporter.sources.ipmi import IpmitoolDcmiSource, error_kind, parse_power_reading

# As printed by ipmitool 1.8.18 (asctime timestamp), from a Supermicro BMC (radiorabe/rabe-zabbix#101).
ACTIVATED = """
    Instantaneous power reading:                   197 Watts
    Minimum during sampling period:                175 Watts
    Maximum during sampling period:                242 Watts
    Average power reading over sample period:      190 Watts
    IPMI timestamp:                           Sun Mar  6 15:13:42 2022
    Sampling period:                          00123893 Seconds.
    Power reading state is:                   activated

"""
# ipmitool 1.8.19 prints the timestamp with ipmi_timestamp_numeric(): "%x %X %Z" in the C locale.
ACTIVATED_1_8_19 = """
    Instantaneous power reading:                  1412 Watts
    Minimum during sampling period:                  8 Watts
    Maximum during sampling period:               3530 Watts
    Average power reading over sample period:     1398 Watts
    IPMI timestamp:                           03/06/22 15:13:42 UTC
    Sampling period:                          00000001 Seconds.
    Power reading state is:                   activated

"""
# OpenBMC: figures but "deactivated" (openbmc/openbmc#3257): DCMI bit 6 clear = no measurement available.
OPENBMC_DEACTIVATED = """
    Instantaneous power reading:                   319 Watts
    Minimum during sampling period:                319 Watts
    Maximum during sampling period:                319 Watts
    Average power reading over sample period:      319 Watts
    IPMI timestamp:                           Thu Jan  1 00:00:00 1970
    Sampling period:                          00000000 Seconds.
    Power reading state is:                   deactivated

"""

FAKE = Path(__file__).with_name("fake_ipmitool.py")


def test_parse_activated_reading() -> None:
    r = parse_power_reading(ACTIVATED)
    assert (r.instantaneous_w, r.minimum_w, r.maximum_w, r.average_w) == (197.0, 175.0, 242.0, 190.0)
    assert r.sampling_period_s == 123893.0
    assert r.active is True


def test_parse_newer_timestamp_format() -> None:
    r = parse_power_reading(ACTIVATED_1_8_19)
    assert (r.instantaneous_w, r.sampling_period_s, r.active) == (1412.0, 1.0, True)


def test_parse_deactivated() -> None:
    r = parse_power_reading(OPENBMC_DEACTIVATED)
    assert (r.instantaneous_w, r.active) == (319.0, False)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n    A valid DCMI command was not returned! (0)",
        "Instantaneous power reading: lots Watts\n",
        "garbage",
    ],
)
def test_parse_rejects_output_without_a_reading(text: str) -> None:
    with pytest.raises(SourceReadError) as err:
        parse_power_reading(text)
    assert err.value.kind == "malformed"


@pytest.mark.parametrize(
    ("stderr", "kind"),
    [
        (
            "Could not open device at /dev/ipmi0 or /dev/ipmi/0 or /dev/ipmidev/0: No such file or directory",
            "no_device",
        ),
        ("Error: Unable to establish IPMI v2 / RMCP+ session", "no_session"),
        ("\n    Unable to get DCMI information", "no_answer"),
        ("\n    DCMI request failed because: Invalid command (c1)", "not_supported"),
        ("\n    DCMI request failed because: Insufficient privilege level (d4)", "auth"),
        ("Segmentation fault", "command_failed"),
    ],
)
def test_error_kinds(stderr: str, kind: str) -> None:
    assert error_kind(stderr) == kind


class FakeIpmitool:
    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "ipmitool"
        shutil.copy(FAKE, self.path)
        # The fake runs on the interpreter running the tests, whatever python3 on PATH is.
        text = self.path.read_text().replace("#!/usr/bin/env python3", f"#!{sys.executable}", 1)
        self.path.write_text(text)
        self.path.chmod(self.path.stat().st_mode | stat.S_IXUSR)

    def scenario(self, **values: Any) -> None:
        base = {"mode": "activated", "base_w": 1500.0, "amp_w": 0.0, "period_s": 600.0, "t0": time.time()}
        base.update(values)
        self.path.with_suffix(".json").write_text(json.dumps(base))

    def calls(self) -> list[dict[str, Any]]:
        log = self.path.with_suffix(".calls")
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def fake(tmp_path: Path) -> FakeIpmitool:
    return FakeIpmitool(tmp_path)


def test_local_interface_reading(fake: FakeIpmitool) -> None:
    fake.scenario(base_w=1500.0)
    reading = IpmitoolDcmiSource(str(fake.path)).read()
    assert reading.power_w == 1500.0
    assert reading.energy_j is None
    assert fake.calls()[0]["argv"] == ["dcmi", "power", "reading"]


def test_lan_password_from_a_file_never_on_the_command_line(
    fake: FakeIpmitool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FOOTPRINT_IPMI_PASSWORD", raising=False)
    monkeypatch.setenv("FOOTPRINT_IPMI_USERNAME", "monitor")
    password = tmp_path / "ipmi-password"
    password.write_text("Lan-s3cret\n")
    fake.scenario(user="monitor", password="Lan-s3cret")
    creds = BmcCredentials("FOOTPRINT_IPMI_USERNAME", "FOOTPRINT_IPMI_PASSWORD", password_file=str(password))
    src = IpmitoolDcmiSource(str(fake.path), host="10.0.0.7", credentials=creds)
    assert src.read().power_w == 1500.0
    argv = fake.calls()[0]["argv"]
    assert argv == [
        "-I", "lanplus", "-H", "10.0.0.7", "-L", "ADMINISTRATOR", "-U", "monitor", "-f", str(password),
        "dcmi", "power", "reading",
    ]  # fmt: skip
    assert "Lan-s3cret" not in " ".join(argv)
    assert fake.calls()[0]["env_password"] is False


def test_lan_password_from_the_environment_through_ipmi_password(
    fake: FakeIpmitool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOOTPRINT_IPMI_USERNAME", "monitor")
    monkeypatch.setenv("FOOTPRINT_IPMI_PASSWORD", "Env-s3cret")
    fake.scenario(user="monitor", password="Env-s3cret")
    creds = BmcCredentials("FOOTPRINT_IPMI_USERNAME", "FOOTPRINT_IPMI_PASSWORD")
    src = IpmitoolDcmiSource(str(fake.path), host="10.0.0.7", credentials=creds, privilege="USER")
    assert src.read().power_w == 1500.0
    call = fake.calls()[0]
    assert call["argv"][call["argv"].index("-L") + 1] == "USER"
    assert "-E" in call["argv"] and "Env-s3cret" not in " ".join(call["argv"])
    assert call["env_password"] is True
    assert "IPMI_PASSWORD" not in os.environ  # only the child gets it


def test_wrong_lan_password(fake: FakeIpmitool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOOTPRINT_IPMI_USERNAME", "monitor")
    monkeypatch.setenv("FOOTPRINT_IPMI_PASSWORD", "wrong-one")
    fake.scenario(user="monitor", password="Env-s3cret")
    creds = BmcCredentials("FOOTPRINT_IPMI_USERNAME", "FOOTPRINT_IPMI_PASSWORD")
    with pytest.raises(SourceReadError) as err:
        IpmitoolDcmiSource(str(fake.path), host="10.0.0.7", credentials=creds).read()
    assert err.value.kind == "no_session"
    assert "wrong-one" not in str(err.value)


@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        ("not_available", "not_available"),
        ("openbmc_deactivated", "not_available"),
        ("no_device", "no_device"),
        ("no_answer", "no_answer"),
        ("invalid_command", "not_supported"),
        ("not_dcmi", "not_supported"),
        ("garbage", "malformed"),
    ],
)
def test_failures_have_a_kind(fake: FakeIpmitool, mode: str, kind: str) -> None:
    fake.scenario(mode=mode)
    with pytest.raises(SourceReadError) as err:
        IpmitoolDcmiSource(str(fake.path)).read()
    assert err.value.kind == kind


def test_a_hanging_ipmitool_is_killed_at_the_timeout(fake: FakeIpmitool) -> None:
    fake.scenario(mode="hang")
    started = time.monotonic()
    with pytest.raises(SourceReadError) as err:
        IpmitoolDcmiSource(str(fake.path), timeout_s=1.0).read()
    assert err.value.kind == "timeout"
    assert time.monotonic() - started < 30  # the fake would hang for 60 s


def test_missing_ipmitool(tmp_path: Path) -> None:
    with pytest.raises(SourceReadError) as err:
        IpmitoolDcmiSource(str(tmp_path / "no-such-ipmitool")).read()
    assert err.value.kind == "not_found"
