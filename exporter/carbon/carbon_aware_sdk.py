"""The ``carbon_aware_sdk`` provider: a self-hosted Green Software Foundation Carbon Aware SDK Web API."""

from __future__ import annotations

import re
from typing import Any

from exporter.carbon.config import ProviderConfig
from exporter.carbon.fetch import Fetcher, ProviderError
from exporter.carbon.provider import (
    ForecastPoint,
    Reading,
    field,
    first,
    grams,
    iso_seconds,
    items,
    timestamp,
)

# How far back to ask for emissions data: wide enough for hourly data sources to have a point.
LOOKBACK_S = 2 * 3600.0
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d+):(\d{2}):(\d{2})(?:\.\d+)?$")


def duration_seconds(value: Any, default: float) -> float:
    """Seconds in a .NET TimeSpan (``00:05:00``, ``1.00:00:00``) or a number of minutes; else ``default``."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value) * 60.0
    match = _TIMESPAN.match(value) if isinstance(value, str) else None
    if match is None:
        return default
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    total = days * 86400.0 + hours * 3600.0 + minutes * 60.0 + seconds
    return total if total > 0 else default


class CarbonAwareSdkProvider:
    """Signal and basis are configured: they are whatever the SDK's data source serves."""

    type = "carbon_aware_sdk"

    def __init__(self, config: ProviderConfig, fetcher: Fetcher) -> None:
        self.url = config.url
        self.zone = config.location
        self.signal = config.signal
        self.basis = config.basis
        self._config = config
        self._fetcher = fetcher

    def current(self) -> Reading:
        now = self._fetcher.clock()
        body = self._fetcher.get_json(
            f"{self.url}/emissions/bylocation",
            params={"location": self.zone, "time": iso_seconds(now - LOOKBACK_S), "toTime": iso_seconds(now)},
        )
        if body is None:
            raise ProviderError("malformed", "no emissions data for the location (HTTP 204)")
        rows = items(body, "emissions")
        if not rows:
            raise ProviderError("malformed", "no emissions data for the location (empty list)")
        latest = max(rows, key=lambda row: timestamp(field(row, "time", "emissions"), "emissions time"))
        return Reading(
            grams(field(latest, "rating", "emissions"), "rating"), timestamp(latest["time"], "time")
        )

    def forecast(self) -> tuple[ForecastPoint, ...] | None:
        if not self._config.forecast:
            return None
        try:
            body = self._fetcher.get_json(
                f"{self.url}/emissions/forecasts/current", params={"location": self.zone}
            )
        except ProviderError as exc:
            if exc.status == 501:  # the SDK's data source offers no forecast: not a failure
                return None
            raise
        if body is None:
            raise ProviderError("malformed", "no forecast for the location (HTTP 204)")
        data = items(field(first(body, "forecasts"), "forecastData", "forecast"), "forecastData")
        points = []
        for row in data:
            start = timestamp(field(row, "timestamp", "forecastData"), "forecast timestamp")
            length = duration_seconds(row.get("duration"), 300.0)
            points.append(
                ForecastPoint(start, start + length, grams(field(row, "value", "forecastData"), "value"))
            )
        return tuple(sorted(points, key=lambda p: p.start))
