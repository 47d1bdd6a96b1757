"""What every carbon intensity provider returns, and helpers to read the APIs' JSON defensively."""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from typing import Any, Protocol

from exporter.carbon.fetch import ProviderError


@dataclass(frozen=True, slots=True)
class Reading:
    """One current intensity value from a provider, with what the data says about itself."""

    grams_per_kwh: float
    # When the value applies (the API's own timestamp: the start of the period it describes), epoch
    # seconds; None when the API gives none (its age then counts from the last refresh confirming it).
    observed_at: float | None = None
    # True: the provider marks it an estimate or forecast; False: measured; None: the API does not say.
    estimated: bool | None = None
    # The rest is for values relayed by a central exporter; None/"" means "this provider's own".
    signal: str | None = None
    basis: str | None = None
    provider: str | None = None  # the provider the value originally came from
    zone: str | None = None
    source: str = ""
    year: str = ""
    # For a relayed value without a data time: when the central instance last confirmed it.
    confirmed_at: float | None = None
    # A value with no age at all (a configured static figure).
    timeless: bool = False


@dataclass(frozen=True, slots=True)
class ForecastPoint:
    start: float  # epoch seconds
    end: float
    grams_per_kwh: float


class Provider(Protocol):
    """A source of grid carbon intensity for one zone: one signal on one basis, unless it relays several."""

    type: str
    signal: str  # "average" or "marginal"
    # "lifecycle" or "direct"; "" when each answer says (a central exporter relaying several values).
    basis: str
    zone: str
    url: str

    def current(self) -> Reading | tuple[Reading, ...]:
        """The latest value (several for a relay); raises ProviderError (with its kind) on any failure."""
        ...

    def forecast(self) -> tuple[ForecastPoint, ...] | None:
        """Forecast points, or None when this provider has no forecast (configured off or not offered)."""
        ...


# JSON walking: every missing field, wrong type or non-finite number becomes ProviderError("malformed")
# so no provider can crash the refresh thread with a KeyError or TypeError.


def field(obj: Any, name: str, what: str) -> Any:
    if not isinstance(obj, dict) or name not in obj:
        raise ProviderError("malformed", f"{what}: field {name!r} missing")
    return obj[name]


def items(obj: Any, what: str) -> list[Any]:
    if not isinstance(obj, list):
        raise ProviderError("malformed", f"{what}: expected a list, got {type(obj).__name__}")
    return obj


def first(obj: Any, what: str) -> Any:
    values = items(obj, what)
    if not values:
        raise ProviderError("malformed", f"{what}: empty list")
    return values[0]


def grams(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ProviderError("malformed", f"{what}: not a non-negative number: {value!r}")
    return float(value)


def timestamp(value: Any, what: str) -> float:
    """Epoch seconds of an ISO 8601 time (``Z``, offsets and the UK API's ``2026-01-20T12:00Z`` accepted)."""
    if not isinstance(value, str):
        raise ProviderError("malformed", f"{what}: not a time: {value!r}")
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ProviderError("malformed", f"{what}: not an ISO 8601 time: {value!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def iso_minute(epoch: float) -> str:
    """``YYYY-MM-DDThh:mmZ`` in UTC, the UK API's path format."""
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%MZ")


def iso_seconds(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def points_from(starts_values: list[tuple[float, float]], period_s: float) -> tuple[ForecastPoint, ...]:
    """Forecast points from (start, value) pairs; each ends where the next starts, the last after period_s."""
    ordered = sorted(starts_values)
    result = []
    for index, (start, value) in enumerate(ordered):
        end = ordered[index + 1][0] if index + 1 < len(ordered) else start + period_s
        result.append(ForecastPoint(start, max(end, start), value))
    return tuple(result)
