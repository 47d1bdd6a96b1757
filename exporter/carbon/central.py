"""One fetch per zone for a fleet: the JSON an exporter serves of its intensity, and the ``central`` provider.

A central exporter (any exporter; typically one started with ``--source.gpu=none --source.cpu=none``)
serves the intensities it uses at ``PATH``; node exporters configure a ``central`` provider pointing at
it, so only the central instance calls the upstream APIs. Every value carries its own data time,
basis, signal, origin provider and estimate flag, so nothing is laundered on the way: a node computes
the age from the data's time, never from when it fetched the relay.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

from exporter.carbon.config import BASES, SIGNALS, ProviderConfig
from exporter.carbon.credentials import read_secret
from exporter.carbon.fetch import Fetcher, ProviderError
from exporter.carbon.provider import ForecastPoint, Reading, field, grams, items, timestamp
from exporter.model import IntensityState

PATH = "/api/v1/carbon-intensity"
FORMAT_VERSION = 1


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC).isoformat().replace("+00:00", "Z")


def payload(zone: str, states: Iterable[IntensityState], now: float) -> dict[str, Any]:
    """The JSON document a central exporter serves: the intensities in use, one per signal."""
    return {
        "version": FORMAT_VERSION,
        "zone": zone,
        "generated_at": _iso(now),
        "intensities": [
            {
                "signal": s.signal,
                "basis": s.basis,
                "zone": s.zone,
                "provider": s.provider,
                "grams_per_kwh": s.grams_per_kwh,
                "datetime": _iso(s.observed_at),
                "confirmed_at": _iso(s.confirmed_at),
                "estimated": s.estimated,
                "source": s.source,
                "year": s.year,
            }
            for s in states
        ],
    }


def _text(entry: dict[str, Any], name: str) -> str:
    value = entry.get(name, "")
    if not isinstance(value, str):
        raise ProviderError("malformed", f"intensity {name}: not a string: {value!r}")
    return value


def _time(entry: dict[str, Any], name: str) -> float | None:
    value = entry.get(name)
    return None if value is None else timestamp(value, f"intensity {name}")


def _reading(entry: Any) -> Reading:
    if not isinstance(entry, dict):
        raise ProviderError("malformed", "intensity: not an object")
    signal, basis = field(entry, "signal", "intensity"), field(entry, "basis", "intensity")
    if signal not in SIGNALS or basis not in BASES:
        raise ProviderError("malformed", f"intensity: unknown signal {signal!r} or basis {basis!r}")
    provider = _text(entry, "provider")
    if not provider:
        raise ProviderError("malformed", "intensity: no provider")
    estimated = entry.get("estimated")
    observed_at, confirmed_at = _time(entry, "datetime"), _time(entry, "confirmed_at")
    return Reading(
        grams(field(entry, "grams_per_kwh", "intensity"), "grams_per_kwh"),
        observed_at,
        estimated if isinstance(estimated, bool) else None,
        signal=signal,
        basis=basis,
        provider=provider,
        zone=_text(entry, "zone") or None,
        source=_text(entry, "source"),
        year=_text(entry, "year"),
        confirmed_at=confirmed_at,
        timeless=observed_at is None and confirmed_at is None,
    )


class CentralProvider:
    """Reads another exporter's ``PATH``: every signal it serves, each on its own basis."""

    type = "central"
    signal = "average"
    basis = ""  # each relayed value says its own

    def __init__(self, config: ProviderConfig, fetcher: Fetcher) -> None:
        self.url = config.url
        self.zone = config.zone
        self._config = config
        self._fetcher = fetcher

    def _auth(self) -> tuple[str, str] | None:
        c = self._config
        if not (c.username_env or c.username_file):
            return None
        user = read_secret(self.type, "username", c.username_env, c.username_file)
        return user, read_secret(self.type, "password", c.password_env, c.password_file)

    def current(self) -> tuple[Reading, ...]:
        body = self._fetcher.get_json(f"{self.url}{PATH}", auth=self._auth())
        if field(body, "version", "answer") != FORMAT_VERSION:
            raise ProviderError("malformed", f"answer format version {body.get('version')!r}, not 1")
        zone = field(body, "zone", "answer")
        if not isinstance(zone, str) or zone.upper() != self.zone:
            raise ProviderError("malformed", f"answer is for zone {zone!r}, not {self.zone!r}")
        readings = tuple(
            _reading(entry) for entry in items(field(body, "intensities", "answer"), "intensities")
        )
        if not readings:
            raise ProviderError("malformed", "the central exporter serves no intensity")
        return readings

    def forecast(self) -> tuple[ForecastPoint, ...] | None:
        return None  # forecasts are served by the central instance itself; scrape it for them
