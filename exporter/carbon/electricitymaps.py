"""The ``electricitymaps`` provider: Electricity Maps API v3 latest (average) intensity and forecast."""

from __future__ import annotations

from typing import Any

from exporter.carbon.config import ProviderConfig
from exporter.carbon.credentials import read_secret
from exporter.carbon.fetch import Fetcher, ProviderError
from exporter.carbon.provider import ForecastPoint, Reading, field, grams, items, points_from, timestamp


class ElectricityMapsProvider:
    type = "electricitymaps"
    signal = "average"

    def __init__(self, config: ProviderConfig, fetcher: Fetcher) -> None:
        self.url = config.url
        self.zone = config.zone
        self.basis = config.basis
        self._config = config
        self._fetcher = fetcher

    def _get(self, path: str, params: dict[str, str]) -> Any:
        token = read_secret(self.type, "token", self._config.token_env, self._config.token_file)
        # Always send the zone: without one the API silently answers for the caller's IP location.
        body = self._fetcher.get_json(
            f"{self.url}{path}", params={"zone": self.zone, **params}, headers={"auth-token": token}
        )
        zone = body.get("zone") if isinstance(body, dict) else None
        if isinstance(zone, str) and zone.upper() != self.zone:
            raise ProviderError("malformed", f"answer is for zone {zone!r}, not {self.zone!r}")
        return body

    def current(self) -> Reading:
        body = self._get("/carbon-intensity/latest", {"emissionFactorType": self.basis})
        value = grams(field(body, "carbonIntensity", "latest"), "latest carbonIntensity")
        # The answer names its own basis; one that is not what was asked for is never used as such.
        answered = body.get("emissionFactorType")
        if answered is not None and answered != self.basis:
            raise ProviderError("basis", f"answer is on the {answered!r} basis, not {self.basis!r}")
        when = body.get("datetime")
        estimated = body.get("isEstimated")
        return Reading(
            value,
            timestamp(when, "latest datetime") if when is not None else None,
            estimated if isinstance(estimated, bool) else None,
        )

    def forecast(self) -> tuple[ForecastPoint, ...] | None:
        if not self._config.forecast:
            return None
        body = self._get("/carbon-intensity/forecast", {})
        pairs = [
            (
                timestamp(field(p, "datetime", "forecast"), "forecast datetime"),
                grams(field(p, "carbonIntensity", "forecast"), "forecast carbonIntensity"),
            )
            for p in items(field(body, "forecast", "forecast"), "forecast")
        ]
        return points_from(pairs, 3600.0)
