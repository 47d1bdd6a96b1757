"""What a person must know about the carbon figures now: zone, provider, basis, and what is wrong."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from exporter.carbon import embedded
from exporter.carbon.config import CarbonConfig
from exporter.model import IntensityState, ProviderState

# Same line as the FootprintCarbonIntensityStale alert: a provider value older than this is stale.
STALE_AFTER_S = 7200.0
WORLD = embedded.DEFAULT_ZONE
ZONE_HINT = "set carbon.zone to the grid the node draws from (docs/carbon.md)"


@dataclass(frozen=True, slots=True)
class CarbonWarning:
    code: str  # world_average, embedded_table, stale_intensity, provider_down
    level: int  # logging level: WARNING for what makes the figures wrong, INFO for what makes them coarse
    text: str


def basis_of(state: IntensityState) -> str:
    """The emission-factor basis of an intensity (lifecycle or direct), or "not stated"."""
    if state.basis:
        return state.basis
    # The embedded table's rows are lifecycle figures (exporter/data/carbon_intensity.csv says so per row).
    return "lifecycle" if state.provider == embedded.PROVIDER else "not stated"


def carbon_warnings(
    intensities: Sequence[IntensityState], providers: Sequence[ProviderState] = ()
) -> list[CarbonWarning]:
    """Warnings about the intensity in use now, most serious first."""
    found: list[CarbonWarning] = []
    for state in intensities:
        if state.signal != "average":
            continue
        if state.zone == WORLD:
            found.append(
                CarbonWarning(
                    "world_average",
                    logging.WARNING,
                    f"emissions use the world average ({state.grams_per_kwh:g} g/kWh, zone WORLD, a yearly "
                    f"figure): {ZONE_HINT}",
                )
            )
        elif state.provider == embedded.PROVIDER:
            found.append(
                CarbonWarning(
                    "embedded_table",
                    logging.INFO,
                    f"zone {state.zone} uses the embedded table's yearly average "
                    f"({state.grams_per_kwh:g} g/kWh, "
                    f"{state.source or 'source not stated'}, {state.year or 'year not stated'}); configure a "
                    "provider for hourly data",
                )
            )
        if state.provider not in (embedded.PROVIDER, "static") and state.age_s > STALE_AFTER_S:
            found.append(
                CarbonWarning(
                    "stale_intensity",
                    logging.WARNING,
                    f"the intensity from {state.provider} is {state.age_s / 3600:.1f} h old: "
                    "its refreshes fail",
                )
            )
    for provider in providers:
        if not provider.up and provider.provider not in (embedded.PROVIDER, "static"):
            kinds = (
                ", ".join(f"{k} x{n}" for k, n in sorted(provider.errors_total.items())) or "no answer yet"
            )
            found.append(
                CarbonWarning(
                    "provider_down",
                    logging.WARNING,
                    f"carbon provider {provider.provider} is not answering ({kinds}); "
                    "the next in the chain is used",
                )
            )
    return sorted(found, key=lambda w: -w.level)


def startup_summary(config: CarbonConfig, intensities: Sequence[IntensityState]) -> list[tuple[int, str]]:
    """The start-up log lines (level, message) naming zone, providers, basis and the intensity in use."""
    chain = [p.type for p in config.providers] + [embedded.PROVIDER]
    lines: list[tuple[int, str]] = []
    average = [s for s in intensities if s.signal == "average"]
    for state in average:
        lines.append(
            (
                logging.INFO,
                f"carbon: zone {config.zone}, providers {' -> '.join(chain)}; "
                f"in use now: {state.grams_per_kwh:g} g/kWh from {state.provider} "
                f"(zone {state.zone}, {basis_of(state)} basis"
                + (f", {state.source} {state.year}" if state.source else "")
                + f"), PUE {config.pue:g}",
            )
        )
    if config.zone == WORLD:
        only = not config.providers
        row = embedded.lookup(WORLD)
        world = f"{row.grams_per_kwh:g} g/kWh" if row else "the table's WORLD row"
        lines.append(
            (
                logging.WARNING,
                "carbon: zone WORLD: "
                + (
                    f"every emission uses the world average ({world}, a yearly figure)"
                    if only
                    else "when the providers fail, emissions fall back to the world average"
                )
                + f": {ZONE_HINT}",
            )
        )
    return lines
