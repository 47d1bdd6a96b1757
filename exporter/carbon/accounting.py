"""Emissions accounting: pure functions turning energy and time into grams of CO2e and litres of water."""

from __future__ import annotations

from collections.abc import Sequence

JOULES_PER_KWH = 3.6e6
# A Julian year: the service life in years is converted with 365.25 days so leap years average out.
SECONDS_PER_YEAR = 365.25 * 86400.0


def operational_grams(energy_j: float, segments: Sequence[tuple[float, float]], pue: float) -> float:
    """Grams CO2e of ``energy_j`` joules of IT energy drawn over an interval split into segments.

    ``segments`` is ``[(seconds, grams_per_kwh), ...]`` covering the interval, as
    ``CarbonService.segments`` returns it. The energy is taken as spread uniformly over the interval
    (the sampler only knows the interval's total), so each segment gets ``energy * seconds / total``
    and is multiplied by its own intensity. PUE is applied here, once, to the IT energy. A zero-length
    interval (all segments 0 s) charges the energy at the last segment's intensity.
    """
    if energy_j == 0.0 or not segments:
        return 0.0
    total = sum(seconds for seconds, _ in segments)
    if total <= 0.0:
        weighted = segments[-1][1]
    else:
        weighted = sum(seconds * grams for seconds, grams in segments) / total
    return energy_j / JOULES_PER_KWH * weighted * pue


def embodied_grams(kg_co2e: float, life_years: float, seconds: float) -> float:
    """Grams of a manufacturing footprint of ``kg_co2e`` amortised linearly over ``seconds`` of service."""
    if life_years <= 0.0:
        raise ValueError("service life must be positive")
    return kg_co2e * 1000.0 * seconds / (life_years * SECONDS_PER_YEAR)


def water_litres(energy_j: float, wue_litres_per_kwh: float, pue: float) -> float:
    """Site water in litres for ``energy_j`` joules of IT energy.

    The Green Grid defines site WUE as annual site water use divided by the *IT equipment* energy,
    so litres = IT kWh x WUE and PUE is deliberately not applied (``pue`` is accepted so callers pass
    the same arguments as for ``operational_grams``; applying it would count the overhead twice).
    """
    del pue
    return energy_j / JOULES_PER_KWH * wue_litres_per_kwh
