"""One fetch per zone for a fleet: nodes take the intensity from a central exporter, age and all."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests
from carbon_servers import NOW, Clock, FakeApi, Reply, em_latest, iso, wait_until, wt_forecast

from exporter.carbon import central
from exporter.carbon.config import parse_carbon_config
from exporter.carbon.service import CarbonService
from tests.exporter_proc import ExporterProcess, start_exporter
from tests.metrics_text import parse, select

EM_PATH = "/carbon-intensity/latest"
HOUR = 3600.0


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_EM_TOKEN", "em-secret-123")
    monkeypatch.setenv("TEST_WT_USER", "alice")
    monkeypatch.setenv("TEST_WT_PASSWORD", "pw")


def central_service(api: FakeApi, session: requests.Session, clock: Clock, **carbon: Any) -> CarbonService:
    providers = [
        {"type": "electricitymaps", "url": api.url, "token_env": "TEST_EM_TOKEN", "retries": 0},
        {
            "type": "watttime",
            "url": api.url,
            "region": "CAISO_NORTH",
            "username_env": "TEST_WT_USER",
            "password_env": "TEST_WT_PASSWORD",
            "retries": 0,
            "forecast": False,
        },
    ]
    config = parse_carbon_config({"zone": "DE", "providers": providers, **carbon})
    return CarbonService(config, clock, session)


def node_service(relay: FakeApi, session: requests.Session, clock: Clock, **carbon: Any) -> CarbonService:
    config = parse_carbon_config(
        {"zone": "DE", "providers": [{"type": "central", "url": relay.url, "retries": 0}], **carbon}
    )
    return CarbonService(config, clock, session)


def relay_of(relay: FakeApi, svc: CarbonService, now: float) -> dict[str, Any]:
    """What the central exporter serves at PATH, scripted onto a fake so the node can be tested alone."""
    doc = central.payload(svc.zone, svc.intensities(), now)
    relay.script(central.PATH, Reply(body=doc))
    return doc


def by_signal(svc: CarbonService) -> dict[str, Any]:
    return {i.signal: i for i in svc.intensities()}


def state(svc: CarbonService, provider: str) -> Any:
    return next(p for p in svc.providers() if p.provider == provider)


def test_the_relay_carries_data_time_basis_signal_provider_and_estimate(
    api: FakeApi, session: requests.Session
) -> None:
    relay = FakeApi()
    try:
        clock = Clock()
        api.script(EM_PATH, Reply(body=em_latest(322, when=iso(NOW - 1800), estimated=True)))
        api.script("/login", Reply(body={"token": "jwt"}))
        api.script("/v3/forecast", Reply(body=wt_forecast([("2026-05-21T10:05:00+00:00", 1000)])))
        hub = central_service(api, session, clock)
        hub.refresh_now()
        doc = relay_of(relay, hub, clock.now)
        assert doc["version"] == 1 and doc["zone"] == "DE"
        clock.now += 600  # the node fetches 10 minutes later
        node = node_service(relay, session, clock)
        node.refresh_now()
        got = by_signal(node)
        average, marginal = got["average"], got["marginal"]
        # Not laundered: the age counts from Electricity Maps' own datetime, 40 minutes ago, not from
        # the node's fetch a moment ago; origin, basis, signal and the estimate flag come through.
        assert (average.provider, average.via, average.basis, average.grams_per_kwh) == (
            "electricitymaps",
            "central",
            "lifecycle",
            322.0,
        )
        assert (average.observed_at, average.age_s, average.estimated) == (NOW - 1800, 2400.0, True)
        assert average.source == hub.intensities()[0].source and average.year == "2026"
        assert (marginal.provider, marginal.basis, marginal.via) == ("watttime", "direct", "central")
        assert marginal.grams_per_kwh == pytest.approx(453.59237)
        assert state(node, "central").up and not state(node, "central").errors_total
        # The node never talks to the upstream APIs.
        assert len(api.hits(EM_PATH)) == 1
    finally:
        relay.close()


def test_old_data_at_the_central_is_old_at_the_node(api: FakeApi, session: requests.Session) -> None:
    relay = FakeApi()
    try:
        clock = Clock()
        api.script(EM_PATH, Reply(body=em_latest(322, when=iso(NOW - 2.5 * HOUR))))
        hub = central_service(api, session, clock, max_age="6h")
        hub.refresh_now()
        relay_of(relay, hub, clock.now)
        node = node_service(relay, session, clock)  # the node's own max_age: 3 h
        node.refresh_now()
        assert by_signal(node)["average"].age_s == 2.5 * HOUR
        clock.now += HOUR  # 3.5 h old now: past the node's max_age, however fresh the relay is
        relay_of(relay, hub, clock.now)
        node.refresh_now()
        assert state(node, "central").up
        average = by_signal(node)["average"]
        assert (average.provider, average.via) == ("embedded", "")
    finally:
        relay.close()


def test_values_without_a_data_time_carry_their_confirmation_time(session: requests.Session) -> None:
    relay = FakeApi()
    try:
        clock = Clock()
        hub = CarbonService(
            parse_carbon_config({"zone": "DE", "providers": [{"type": "static", "grams_per_kwh": 350}]}),
            clock,
            session,
        )
        doc = relay_of(relay, hub, clock.now)
        (entry,) = doc["intensities"]
        assert entry["datetime"] is None and entry["confirmed_at"] is None  # a timeless figure
        node = node_service(relay, session, clock)
        clock.now += 3 * HOUR + 1
        node.refresh_now()
        average = by_signal(node)["average"]
        assert (average.provider, average.via, average.age_s) == ("static", "central", 0.0)
        # A value the central holds without a time is as old as the central's last confirmation.
        doc["intensities"] = [{**entry, "provider": "electricitymaps", "confirmed_at": iso(clock.now - 90)}]
        relay.script(central.PATH, Reply(body=doc))
        node2 = node_service(relay, session, clock)
        node2.refresh_now()
        assert by_signal(node2)["average"].age_s == 90.0
    finally:
        relay.close()


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"zone": "FR"}, "malformed"),
        ({"version": 2}, "malformed"),
        ({"intensities": []}, "malformed"),
        (
            {
                "intensities": [
                    {"signal": "average", "basis": "direct", "provider": "ukgrid", "grams_per_kwh": 200}
                ]
            },
            "basis",
        ),
        (
            {
                "intensities": [
                    {"signal": "average", "basis": "lifecycle", "provider": "x", "grams_per_kwh": 1e12}
                ]
            },
            "implausible",
        ),
        (
            {"intensities": [{"signal": "avg", "basis": "lifecycle", "provider": "x", "grams_per_kwh": 1}]},
            "malformed",
        ),
    ],
)
def test_a_bad_relay_answer_is_refused_and_counted(
    session: requests.Session, change: dict[str, Any], kind: str
) -> None:
    relay = FakeApi()
    try:
        doc = {"version": 1, "zone": "DE", "generated_at": iso(NOW), "intensities": []}
        relay.script(central.PATH, Reply(body={**doc, **change}))
        node = node_service(relay, session, Clock())
        node.refresh_now()
        assert not state(node, "central").up and state(node, "central").errors_total == {kind: 1}
        assert by_signal(node)["average"].provider == "embedded"
    finally:
        relay.close()


def test_basic_auth_to_the_central_instance(
    session: requests.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_USER", "fleet")
    monkeypatch.setenv("RELAY_PASSWORD", "s3cret")
    relay = FakeApi()
    try:
        doc = {"version": 1, "zone": "DE", "generated_at": iso(NOW), "intensities": []}
        relay.script(central.PATH, Reply(body=doc))
        config = parse_carbon_config(
            {
                "zone": "DE",
                "providers": [
                    {
                        "type": "central",
                        "url": relay.url,
                        "username_env": "RELAY_USER",
                        "password_env": "RELAY_PASSWORD",
                    }
                ],
            }
        )
        CarbonService(config, Clock(), session).refresh_now()
        assert relay.hits(central.PATH)[0].basic_auth == ("fleet", "s3cret")
    finally:
        relay.close()


# The fleet: real exporters, one upstream


def em_calls_by_token(api: FakeApi) -> dict[str, int]:
    counts: dict[str, int] = {}
    for seen in api.hits(EM_PATH):
        token = seen.headers.get("auth-token", "")
        counts[token] = counts.get(token, 0) + 1
    return counts


def relayed(exp: ExporterProcess) -> dict[Any, float]:
    samples = parse(exp.metrics())
    info = select(samples, "footprint_carbon_intensity_info", provider="electricitymaps", via="central")
    return samples if info else {}


@pytest.mark.integration
def test_three_nodes_behind_one_central_exporter_make_no_upstream_calls(api: FakeApi, tmp_path: Path) -> None:
    data_time = time.time() - 600  # the hour's value, published 10 minutes ago
    api.script(EM_PATH, Reply(body=em_latest(322, when=iso(data_time))))
    em = f"""    - type: electricitymaps
      url: {api.url}
      token_env: EM_TOKEN
      refresh: 2s
      retries: 0
