"""Tests for the carbon providers and exporter/carbon/fetch.py against local fake APIs."""

from __future__ import annotations

import calendar
import email.utils
import socket
from typing import Any

import pytest
import requests
from carbon_servers import (
    NOW,
    Clock,
    FakeApi,
    Reply,
    casdk_bylocation,
    casdk_forecast,
    em_forecast,
    em_latest,
    uk_fw24h,
    uk_intensity,
    uk_regional,
    uk_regional_fw24h,
    wt_forecast,
)

from exporter.carbon.config import parse_carbon_config
from exporter.carbon.fetch import Fetcher, ProviderError, parse_retry_after
from exporter.carbon.provider import Provider
from exporter.carbon.service import build_provider
from exporter.carbon.watttime import WattTimeProvider


def make(entry: dict[str, Any], session: requests.Session, clock: Clock | None = None) -> Provider:
    config = parse_carbon_config({"zone": "DE", "providers": [{"retries": 0, "timeout": "2s", **entry}]})
    return build_provider(config.providers[0], session, clock or Clock())


def error_of(call: Any) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        call()
    return caught.value


# Electricity Maps


@pytest.fixture
def em_token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TEST_EM_TOKEN", "em-secret-123")
    return "em-secret-123"


def em(api: FakeApi, session: requests.Session, **extra: Any) -> Provider:
    return make({"type": "electricitymaps", "url": api.url, "token_env": "TEST_EM_TOKEN", **extra}, session)


def test_electricitymaps_latest_float_zone_and_token(
    api: FakeApi, session: requests.Session, em_token: str
) -> None:
    api.script("/carbon-intensity/latest", Reply(body=em_latest(322.75)))
    reading = em(api, session).current()
    assert reading.grams_per_kwh == 322.75
    assert reading.observed_at == calendar.timegm((2026, 5, 21, 10, 0, 0, 0, 0, 0))
    (seen,) = api.hits("/carbon-intensity/latest")
    assert seen.headers["auth-token"] == em_token
    assert seen.query == {"zone": ["DE"], "emissionFactorType": ["lifecycle"]}


def test_electricitymaps_token_from_file(api: FakeApi, session: requests.Session, tmp_path: Any) -> None:
    path = tmp_path / "token"
    path.write_text("file-token\n")
    api.script("/carbon-intensity/latest", Reply(body=em_latest(100)))
    provider = make(
        {"type": "electricitymaps", "url": api.url, "token_file": str(path), "zone": "fr"}, session
    )
    api.script("/carbon-intensity/latest", Reply(body=em_latest(56, zone="FR")))
    assert provider.current().grams_per_kwh == 56
    assert api.requests[-1].headers["auth-token"] == "file-token"
    assert api.requests[-1].query["zone"] == ["FR"]


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (Reply(401, {"message": "bad token"}), "auth"),
        (Reply(403, {"message": "forbidden"}), "auth"),
        (Reply(404, {"message": "no zone"}), "http_4xx"),
        (Reply(429, {"message": "slow down"}), "http_429"),
        (Reply(500, "oops"), "http_5xx"),
        (Reply(503, ""), "http_5xx"),
        (Reply(200, "{not json"), "malformed"),
        (Reply(200, ""), "malformed"),
        (Reply(200, {"zone": "DE"}), "malformed"),
        (Reply(200, {**em_latest(), "carbonIntensity": "high"}), "malformed"),
        (Reply(200, {**em_latest(), "carbonIntensity": None}), "malformed"),
        (Reply(200, {**em_latest(), "datetime": "yesterday"}), "malformed"),
        (Reply(200, em_latest(zone="PL")), "malformed"),
        (Reply(200, [1, 2, 3]), "malformed"),
        (Reply(302, "", {"Location": "http://elsewhere.example/"}), "http_4xx"),
    ],
)
def test_electricitymaps_failures_have_kinds(
    api: FakeApi, session: requests.Session, em_token: str, reply: Reply, kind: str
) -> None:
    api.script("/carbon-intensity/latest", reply)
    assert error_of(em(api, session).current).kind == kind
    assert len(api.hits("/carbon-intensity/latest")) == 1  # 4xx and bad bodies are not retried


