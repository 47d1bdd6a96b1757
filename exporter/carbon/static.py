"""The ``static`` provider: one configured intensity that never fails."""

from __future__ import annotations

from exporter.carbon.config import ProviderConfig
from exporter.carbon.provider import ForecastPoint, Reading


class StaticProvider:
    type = "static"
    url = ""

    def __init__(self, config: ProviderConfig) -> None:
        assert config.grams_per_kwh is not None  # config.py requires it for this type
        self.signal = config.signal
        self.basis = config.basis
        self.zone = config.zone
        self._reading = Reading(config.grams_per_kwh, timeless=True)

    def current(self) -> Reading:
        return self._reading

    def forecast(self) -> tuple[ForecastPoint, ...] | None:
        return None
