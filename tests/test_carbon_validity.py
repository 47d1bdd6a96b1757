"""Which intensity is valid when: the data's own time, plausibility, and one emission-factor basis per chain.

The fakes answer in the real response shapes (shared/reference/carbon-apis.md) with what the real APIs
document and do: Electricity Maps' ``datetime`` is the start of the hour the value describes and it
marks gap-filled values ``isEstimated`` (with an ``estimationMethod``); it answers on the basis asked
for in ``emissionFactorType``; the GB API's running half hour has a forecast but no actual yet.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import requests
from carbon_servers import NOW, Clock, FakeApi, Reply, casdk_bylocation, em_latest, iso, uk_intensity

from exporter.carbon.config import parse_carbon_config
from exporter.carbon.service import CarbonService
from exporter.errors import ConfigError

EM_PATH = "/carbon-intensity/latest"
HOUR = 3600.0


@pytest.fixture(autouse=True)
def em_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_EM_TOKEN", "em-secret-123")


def em_entry(api: FakeApi, **extra: Any) -> dict[str, Any]:
    return {"type": "electricitymaps", "url": api.url, "token_env": "TEST_EM_TOKEN", "retries": 0, **extra}


def service(
    providers: list[dict[str, Any]], session: requests.Session, clock: Clock, **carbon: Any
) -> CarbonService:
    return CarbonService(
        parse_carbon_config({"zone": "DE", "providers": providers, **carbon}), clock, session
    )


def average(svc: CarbonService) -> Any:
    return next(i for i in svc.intensities() if i.signal == "average")


def state(svc: CarbonService, provider: str) -> Any:
    return next(p for p in svc.providers() if p.provider == provider)


# The data's own time


def test_age_comes_from_the_data_and_old_data_from_an_up_provider_falls_through(
    api: FakeApi, session: requests.Session
) -> None:
    clock = Clock()
    # A healthy API (HTTP 200, well-formed) serving a value whose hour began 5 hours ago.
    api.script(EM_PATH, Reply(body=em_latest(300, when=iso(NOW - 5 * HOUR))))
    svc = service([em_entry(api, refresh="1m"), {"type": "static", "grams_per_kwh": 350}], session, clock)
    svc.refresh_now()
    assert state(svc, "electricitymaps").up  # the provider answers...
    now = average(svc)
    # ...but its data is older than max_age (3 h): the chain uses the next provider.
    assert (now.provider, now.grams_per_kwh, now.age_s) == ("static", 350.0, 0.0)
    svc2 = service([em_entry(api)], session, clock, max_age="6h")
    svc2.refresh_now()
    kept = average(svc2)
    # With a longer max_age the old value is used, and its age says how old it really is.
    assert (kept.provider, kept.age_s, kept.observed_at) == ("electricitymaps", 5 * HOUR, NOW - 5 * HOUR)
    assert kept.year == "2026" and "Electricity Maps" in kept.source


def test_an_unchanged_value_confirmed_by_a_newer_hour_resets_its_age(
    api: FakeApi, session: requests.Session
) -> None:
    clock = Clock(NOW + 0.5 * HOUR)
    hour = NOW - 5 * 60  # the hour that began at 10:00
    api.script(EM_PATH, Reply(body=em_latest(300, when=iso(hour))))
    svc = service([em_entry(api, refresh="2s")], session, clock)
    ages = []
    for step in range(4):  # the same value, same hour, refreshed every 2 s: the data is that old
        clock.now = NOW + 0.5 * HOUR + 2 * step
        svc.refresh_now()
        ages.append(average(svc).age_s)
    assert ages == [0.5 * HOUR + 300 + 2 * k for k in range(4)]
    # The next hour is published with the very same value: the age starts again from its hour.
    api.script(EM_PATH, Reply(body=em_latest(300, when=iso(hour + HOUR))))
    clock.now = hour + HOUR + 12 * 60
    svc.refresh_now()
    now = average(svc)
    assert (now.grams_per_kwh, now.age_s, now.observed_at) == (300.0, 12 * 60, hour + HOUR)
    # Unchanged value: still one series, one segment (no spurious change in the history).
    assert svc.segments("average", clock.now - 10, clock.now) == [(10.0, 300.0)]


def test_a_value_without_a_time_is_as_old_as_the_last_refresh_that_confirmed_it(
    api: FakeApi, session: requests.Session
) -> None:
    clock = Clock()
    api.script(EM_PATH, Reply(body=em_latest(300, when=None)))
    svc = service([em_entry(api, refresh="2s")], session, clock)
    ages = []
    for step in range(5):
        clock.now = NOW + 2 * step
        svc.refresh_now()
        clock.now += 1.5
        ages.append(average(svc).age_s)
    # The measured bug was 5, 10 ... 35 s; each successful refresh confirms the value again.
    assert ages == [1.5] * 5
    assert average(svc).observed_at is None and average(svc).confirmed_at == NOW + 8
    # When the refreshes fail, the age grows from the last confirmation.
    api.script(EM_PATH, Reply(503, "down"))
    clock.now = NOW + 20
    svc.refresh_now()
    assert average(svc).age_s == 12.0 and not state(svc, "electricitymaps").up


def test_an_older_answer_never_replaces_newer_data(api: FakeApi, session: requests.Session) -> None:
    clock = Clock()
    api.script(
        EM_PATH,
        Reply(body=em_latest(300, when=iso(NOW - 300))),
        Reply(body=em_latest(500, when=iso(NOW - 300 - HOUR))),  # a stale cache answering late
    )
    svc = service([em_entry(api, refresh="1m")], session, clock)
    svc.refresh_now()
    clock.now += 60
    svc.refresh_now()
    assert len(api.hits(EM_PATH)) == 2
    now = average(svc)
    assert (now.grams_per_kwh, now.observed_at) == (300.0, NOW - 300)


def test_a_value_applies_from_its_datetime_not_before(api: FakeApi, session: requests.Session) -> None:
    clock = Clock()
    api.script(
        EM_PATH,
        Reply(body=em_latest(300, when=iso(NOW - 300))),
        Reply(body=em_latest(100, when=iso(NOW + 600))),  # published ahead: the period from 10:15
    )
    svc = service([em_entry(api, refresh="1m")], session, clock)
    svc.refresh_now()
    clock.now = NOW + 60
    svc.refresh_now()
    assert average(svc).grams_per_kwh == 300.0  # not yet
    clock.now = NOW + 600.4  # the sampler's next look, just after 10:15
    segments = svc.segments("average", NOW + 590, NOW + 600.4)
    assert segments == [(10.0, 300.0), (pytest.approx(0.4), 100.0)]
    assert average(svc).grams_per_kwh == 100.0 and average(svc).age_s == pytest.approx(0.4)


def test_estimated_and_measured_values_are_told_apart(api: FakeApi, session: requests.Session) -> None:
    clock = Clock()
    api.script(EM_PATH, Reply(body=em_latest(300, when=iso(NOW - 300), estimated=True)))
    svc = service([em_entry(api)], session, clock)
    svc.refresh_now()
    assert average(svc).estimated is True
    api.script(EM_PATH, Reply(body=em_latest(300, when=iso(NOW - 300), estimated=False)))
    svc = service([em_entry(api)], session, clock)
    svc.refresh_now()
    assert average(svc).estimated is False
    # GB: "actual" comes from metered generation; for the running half hour only a forecast exists.
    for actual, estimated in ((263, False), (None, True)):
        api.script("/intensity", Reply(body=uk_intensity(forecast=266, actual=actual)))
        uk = service(
            [{"type": "ukgrid", "url": api.url, "retries": 0, "forecast": False}],
            session,
            clock,
            zone="GB",
            basis="direct",
        )
        uk.refresh_now()
        assert (average(uk).estimated, average(uk).grams_per_kwh) == (estimated, actual or 266)
    # The embedded table's yearly average standing in for this hour is an estimate, and says so.
    fallback = service([], session, clock)
    assert (average(fallback).provider, average(fallback).estimated) == ("embedded", True)
    # A static figure says nothing about itself: neither flag is claimed.
    static = service([{"type": "static", "grams_per_kwh": 350}], session, clock)
    assert average(static).estimated is None and average(static).age_s == 0.0


# Plausibility


def test_an_implausible_value_is_refused_and_the_previous_good_value_kept(
    api: FakeApi, session: requests.Session
) -> None:
    clock = Clock()
    api.script(
        EM_PATH,
        Reply(body=em_latest(300, when=iso(NOW - 300))),
        Reply(body=em_latest(1e12, when=iso(NOW + 300))),  # the measured 1e12 g/kWh
    )
    svc = service([em_entry(api, refresh="1m"), {"type": "static", "grams_per_kwh": 350}], session, clock)
    svc.refresh_now()
    clock.now += 60
    svc.refresh_now()
    em = state(svc, "electricitymaps")
    assert not em.up and em.errors_total == {"implausible": 1}
    assert average(svc).grams_per_kwh == 300.0
    # 400 W for 6 s (the measured case) is charged at 300 g/kWh, not 1e12.
    from exporter.carbon.accounting import operational_grams

    grams = operational_grams(400 * 6, svc.segments("average", clock.now - 6, clock.now), 1.0)
    assert grams == pytest.approx(400 * 6 / 3.6e6 * 300)


def test_with_no_previous_value_the_next_provider_is_used_and_the_range_is_configurable(
    api: FakeApi, session: requests.Session
) -> None:
    clock = Clock()
    api.script(EM_PATH, Reply(body=em_latest(900, when=iso(NOW - 300))))
    chain = [em_entry(api), {"type": "static", "grams_per_kwh": 350}]
    svc = service(chain, session, clock, plausible={"max_grams_per_kwh": 800})
    svc.refresh_now()
    assert average(svc).provider == "static" and state(svc, "electricitymaps").errors_total == {
        "implausible": 1
    }
    default = service(chain, session, clock)  # 900 is within the default 0-2,000
    default.refresh_now()
    assert average(default).grams_per_kwh == 900.0
    # Negative values never parse at all (malformed), whatever the range.
    api.script(EM_PATH, Reply(body=em_latest(-5, when=iso(NOW - 300))))
    negative = service(chain, session, clock)
    negative.refresh_now()
    assert state(negative, "electricitymaps").errors_total == {"malformed": 1}


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"plausible": {"max_grams_per_kwh": 0}}, "carbon.plausible.max_grams_per_kwh"),
        ({"plausible": {"min_grams_per_kwh": -1}}, "carbon.plausible.min_grams_per_kwh"),
        ({"plausible": {"max": 10}}, "carbon.plausible.max"),
        ({"providers": [{"type": "static", "grams_per_kwh": 2500}]}, "carbon.providers[0].grams_per_kwh"),
        ({"basis": "combustion"}, "carbon.basis"),
        ({"marginal_basis": "x"}, "carbon.marginal_basis"),
        ({"zone": "DE", "basis": "direct"}, "carbon.basis"),  # no direct row for DE, no static last resort
        (
            {"providers": [{"type": "carbon_aware_sdk", "url": "http://x", "location": "l", "signal": "x"}]},
            "carbon.providers[0].signal",
        ),
        ({"providers": [{"type": "static", "grams_per_kwh": 1, "basis": "x"}]}, "carbon.providers[0].basis"),
        ({"providers": [{"type": "central"}]}, "carbon.providers[0].url"),
        (
            {"providers": [{"type": "central", "url": "http://c", "username_env": "U"}]},
            "carbon.providers[0].password_env",
        ),
        (
            {"providers": [{"type": "central", "url": "http://c", "forecast": True}]},
            "carbon.providers[0].forecast",
        ),
    ],
)
def test_validity_configuration_errors_name_the_key(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_carbon_config(raw)
    assert caught.value.key == key, caught.value


# One basis per chain


def test_a_mixed_basis_chain_skips_the_provider_on_the_other_basis(
    api: FakeApi, session: requests.Session, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    clock = Clock()
    api.script("/intensity", Reply(body=uk_intensity(actual=180)))
    api.script(EM_PATH, Reply(503, "down"))
    api.script("/emissions/bylocation", Reply(body=casdk_bylocation([(iso(NOW - 300), 240)])))
    chain = [
        em_entry(api),  # lifecycle, as the chain
        {"type": "ukgrid", "url": api.url, "retries": 0, "forecast": False},  # direct: never used here
        {"type": "carbon_aware_sdk", "url": api.url, "location": "eastus", "retries": 0, "forecast": False},
    ]
    svc = service(chain, session, clock, zone="GB")
    svc.refresh_now()
    # Electricity Maps fails: the chain falls to the SDK (lifecycle), not to the GB API (direct),
    # although the GB API is up and next in the configured order.
    now = average(svc)
    assert (now.provider, now.basis, now.grams_per_kwh) == ("carbon_aware_sdk", "lifecycle", 240.0)
    uk = state(svc, "ukgrid")
    assert not uk.up and uk.errors_total == {"basis": 1}
    assert not api.hits("/intensity")  # a skipped provider is never asked
    assert "ukgrid skipped" in caplog.text and "carbon.basis" in caplog.text
    # Everything failing, the last resort is the embedded row on the same (lifecycle) basis.
    api.script("/emissions/bylocation", Reply(500, "down"))
    clock.now += 3 * HOUR + 1
    svc.refresh_now()
    now = average(svc)
    assert (now.provider, now.basis, now.grams_per_kwh) == ("embedded", "lifecycle", 238.0)
    # The same chain on the direct basis uses the GB API and falls back to the direct row.
    direct = service(chain, session, Clock(), zone="GB", basis="direct")
    direct.refresh_now()
    assert (average(direct).provider, average(direct).basis) == ("ukgrid", "direct")
    # Electricity Maps follows the chain's basis (asked for direct) and is simply down here.
    assert state(direct, "electricitymaps").errors_total == {"http_5xx": 1}
    assert api.hits(EM_PATH)[-1].query["emissionFactorType"] == ["direct"]
    assert state(direct, "carbon_aware_sdk").errors_total == {"basis": 1}


def test_electricitymaps_is_asked_for_the_chain_basis_and_a_wrong_answer_refused(
    api: FakeApi, session: requests.Session
) -> None:
    clock = Clock()
    api.script(EM_PATH, Reply(body=em_latest(250, zone="GB", when=iso(NOW - 300), basis="direct")))
    svc = service([em_entry(api)], session, clock, zone="GB", basis="direct")
    svc.refresh_now()
    assert api.hits(EM_PATH)[-1].query["emissionFactorType"] == ["direct"]
    assert (average(svc).provider, average(svc).basis) == ("electricitymaps", "direct")
    # An answer on another basis than asked (a proxy dropping the parameter) is refused, not used.
    api.script(EM_PATH, Reply(body=em_latest(322, zone="GB", when=iso(NOW - 300), basis="lifecycle")))
    refused = service([em_entry(api)], session, clock, zone="GB", basis="direct")
    refused.refresh_now()
    assert state(refused, "electricitymaps").errors_total == {"basis": 1}
    assert (average(refused).provider, average(refused).grams_per_kwh) == ("embedded", 207.07)


def test_each_signal_has_its_own_basis_and_the_sdk_signal_is_configurable(
    api: FakeApi, session: requests.Session
) -> None:
    clock = Clock()
    api.script("/emissions/bylocation", Reply(body=casdk_bylocation([(iso(NOW - 300), 410)])))
    # The SDK in front of WattTime serves marginal (MOER) data: direct basis by default.
    sdk = {"type": "carbon_aware_sdk", "url": api.url, "location": "CAISO_NORTH", "signal": "marginal"}
    svc = service([sdk], session, clock)
    svc.refresh_now()
    marginal = next(i for i in svc.intensities() if i.signal == "marginal")
    assert (marginal.provider, marginal.basis, marginal.grams_per_kwh) == (
        "carbon_aware_sdk",
        "direct",
        410.0,
    )
    assert average(svc).provider == "embedded"  # never used for the average signal
    lifecycle_marginal = service([sdk], session, clock, marginal_basis="lifecycle")
    assert state(lifecycle_marginal, "carbon_aware_sdk").errors_total == {"basis": 1}


def test_direct_basis_without_a_table_row_needs_a_static_figure(session: requests.Session) -> None:
    svc = service(
        [{"type": "static", "grams_per_kwh": 330, "basis": "direct"}],
        session,
        Clock(),
        zone="DE",
        basis="direct",
    )
    assert (average(svc).provider, average(svc).basis, average(svc).grams_per_kwh) == (
        "static",
        "direct",
        330.0,
    )
    # A static figure stated on the other basis is skipped like any provider.
    other = service(
        [{"type": "static", "grams_per_kwh": 300, "basis": "lifecycle"}],
        session,
        Clock(),
        zone="GB",
        basis="direct",
    )
    assert average(other).provider == "embedded" and state(other, "static").errors_total == {"basis": 1}