def test_electricitymaps_missing_token_is_auth_without_a_request(
    api: FakeApi, session: requests.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_EM_TOKEN", raising=False)
    api.script("/carbon-intensity/latest", Reply(body=em_latest()))
    assert error_of(em(api, session).current).kind == "auth"
    assert api.requests == []


def test_electricitymaps_forecast(api: FakeApi, session: requests.Session, em_token: str) -> None:
    api.script(
        "/carbon-intensity/forecast",
        Reply(
            body=em_forecast(
                [
                    ("2026-05-21T11:00:00.000Z", 300.5),
                    ("2026-05-21T12:00:00.000Z", 250),
                    ("2026-05-21T13:00:00.000Z", 280),
                ]
            )
        ),
    )
    assert em(api, session).forecast() is None  # off by default: a paid endpoint
    points = em(api, session, forecast=True).forecast()
    assert points is not None and [p.grams_per_kwh for p in points] == [300.5, 250, 280]
    assert points[1].start == calendar.timegm((2026, 5, 21, 12, 0, 0, 0, 0, 0))
    assert points[2].end - points[2].start == 3600


# WattTime


@pytest.fixture
def wt_secrets(monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    monkeypatch.setenv("TEST_WT_USER", "alice")
    monkeypatch.setenv("TEST_WT_PASSWORD", "wt-password-456")
    return "alice", "wt-password-456"


def wt(api: FakeApi, session: requests.Session, clock: Clock | None = None) -> WattTimeProvider:
    provider = make(
        {
            "type": "watttime",
            "url": api.url,
            "region": "CAISO_NORTH",
            "username_env": "TEST_WT_USER",
            "password_env": "TEST_WT_PASSWORD",
        },
        session,
        clock,
    )
    assert isinstance(provider, WattTimeProvider)
    return provider


def test_watttime_login_nowcast_and_conversion(
    api: FakeApi, session: requests.Session, wt_secrets: tuple[str, str]
) -> None:
    api.script("/login", Reply(body={"token": "jwt-1"}))
    api.script("/v3/forecast", Reply(body=wt_forecast([("2026-05-01T00:00:00+00:00", 870.3)])))
    reading = wt(api, session).current()
    assert reading.grams_per_kwh == pytest.approx(870.3 * 0.45359237)
    (login,) = api.hits("/login")
    assert login.basic_auth == wt_secrets
    (data,) = api.hits("/v3/forecast")
    assert data.headers["Authorization"] == "Bearer jwt-1"
    assert data.query == {"region": ["CAISO_NORTH"], "signal_type": ["co2_moer"], "horizon_hours": ["0"]}


def test_watttime_token_renewed_on_expiry_and_on_401(
    api: FakeApi, session: requests.Session, wt_secrets: tuple[str, str]
) -> None:
    clock = Clock()
    api.script(
        "/login",
        Reply(body={"token": "jwt-1"}),
        Reply(body={"token": "jwt-2"}),
        Reply(body={"token": "jwt-3"}),
    )
    api.script("/v3/forecast", Reply(body=wt_forecast([("2026-05-01T00:00:00+00:00", 1000)])))
    provider = wt(api, session, clock)
    provider.current()
    provider.current()
    assert provider.logins_total == 1  # a valid token is reused
    clock.now += 31 * 60  # past the 30-minute token lifetime
    provider.current()
    assert provider.logins_total == 2
    assert api.hits("/v3/forecast")[-1].headers["Authorization"] == "Bearer jwt-2"
    # The server revokes the token early: the 401 triggers one new login and the request is repeated.
    api.script(
        "/v3/forecast",
        Reply(401, {"error": "token expired"}),
        Reply(body=wt_forecast([("2026-05-01T00:00:00+00:00", 500)])),
    )
    assert provider.current().grams_per_kwh == pytest.approx(500 * 0.45359237)
    assert provider.logins_total == 3
    assert api.hits("/v3/forecast")[-1].headers["Authorization"] == "Bearer jwt-3"


def test_watttime_bad_credentials_and_bodies(
    api: FakeApi, session: requests.Session, wt_secrets: tuple[str, str]
) -> None:
    api.script("/login", Reply(401, {"error": "invalid credentials"}))
    assert error_of(wt(api, session).current).kind == "auth"
    api.script("/login", Reply(body={"nothing": "here"}))
    assert error_of(wt(api, session).current).kind == "malformed"
    api.script("/login", Reply(body={"token": "jwt"}))
    api.script("/v3/forecast", Reply(body={"data": [], "meta": {}}))
    assert error_of(wt(api, session).current).kind == "malformed"
    api.script("/v3/forecast", Reply(body=wt_forecast([("2026-05-01T00:00:00+00:00", 55)], units="percent")))
    assert error_of(wt(api, session).current).kind == "malformed"
    # A fresh token refused for data: the account lacks access; no login loop.
    api.script("/v3/forecast", Reply(403, {"error": "region not in plan"}))
    logins = len(api.hits("/login"))
    assert error_of(wt(api, session).current).kind == "auth"
    assert len(api.hits("/login")) == logins + 1


def test_watttime_forecast_24h_in_grams(
    api: FakeApi, session: requests.Session, wt_secrets: tuple[str, str]
) -> None:
    api.script("/login", Reply(body={"token": "jwt"}))
    api.script(
        "/v3/forecast",
        Reply(
            body=wt_forecast(
                [
                    ("2026-05-21T10:05:00+00:00", 900),
                    ("2026-05-21T10:10:00+00:00", 700),
                    ("2026-05-21T10:15:00+00:00", 800),
                ]
            )
        ),
    )
    points = wt(api, session).forecast()
    assert points is not None and [round(p.grams_per_kwh, 3) for p in points] == [408.233, 317.515, 362.874]
    assert api.hits("/v3/forecast")[-1].query["horizon_hours"] == ["24"]
    assert points[-1].end - points[-1].start == 300


# UK National Grid ESO


def test_ukgrid_actual_then_forecast_when_actual_is_null(api: FakeApi, session: requests.Session) -> None:
    provider = make({"type": "ukgrid", "url": api.url}, session)
    api.script("/intensity", Reply(body=uk_intensity(forecast=266, actual=263)))
    assert provider.current().grams_per_kwh == 263
    api.script("/intensity", Reply(body=uk_intensity(forecast=266.5, actual=None)))
    assert provider.current().grams_per_kwh == 266.5
    assert provider.zone == "GB"
    api.script("/intensity", Reply(body=uk_intensity(forecast=None, actual=None)))
    assert error_of(provider.current).kind == "malformed"
    api.script("/intensity", Reply(400, {"error": {"code": "400 Bad Request", "message": "Invalid date"}}))
    assert error_of(provider.current).kind == "http_4xx"
    api.script("/intensity", Reply(200, {"error": {"code": "400", "message": "x"}}))
    assert error_of(provider.current).kind == "malformed"


def test_ukgrid_regional_and_forecasts(api: FakeApi, session: requests.Session) -> None:
    clock = Clock()
    regional = make({"type": "ukgrid", "url": api.url, "region_id": 13}, session, clock)
    api.script("/regional/regionid/13", Reply(body=uk_regional(180)))
    assert regional.current().grams_per_kwh == 180 and regional.zone == "GB-region-13"
    api.script(
        "/regional/intensity/*",
        Reply(
            body=uk_regional_fw24h(
                [
                    ("2026-05-21T10:00Z", "2026-05-21T10:30Z", 150),
                    ("2026-05-21T10:30Z", "2026-05-21T11:00Z", 90),
                ]
            )
        ),
    )
    points = regional.forecast()
    assert points is not None and [p.grams_per_kwh for p in points] == [150, 90]
    assert api.requests[-1].path == "/regional/intensity/2026-05-21T10:05Z/fw24h/regionid/13"
    national = make({"type": "ukgrid", "url": api.url}, session, clock)
    api.script("/intensity/*", Reply(body=uk_fw24h([("2026-05-21T10:00Z", "2026-05-21T10:30Z", 120)])))
    points = national.forecast()
    assert points is not None and points[0].grams_per_kwh == 120 and points[0].end - points[0].start == 1800
    assert api.requests[-1].path == "/intensity/2026-05-21T10:05Z/fw24h"


# Carbon Aware SDK


def test_carbon_aware_sdk_latest_rating_204_and_forecast(api: FakeApi, session: requests.Session) -> None:
    provider = make({"type": "carbon_aware_sdk", "url": api.url, "location": "eastus"}, session)
    api.script(
        "/emissions/bylocation",
        Reply(
            body=casdk_bylocation([("2026-05-21T09:55:00+00:00", 70.25), ("2026-05-21T10:00:00+00:00", 65.5)])
        ),
    )
    assert provider.current().grams_per_kwh == 65.5
    seen = api.hits("/emissions/bylocation")[-1]
    assert seen.query["location"] == ["eastus"] and seen.query["toTime"] == ["2026-05-21T10:05:00Z"]
    api.script("/emissions/bylocation", Reply(204))
    assert error_of(provider.current).kind == "malformed"
    api.script("/emissions/bylocation", Reply(body=[{"location": "eastus", "time": "2026-05-21T10:00:00Z"}]))
    assert error_of(provider.current).kind == "malformed"
    api.script(
        "/emissions/forecasts/current",
        Reply(body=casdk_forecast([("2026-05-21T10:05:00+00:00", 60), ("2026-05-21T10:10:00+00:00", 40)])),
    )
    points = provider.forecast()
    assert points is not None and [p.grams_per_kwh for p in points] == [60, 40]
    assert points[0].end - points[0].start == 300
    api.script("/emissions/forecasts/current", Reply(501, {"title": "Not Implemented"}))
    assert provider.forecast() is None


# Transport: retries, timeouts, connection errors, Retry-After


def test_5xx_is_retried_with_bounded_backoff(api: FakeApi, session: requests.Session) -> None:
    sleeps: list[float] = []
    fetcher = Fetcher(session, timeout=2.0, retries=2, backoff=0.5, sleep=sleeps.append)
    api.script("/x", Reply(500, "down"))
    assert error_of(lambda: fetcher.get_json(f"{api.url}/x")).kind == "http_5xx"
    assert len(api.hits("/x")) == 3
    # backoff x 2^attempt with jitter between half and the full delay
    assert 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0
    api.script("/x", Reply(502, "down"), Reply(body={"ok": 1}))
    assert fetcher.get_json(f"{api.url}/x") == {"ok": 1}


def test_timeout_is_a_timeout(api: FakeApi, session: requests.Session) -> None:
    api.script("/slow", Reply(body={"ok": 1}, delay=1.5))
    fetcher = Fetcher(session, timeout=0.2, retries=0)
    assert error_of(lambda: fetcher.get_json(f"{api.url}/slow")).kind == "timeout"


def test_refused_connection_is_connection(session: requests.Session) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    fetcher = Fetcher(session, timeout=1.0, retries=0)
    assert error_of(lambda: fetcher.get_json(f"http://127.0.0.1:{port}/")).kind == "connection"


def test_429_carries_retry_after_in_seconds_or_http_date(api: FakeApi, session: requests.Session) -> None:
    clock = Clock()
    fetcher = Fetcher(session, timeout=2.0, retries=3, clock=clock)
    api.script("/x", Reply(429, "", {"Retry-After": "120"}))
    error = error_of(lambda: fetcher.get_json(f"{api.url}/x"))
    assert (error.kind, error.not_before) == ("http_429", NOW + 120)
    assert len(api.hits("/x")) == 1  # a 429 is never retried at once
    api.script("/x", Reply(429, "", {"Retry-After": email.utils.formatdate(NOW + 600, usegmt=True)}))
    assert error_of(lambda: fetcher.get_json(f"{api.url}/x")).not_before == NOW + 600
    assert parse_retry_after("soon", NOW) is None and parse_retry_after(None, NOW) is None
