"""Market-based Scope 2: factors from contractual instruments, a supplier factor and the residual mix."""

from __future__ import annotations

import math
from dataclasses import dataclass

from exporter.carbon.accounting import JOULES_PER_KWH

HOURS_PER_DAY = 24
SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Instrument:
    """A contractual instrument (PPA, certificates, a green tariff) covering part of the consumption.

    ``hourly_share``, when given, is the fraction covered in each UTC hour of the day (hourly
    matching: a solar PPA covers nothing at night); otherwise ``share`` holds at every hour.
    """

    name: str
    grams_per_kwh: float
    share: float = 0.0
    hourly_share: tuple[float, ...] | None = None
    source: str = ""
    year: str = ""

    def share_at(self, hour: int) -> float:
        return self.hourly_share[hour] if self.hourly_share is not None else self.share


@dataclass(frozen=True, slots=True)
class MarketConfig:
    """The ``carbon.market`` block: instruments in order, then the supplier factor, else the residual mix."""

    instruments: tuple[Instrument, ...] = ()
    supplier_grams_per_kwh: float | None = None
    residual_grams_per_kwh: float | None = None
    basis: str = "direct"
    supplier_source: str = ""
    supplier_year: str = ""
    residual_source: str = ""
    residual_year: str = ""


@dataclass(frozen=True, slots=True)
class HourMix:
    """How one UTC hour's consumption is covered: (instrument name, share) in order, then the rest."""

    covered: tuple[tuple[str, float], ...]
    rest_share: float
    grams_per_kwh: float


def hour_mix(market: MarketConfig, hour: int) -> HourMix:
    """Apply the instruments in order to one hour: each covers its share of what earlier ones left.

    The uncovered rest is charged at the supplier-specific factor when one is given, else at the
    residual mix (GHG Protocol Scope 2 Guidance, market-based hierarchy). An instrument whose share
    exceeds what is left covers only what is left, so the shares can never claim more than 100 %.
    """
    left = 1.0
    grams = 0.0
    covered = []
    for instrument in market.instruments:
        share = min(max(instrument.share_at(hour), 0.0), left)
        covered.append((instrument.name, share))
        grams += share * instrument.grams_per_kwh
        left -= share
    left = max(left, 0.0)
    if left > 0.0:
        rest = market.supplier_grams_per_kwh
        if rest is None:
            rest = market.residual_grams_per_kwh
        if rest is None:  # config.py refuses this; a hand-built config must not count zero silently
            raise ValueError("market: consumption left uncovered and no supplier or residual factor")
        grams += left * rest
    return HourMix(tuple(covered), left, grams)


class MarketMethod:
    """Market-based grams for energy drawn over wall-clock intervals; hour factors computed once."""

    def __init__(self, market: MarketConfig) -> None:
        self.config = market
        self.hours = tuple(hour_mix(market, hour) for hour in range(HOURS_PER_DAY))

    def grams_per_kwh(self, t0: float, t1: float) -> float:
        """The factor over wall-clock ``[t0, t1]``: each UTC hour's factor weighted by its time in it.

        Energy is taken as spread uniformly over the interval, as for the location-based method. A
        zero-length interval gives the factor of the hour ``t1`` falls in.
        """
        if t1 <= t0:
            return self.hours[_hour_of(t1)].grams_per_kwh
        total = 0.0
        start = t0
        while start < t1:
            end = min(t1, (math.floor(start / SECONDS_PER_HOUR) + 1) * SECONDS_PER_HOUR)
            total += (end - start) * self.hours[_hour_of(start)].grams_per_kwh
            start = end
        return total / (t1 - t0)

    def grams(self, energy_j: float, t0: float, t1: float, pue: float) -> float:
        """Market-based grams CO2e of ``energy_j`` J of IT energy drawn over ``[t0, t1]``, PUE included."""
        if energy_j == 0.0:
            return 0.0
        return energy_j / JOULES_PER_KWH * self.grams_per_kwh(t0, t1) * pue


def _hour_of(epoch: float) -> int:
    return int(epoch // SECONDS_PER_HOUR) % HOURS_PER_DAY
