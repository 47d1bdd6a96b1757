"""Tests for exporter/carbon/service.py: fallback chain, max age, 429 pacing, history, forecasts."""

from __future__ import annotations

import calendar
import logging
import time
from typing import Any

import pytest
import requests
from carbon_servers import NOW, Clock, FakeApi, Reply, em_latest, iso, uk_fw24h, uk_intensity, wt_forecast

from exporter.carbon.accounting import operational_grams
from exporter.carbon.config import parse_carbon_config
from exporter.carbon.service import CarbonService

EM_PATH = "/carbon-intensity/latest"


@pytest.fixture(autouse=True)
def em_token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TEST_EM_TOKEN", "em-secret-123")
    return "em-secret-123"


def em_entry(api: FakeApi, **extra: Any) -> dict[str, Any]:
    return {
        "type": "electricitymaps",
        "url": api.url,
        "token_env": "TEST_EM_TOKEN",
        "retries": 0,
        "timeout": "300ms",
        **extra,
    }


def service(
    providers: list[dict[str, Any]], session: requests.Session, clock: Clock, **carbon: Any
) -> CarbonService:
    return CarbonService(
        parse_carbon_config({"zone": "DE", "providers": providers, **carbon}), clock, session
    )


def state(svc: CarbonService, provider: str) -> Any:
    return next(p for p in svc.providers() if p.provider == provider)


def average(svc: CarbonService) -> Any:
    return next(i for i in svc.intensities() if i.signal == "average")


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (Reply(401, {"message": "bad token"}), "auth"),
        (Reply(429, "", {"Retry-After": "60"}), "http_429"),
        (Reply(500, "oops"), "http_5xx"),
        (Reply(200, em_latest(), delay=1.0), "timeout"),
        (Reply(200, "<html>"), "malformed"),
        (Reply(200, {"zone": "DE", "datetime": "2026-05-21T10:00:00.000Z"}), "malformed"),
    ],
)
def test_failing_provider_falls_through_to_static(
    api: FakeApi, session: requests.Session, reply: Reply, kind: str
) -> None:
    api.script(EM_PATH, reply)
    svc = service([em_entry(api), {"type": "static", "grams_per_kwh": 350}], session, Clock())
    svc.refresh_now()
    em = state(svc, "electricitymaps")
    assert (em.up, em.errors_total, em.last_success_timestamp) == (False, {kind: 1}, None)
    now = average(svc)
    assert (now.provider, now.grams_per_kwh, now.zone, now.age_s) == ("static", 350.0, "DE", 0.0)
    assert svc.segments("average", NOW - 1, NOW) == [(1.0, 350.0)]
    assert state(svc, "static").up


def test_chain_ends_at_embedded_table(api: FakeApi, session: requests.Session) -> None:
    api.script(EM_PATH, Reply(503, "down"))
    svc = service([em_entry(api)], session, Clock())
    svc.refresh_now()
    now = average(svc)
    assert (now.provider, now.zone, now.grams_per_kwh, now.year) == ("embedded", "DE", 381.0, "2023")
    assert "Ember" in now.source
    assert now.age_s == pytest.approx(NOW - calendar.timegm((2024, 1, 1, 0, 0, 0, 0, 0, 0)))
    assert state(svc, "embedded").up and not state(svc, "electricitymaps").up
    assert not svc.has_marginal and svc.segments("marginal", NOW - 1, NOW) == []


def test_last_good_value_kept_until_its_data_is_max_age_old(api: FakeApi, session: requests.Session) -> None:
    clock = Clock()  # 10:05; the value describes the hour from 10:00
    api.script(EM_PATH, Reply(body=em_latest(300.5)), Reply(500, "down"))
    svc = service([em_entry(api, refresh="1m")], session, clock, max_age="20m")
    svc.refresh_now()
    assert (average(svc).provider, average(svc).grams_per_kwh) == ("electricitymaps", 300.5)
    clock.now += 9 * 60
    svc.refresh_now()
    em = state(svc, "electricitymaps")
    assert not em.up and em.errors_total == {"http_5xx": 1}
    now = average(svc)
    # The age counts from the data's own 10:00, not from the fetch at 10:05.
    assert (now.provider, now.grams_per_kwh, now.age_s) == ("electricitymaps", 300.5, pytest.approx(840.0))
    clock.now = NOW + 15 * 60 + 1  # 10:20:01: the 10:00 value is now more than 20 minutes old
    now = average(svc)
    assert (now.provider, now.grams_per_kwh) == ("embedded", 381.0)
    # The history says what was in use when: 300.5 up to the expiry noticed at +901 s, then 381.
    assert svc.segments("average", NOW + 890, NOW + 910) == [(11.0, 300.5), (9.0, 381.0)]