"""
    hub_yml = tmp_path / "central.yml"
    hub_yml.write_text(f"carbon:\n  zone: DE\n  providers:\n{em}")
    procs: list[ExporterProcess] = []
    try:
        hub = start_exporter(
            ["--source.gpu=none", "--source.cpu=none", f"--config.file={hub_yml}"],
            env={"EM_TOKEN": "central"},
        )
        procs.append(hub)
        node_yml = tmp_path / "node.yml"
        relay = f"    - type: central\n      url: {hub.url}\n      refresh: 1s\n"
        node_yml.write_text(f"carbon:\n  zone: DE\n  providers:\n{relay}")
        # Three nodes behind the central instance (no token at all), and for comparison three nodes
        # that each call the API themselves, as every node did before.
        nodes = [
            start_exporter(["--source.gpu=simulated", "--source.cpu=none", f"--config.file={node_yml}"])
            for _ in range(3)
        ]
        procs += nodes
        direct = []
        for k in range(3):
            direct.append(
                start_exporter(
                    ["--source.gpu=none", "--source.cpu=none", f"--config.file={hub_yml}"],
                    env={"EM_TOKEN": f"direct-{k}"},
                )
            )
        procs += direct
        for node in nodes:
            samples = wait_until(lambda node=node: relayed(node))
            # The value as the central has it: origin provider, basis, and the data's own time.
            assert select(
                samples,
                "footprint_grid_carbon_intensity_grams_per_kwh",
                provider="electricitymaps",
                basis="lifecycle",
                signal="average",
                zone="DE",
            )
            stamp = select(
                samples, "footprint_carbon_intensity_timestamp_seconds", provider="electricitymaps"
            )
            assert list(stamp.values()) == [pytest.approx(int(data_time), abs=1)]
            age = select(samples, "footprint_carbon_intensity_age_seconds", provider="electricitymaps")
            assert 590 < next(iter(age.values())) < 900  # from the data, not from the relay's fetch
            assert select(samples, "footprint_carbon_provider_up", provider="central") == {
                frozenset({("provider", "central")}): 1.0
            }
            assert sum(select(samples, "footprint_gpu_emissions_grams_total").values()) > 0
        wait_until(lambda: all(f"direct-{k}" in em_calls_by_token(api) for k in range(3)))
        before = em_calls_by_token(api)
        time.sleep(12.0)
        after = em_calls_by_token(api)
    finally:
        for proc in procs:
            proc.stop()
    calls = {token: after.get(token, 0) - before.get(token, 0) for token in after}
    # Every upstream call carries a known token: the nodes behind the central made none.
    assert set(after) == {"central", "direct-0", "direct-1", "direct-2"}
    with_central = calls["central"]
    without = [calls[f"direct-{k}"] for k in range(3)]
    print(f"\nupstream calls in 12 s: 3 nodes via central {with_central}; 3 nodes direct {without}")
    # The central instance calls as often as one node alone would (phase alignment: +-1) ...
    assert with_central >= 3 and all(abs(with_central - n) <= 1 for n in without)
    # ... so three nodes behind it make a third of the calls three direct nodes make.
    assert sum(without) >= 3 * with_central - 3
