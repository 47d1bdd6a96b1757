"""Redfish node source against a fake BMC on loopback HTTPS with the real resource shapes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.sources import SourceReadError
from exporter.sources.bmc_credentials import BmcCredentials
from exporter.sources.redfish import JOULES_PER_KWH, RedfishClient, RedfishNodeSource
from tests.fake_redfish import (
    FakeBmc,
    Fault,
    Profile,
    dell_legacy,
    dmtf_modern,
    hgx,
    hpe_trailing_slash,
    psu_only,
)

CREDS = BmcCredentials("FOOTPRINT_REDFISH_USERNAME", "FOOTPRINT_REDFISH_PASSWORD")


@pytest.fixture
def bmc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBmc]:
    monkeypatch.setenv("FOOTPRINT_REDFISH_USERNAME", "monitor")
    monkeypatch.setenv("FOOTPRINT_REDFISH_PASSWORD", "s3cret-Pw")
    fake = FakeBmc(tmp_path, Profile(base_w=1800.0))
    yield fake
    fake.close()


def source(bmc: FakeBmc, chassis: tuple[str, ...] = (), **kwargs: object) -> RedfishNodeSource:
    options: dict[str, object] = {"ca_file": bmc.ca_file, "timeout_s": 2.0}
    options.update(kwargs)
    return RedfishNodeSource(RedfishClient(bmc.url, CREDS, **options), chassis)  # type: ignore[arg-type]


def test_legacy_power_control_counts_once(bmc: FakeBmc) -> None:
    # PowerControl is the chassis total: neither its two supplies' input nor the contained enclosure's
    # own Power resource is added to it.
    dell_legacy(bmc)
    src = source(bmc)
    reading = src.read()
    assert reading.power_w == 1800.0
    assert reading.energy_j is None
    assert reading.parts == ("System.Embedded.1:power:Power/PowerControl",)
    src.close()


def test_modern_schema_environment_power_and_chassis_energy_sensor(bmc: FakeBmc) -> None:
    # EnvironmentMetrics.PowerWatts for power; the chassis-level TotalEnergy sensor for energy, not the
    # per-supply energy sensors, not the deprecated Power resource served beside it.
    dmtf_modern(bmc)
    src = source(bmc)
    reading = src.read()
    assert reading.power_w == 1800.0
    assert reading.energy_j == pytest.approx(bmc.kwh() * JOULES_PER_KWH, abs=3600.0)
    assert reading.parts == ("1U:power:EnvironmentMetrics", "1U:energy:Sensor")
    before = len(bmc.hits("GET"))
    src.read()
    polled = [s.path for s in bmc.hits("GET")[before:]]
    assert polled == [
        "/redfish/v1/Chassis/1U/EnvironmentMetrics",
        "/redfish/v1/Chassis/1U/Sensors/TotalEnergy",
    ]
    src.close()


def test_energy_in_environment_metrics_is_one_request_per_poll(bmc: FakeBmc) -> None:
    dmtf_modern(bmc, energy_in_environment=True)
    src = source(bmc)
    first = src.read()
    assert first.parts == ("1U:power:EnvironmentMetrics", "1U:energy:EnvironmentMetrics/EnergykWh")
    before = len(bmc.hits("GET"))
    src.read()
    assert [s.path for s in bmc.hits("GET")[before:]] == ["/redfish/v1/Chassis/1U/EnvironmentMetrics"]
    src.close()


def test_power_supplies_summed_once_and_absent_bay_skipped(bmc: FakeBmc) -> None:
    psu_only(bmc)
    src = source(bmc)
    reading = src.read()
    # 0.6 and 0.4 of 1800 W; the absent third bay has no Metrics and adds nothing.
    assert reading.power_w == 1080.0 + 720.0
    assert reading.parts == ("1:power:PowerSubsystem/PowerSupplies",)
    src.close()


def test_trailing_slash_links(bmc: FakeBmc) -> None:
    hpe_trailing_slash(bmc)
    src = source(bmc)
    assert src.read().power_w == 1800.0
    src.close()


def test_hgx_baseboard_and_contained_gpu_left_out_across_pages(bmc: FakeBmc) -> None:
    hgx(bmc)
    src = source(bmc)
    reading = src.read()
    assert reading.power_w == 1800.0  # not + 0.7 (HGX hot-swap controllers) + 0.09 (a GPU)
    assert reading.parts == ("BMC_0:power:Power/PowerControl",)
    assert bmc.hits("GET", "/redfish/v1/Chassis?$skip=2")  # the second page was followed
    src.close()


def test_named_chassis_override(bmc: FakeBmc) -> None:
    hgx(bmc)
    src = source(bmc, chassis=("HGX_GPU_SXM_1",))
    reading = src.read()
    assert reading.power_w == round(1800 * 0.09)
    assert reading.energy_j is not None
    assert reading.parts == (
        "HGX_GPU_SXM_1:power:EnvironmentMetrics",
        "HGX_GPU_SXM_1:energy:EnvironmentMetrics/EnergyJoules",
    )
    src.close()
    with pytest.raises(SourceReadError) as err:
        source(bmc, chassis=("Nope",)).read()
    assert err.value.kind == "no_reading"
    assert "Nope" in str(err.value)


def test_session_login_once_token_on_every_request_and_logout(bmc: FakeBmc) -> None:
    dell_legacy(bmc)
    src = source(bmc)
    for _ in range(3):
        src.read()
    assert bmc.logins == 1
    gets = [s for s in bmc.hits("GET") if s.path != "/redfish/v1"]
    assert gets and all("X-Auth-Token" in s.headers and "Authorization" not in s.headers for s in gets)
    posted = bmc.hits("POST", "/redfish/v1/SessionService/Sessions")
    assert len(posted) == 1
    assert len(bmc.sessions) == 1
    session_path = next(iter(bmc.sessions.values()))
    src.close()
    assert bmc.sessions == {}
    assert [s.path for s in bmc.hits("DELETE")] == [session_path]


def test_expired_session_logs_in_again(bmc: FakeBmc) -> None:
    dell_legacy(bmc)
    src = source(bmc)
    src.read()
    bmc.expire_sessions()
    assert src.read().power_w == 1800.0
    assert bmc.logins == 2
    src.close()


def test_wrong_password_is_an_auth_error_without_the_secret(
    bmc: FakeBmc, monkeypatch: pytest.MonkeyPatch
) -> None:
    dell_legacy(bmc)
    monkeypatch.setenv("FOOTPRINT_REDFISH_PASSWORD", "wrong-Secret-42")
    with pytest.raises(SourceReadError) as err:
        source(bmc).read()
    assert err.value.kind == "auth"
    assert "wrong-Secret-42" not in str(err.value)


def test_basic_auth(bmc: FakeBmc) -> None:
    dell_legacy(bmc)
    src = source(bmc, auth="basic")
    assert src.read().power_w == 1800.0
    assert bmc.logins == 0
    gets = [s for s in bmc.hits("GET") if s.path != "/redfish/v1"]
    assert all(s.headers.get("Authorization", "").startswith("Basic ") for s in gets)
    src.close()


def test_credentials_from_files_read_at_each_login(
    bmc: FakeBmc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dell_legacy(bmc)
    monkeypatch.delenv("FOOTPRINT_REDFISH_USERNAME")
    monkeypatch.delenv("FOOTPRINT_REDFISH_PASSWORD")
    user, password = tmp_path / "user", tmp_path / "password"
    user.write_text("monitor\n")
    password.write_text("old-password\n")
    creds = BmcCredentials(
        "FOOTPRINT_REDFISH_USERNAME", "FOOTPRINT_REDFISH_PASSWORD", str(user), str(password)
    )
    src = RedfishNodeSource(RedfishClient(bmc.url, creds, ca_file=bmc.ca_file, timeout_s=2.0))
    with pytest.raises(SourceReadError) as err:
        src.read()
    assert err.value.kind == "auth"
    password.write_text("s3cret-Pw\n")  # rotated: taken at the next login, no restart
    assert src.read().power_w == 1800.0
    src.close()


def test_missing_credentials_name_the_variable(bmc: FakeBmc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FOOTPRINT_REDFISH_PASSWORD")
    assert CREDS.problem() == "no password: set FOOTPRINT_REDFISH_PASSWORD or give a password file"


def test_503_with_retry_after(bmc: FakeBmc) -> None:
    dell_legacy(bmc)
    src = source(bmc)
    src.read()
    bmc.fault(
        "/redfish/v1/Chassis/System.Embedded.1/Power",
        Fault(status=503, headers={"Retry-After": "30"}, times=1),
    )
    with pytest.raises(SourceReadError) as err:
        src.read()
    assert (err.value.kind, err.value.retry_after_s) == ("http_5xx", 30.0)
    assert src.read().power_w == 1800.0
    src.close()


def test_slow_answer_times_out_within_the_deadline(bmc: FakeBmc) -> None:
    dell_legacy(bmc)
    src = source(bmc, timeout_s=0.5)
    src.read()
    bmc.fault("/redfish/v1/Chassis/System.Embedded.1/Power", Fault(delay_s=3.0, times=1))
    started = time.monotonic()
    with pytest.raises(SourceReadError) as err:
        src.read()
    assert err.value.kind == "timeout"
    assert time.monotonic() - started < 2.9  # the answer would take 3 s
    src.close()


def test_slow_drip_body_is_cut_at_the_deadline(bmc: FakeBmc) -> None:
    # Each byte arrives well within the socket read timeout, the whole body far beyond the deadline.
    dell_legacy(bmc)
    src = source(bmc, timeout_s=0.8)
    src.read()
    bmc.fault("/redfish/v1/Chassis/System.Embedded.1/Power", Fault(drip_s=0.05, times=1))
    started = time.monotonic()
    with pytest.raises(SourceReadError) as err:
        src.read()
    assert err.value.kind == "timeout"
    assert time.monotonic() - started < 10.0  # the whole body would take about a minute
    src.close()


def test_malformed_json_fails_the_read_and_rediscovers(bmc: FakeBmc) -> None:
    dell_legacy(bmc)
    src = source(bmc)
    src.read()
    bmc.fault(
        "/redfish/v1/Chassis/System.Embedded.1/Power", Fault(body=b'{"PowerControl": [{"PowerCons', times=1)
    )
    with pytest.raises(SourceReadError) as err:
        src.read()
    assert err.value.kind == "malformed"
    assert src.plans is None  # the next read walks the service again
    chassis_reads = len(bmc.hits("GET", "/redfish/v1/Chassis"))
    assert src.read().power_w == 1800.0
    assert len(bmc.hits("GET", "/redfish/v1/Chassis")) == chassis_reads + 1


def test_json_of_the_wrong_shape(bmc: FakeBmc) -> None:
    dell_legacy(bmc)
    src = source(bmc)
    src.read()
    bmc.fault(
        "/redfish/v1/Chassis/System.Embedded.1/Power",
        Fault(body=b'{"PowerControl": [{"PowerConsumedWatts": "lots"}]}', times=1),
    )
    with pytest.raises(SourceReadError) as err:
        src.read()
    assert err.value.kind == "no_reading"


def test_tls_verified_against_the_ca_file_or_explicitly_not(bmc: FakeBmc) -> None:
    dell_legacy(bmc)
    unverified = RedfishNodeSource(RedfishClient(bmc.url, CREDS, timeout_s=2.0))
    with pytest.raises(SourceReadError) as err:
        unverified.read()  # the test CA is not in the system's trust store
    assert err.value.kind == "tls"
    insecure = RedfishNodeSource(RedfishClient(bmc.url, CREDS, insecure=True, timeout_s=2.0))
    assert insecure.read().power_w == 1800.0
    insecure.close()


def test_unreachable_bmc_is_a_connection_error(bmc: FakeBmc) -> None:
    dell_legacy(bmc)
    url = bmc.url
    bmc.close()
    src = RedfishNodeSource(RedfishClient(url, CREDS, ca_file=bmc.ca_file, timeout_s=1.0))
    with pytest.raises(SourceReadError) as err:
        src.read()
    assert err.value.kind == "connection"


def test_links_to_another_host_are_not_followed(bmc: FakeBmc) -> None:
    # A power supply links its PDU outlet on another host (public-rackmount1 Bay1.Links.Outlet): a chassis
    # whose Power link points off the BMC is not read with our credentials.
    bmc.chassis_collection("1")
    bmc.add(
        "/redfish/v1/Chassis/1", {"Id": "1", "Power": {"@odata.id": "https://pdu.example/redfish/v1/Power"}}
    )
    with pytest.raises(SourceReadError) as err:
        source(bmc).read()
    assert err.value.kind == "no_reading"
    assert all("pdu.example" not in s.path for s in bmc.requests)