def test_retry_after_is_honoured(api: FakeApi, session: requests.Session) -> None:
    clock = Clock()
    api.script(EM_PATH, Reply(429, "", {"Retry-After": "120"}), Reply(body=em_latest(250)))
    svc = service([em_entry(api, refresh="30s")], session, clock)
    svc.refresh_now()
    assert len(api.hits(EM_PATH)) == 1
    for offset in (30, 60, 119):  # the provider is due again, but Retry-After forbids calling
        clock.now = NOW + offset
        svc.refresh_now()
        assert len(api.hits(EM_PATH)) == 1, offset
    clock.now = NOW + 120
    svc.refresh_now()
    assert len(api.hits(EM_PATH)) == 2
    assert state(svc, "electricitymaps").up and average(svc).grams_per_kwh == 250


def test_failed_provider_retried_sooner_than_refresh_and_ttl_respected(
    api: FakeApi, session: requests.Session
) -> None:
    clock = Clock()
    api.script(EM_PATH, Reply(500, "down"), Reply(body=em_latest(200)), Reply(body=em_latest(210)))
    svc = service([em_entry(api, refresh="5m")], session, clock)
    svc.refresh_now()
    clock.now += 10  # first retry after a failure comes after 10 s, not the 5 min refresh
    svc.refresh_now()
    assert len(api.hits(EM_PATH)) == 2 and average(svc).grams_per_kwh == 200
    clock.now += 299
    svc.refresh_now()
    assert len(api.hits(EM_PATH)) == 2  # cached within the TTL
    clock.now += 1
    svc.refresh_now()
    assert len(api.hits(EM_PATH)) == 3 and average(svc).grams_per_kwh == 210


def test_intensity_step_mid_run_integrates_exactly(api: FakeApi, session: requests.Session) -> None:
    """Constant 400 W for 90 s; intensity 100 g/kWh until t=45.5 s, then 500 g/kWh."""
    clock = Clock()
    api.script(EM_PATH, Reply(body=em_latest(100)), Reply(body=em_latest(500)))
    svc = service([em_entry(api, refresh="45s")], session, clock, pue=1.2)
    svc.refresh_now()
    power_w, total = 400.0, 0.0
    for tick in range(90):
        t0, t1 = NOW + tick, NOW + tick + 1
        if tick == 45:
            clock.now = t0 + 0.5
            svc.refresh_now()  # the new value arrives half-way through this interval
        clock.now = t1
        total += operational_grams(power_w * 1.0, svc.segments("average", t0, t1), svc.pue)
    exact = power_w * (45.5 * 100 + 44.5 * 500) / 3.6e6 * 1.2
    assert total == pytest.approx(exact, rel=0.005)
    final_only = power_w * 90 * 500 / 3.6e6 * 1.2
    assert abs(total - final_only) / final_only > 0.2
    assert svc.segments("average", NOW + 45, NOW + 46) == [(0.5, 100.0), (0.5, 500.0)]


