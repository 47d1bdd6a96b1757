"""The ``ukgrid`` provider: National Grid ESO Carbon Intensity API, national or one DNO region, no key."""

from __future__ import annotations

from typing import Any

from exporter.carbon.config import ProviderConfig
from exporter.carbon.fetch import Fetcher, ProviderError
from exporter.carbon.provider import (
    ForecastPoint,
    Reading,
    field,
    first,
    grams,
    iso_minute,
    items,
    points_from,
    timestamp,
)


def _value(period: Any, what: str) -> tuple[float, bool]:
    """The period's intensity and whether it is a forecast (True) rather than from metered generation."""
    intensity = field(period, "intensity", what)
    # The running half hour has no actual yet (null): its forecast is the best value there is.
    actual = intensity.get("actual") if isinstance(intensity, dict) else None
    if actual is not None:
        return grams(actual, f"{what} actual"), False
    return grams(field(intensity, "forecast", what), f"{what} forecast"), True


class UkGridProvider:
    type = "ukgrid"
    signal = "average"
    # "The Carbon Intensity forecast includes CO2 emissions related to electricity generation only"
    # (carbonintensity.org.uk): direct emissions, no upstream share.
    basis = "direct"

    def __init__(self, config: ProviderConfig, fetcher: Fetcher) -> None:
        self.url = config.url
        self.zone = config.zone
        self._config = config
        self._fetcher = fetcher

    def _regional_periods(self, body: Any, what: str) -> list[Any]:
        # /regional/regionid/N answers data: [region]; the regional forecast answers data: region.
        region = field(body, "data", what)
        if isinstance(region, list):
            region = first(region, what)
        return items(field(region, "data", what), what)

    def current(self) -> Reading:
        if self._config.region_id is None:
            body = self._fetcher.get_json(f"{self.url}/intensity")
            period = first(field(body, "data", "intensity"), "intensity data")
        else:
            body = self._fetcher.get_json(f"{self.url}/regional/regionid/{self._config.region_id}")
            period = first(self._regional_periods(body, "regional"), "regional data")
        when = period.get("from") if isinstance(period, dict) else None
        value, forecast = _value(period, "intensity")
        return Reading(value, timestamp(when, "from") if when is not None else None, forecast)

    def forecast(self) -> tuple[ForecastPoint, ...] | None:
        if not self._config.forecast:
            return None
        start = iso_minute(self._fetcher.clock())
        if self._config.region_id is None:
            body = self._fetcher.get_json(f"{self.url}/intensity/{start}/fw24h")
            periods = items(field(body, "data", "forecast"), "forecast data")
        else:
            path = f"/regional/intensity/{start}/fw24h/regionid/{self._config.region_id}"
            periods = self._regional_periods(self._fetcher.get_json(f"{self.url}{path}"), "regional forecast")
        pairs = []
        for period in periods:
            begin = timestamp(field(period, "from", "forecast"), "forecast from")
            intensity = field(period, "intensity", "forecast")
            pairs.append((begin, grams(field(intensity, "forecast", "forecast"), "forecast value")))
        if not pairs:
            raise ProviderError("malformed", "forecast has no periods")
        return points_from(pairs, 1800.0)