def test_marginal_signal_from_watttime_with_its_own_fallback(
    api: FakeApi, session: requests.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_WT_USER", "alice")
    monkeypatch.setenv("TEST_WT_PASSWORD", "pw")
    api.script("/login", Reply(body={"token": "jwt"}))
    api.script("/v3/forecast", Reply(body=wt_forecast([("2026-05-21T10:05:00+00:00", 1000)])))
    wt = {
        "type": "watttime",
        "url": api.url,
        "region": "CAISO_NORTH",
        "username_env": "TEST_WT_USER",
        "password_env": "TEST_WT_PASSWORD",
        "retries": 0,
        "forecast": False,
    }
    svc = service([wt, {"type": "static", "grams_per_kwh": 200}], session, Clock())
    svc.refresh_now()
    assert svc.has_marginal
    marginal = next(i for i in svc.intensities() if i.signal == "marginal")
    assert (marginal.provider, marginal.zone, marginal.grams_per_kwh) == (
        "watttime",
        "CAISO_NORTH",
        pytest.approx(453.59237),
    )
    # No marginal value existed before the first refresh at NOW: nothing is invented for that time.
    assert svc.segments("marginal", NOW - 2, NOW + 2) == [(2.0, pytest.approx(453.59237))]
    # The static average provider never stands in for the marginal signal.
    api.script("/v3/forecast", Reply(500, "down"))
    clock_svc = service([wt, {"type": "static", "grams_per_kwh": 200}], session, Clock())
    clock_svc.refresh_now()
    assert clock_svc.segments("marginal", NOW - 1, NOW) == []
    assert [i.signal for i in clock_svc.intensities()] == ["average"]
    static_marginal = service(
        [{"type": "static", "grams_per_kwh": 600, "signal": "marginal"}], session, Clock()
    )
    assert static_marginal.segments("marginal", NOW - 1, NOW) == [(1.0, 600.0)]


def test_forecast_minimum_over_next_24h(api: FakeApi, session: requests.Session) -> None:
    clock = Clock()
    api.script("/intensity", Reply(body=uk_intensity()))
    api.script(
        "/intensity/*",
        Reply(
            body=uk_fw24h(
                [
                    ("2026-05-21T09:30Z", "2026-05-21T10:00Z", 20),  # already over: ignored
                    ("2026-05-21T10:00Z", "2026-05-21T10:30Z", 200),
                    ("2026-05-21T13:00Z", "2026-05-21T13:30Z", 95.5),
                    ("2026-05-21T14:00Z", "2026-05-21T14:30Z", 95.5),
                    ("2026-05-22T11:00Z", "2026-05-22T11:30Z", 10),  # beyond 24 h: ignored
                ]
            )
        ),
    )
    # The GB API serves direct (generation-only) factors: it is used only by a direct-basis chain.
    svc = service(
        [{"type": "ukgrid", "url": api.url, "retries": 0}], session, clock, zone="GB", basis="direct"
    )
    svc.refresh_now()
    (forecast,) = svc.forecasts()
    assert (forecast.provider, forecast.zone, forecast.signal) == ("ukgrid", "GB", "average")
    assert forecast.min_grams_per_kwh == 95.5
    assert forecast.min_timestamp_s == calendar.timegm((2026, 5, 21, 13, 0, 0, 0, 0, 0))
    assert average(svc).grams_per_kwh == 263


def test_background_thread_refreshes_and_stops(api: FakeApi, session: requests.Session) -> None:
    api.script(EM_PATH, Reply(body=em_latest(123.5, when=iso(time.time() - 600))))
    svc = CarbonService(parse_carbon_config({"zone": "DE", "providers": [em_entry(api)]}), session=session)
    svc.start()
    try:
        deadline = time.monotonic() + 10
        while average(svc).provider != "electricitymaps" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert average(svc).grams_per_kwh == 123.5 and state(svc, "electricitymaps").up
    finally:
        svc.stop()
    assert svc._threads == []


def test_secrets_never_logged(
    api: FakeApi, session: requests.Session, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_WT_USER", "wt-user-name")
    monkeypatch.setenv("TEST_WT_PASSWORD", "wt-password-456")
    caplog.set_level(logging.DEBUG)
    api.script(EM_PATH, Reply(401, {"message": "bad"}), Reply(body=em_latest(1)))
    api.script("/login", Reply(body={"token": "jwt-secret-789"}))
    api.script("/v3/forecast", Reply(403, "no"), Reply(body=wt_forecast([("2026-05-21T10:05:00+00:00", 1)])))
    wt = {
        "type": "watttime",
        "url": api.url,
        "region": "CAISO_NORTH",
        "username_env": "TEST_WT_USER",
        "password_env": "TEST_WT_PASSWORD",
        "retries": 0,
    }
    clock = Clock()
    svc = service([em_entry(api), wt], session, clock)
    for _ in range(3):
        svc.refresh_now()
        clock.now += 60
    assert "electricitymaps" in caplog.text and "127.0.0.1" in caplog.text
    for secret in (
        "em-secret-123",
        "wt-user-name",
        "wt-password-456",
        "jwt-secret-789",
        "auth-token",
        "Bearer",
    ):
        assert secret not in caplog.text


def test_zero_length_interval_and_interval_before_start(session: requests.Session) -> None:
    clock = Clock()
    svc = service([{"type": "static", "grams_per_kwh": 420.5}], session, clock)
    assert svc.segments("average", NOW, NOW) == [(0.0, 420.5)]
    # The first value in use also covers any time before the service started.
    assert svc.segments("average", NOW - 10, NOW - 5) == [(5.0, 420.5)]
    assert svc.pue == 1.0 and svc.wue_litres_per_kwh is None
    with_water = service([], session, clock, pue=1.3, wue=0.5)
    assert (with_water.pue, with_water.wue_litres_per_kwh) == (1.3, 0.5)
