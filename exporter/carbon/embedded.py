"""The embedded table of yearly average grid carbon intensity per zone: the always-available last resort."""

from __future__ import annotations

import csv
import functools
import io
from dataclasses import dataclass
from importlib import resources

PROVIDER = "embedded"
DEFAULT_ZONE = "WORLD"


@dataclass(frozen=True, slots=True)
class ZoneIntensity:
    """One row of the table: a zone's yearly average lifecycle intensity, with where it comes from."""

    zone: str
    name: str
    grams_per_kwh: float
    year: str
    source: str


def parse_table(text: str) -> dict[str, ZoneIntensity]:
    """Rows of a ``zone,name,grams_per_kwh,year,source`` CSV keyed by upper-case zone."""
    table: dict[str, ZoneIntensity] = {}
    for number, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        try:
            zone = row["zone"].strip().upper()
            grams = float(row["grams_per_kwh"])
            entry = ZoneIntensity(zone, row["name"], grams, row["year"].strip(), row["source"].strip())
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"carbon_intensity.csv line {number}: {exc}") from exc
        if not zone or grams < 0 or zone in table:
            raise ValueError(
                f"carbon_intensity.csv line {number}: empty, negative or duplicate zone {zone!r}"
            )
        table[zone] = entry
    return table


@functools.cache
def table() -> dict[str, ZoneIntensity]:
    """The packaged table (exporter/data/carbon_intensity.csv), read once."""
    text = resources.files("exporter").joinpath("data/carbon_intensity.csv").read_text(encoding="utf-8")
    return parse_table(text)


def lookup(zone: str) -> ZoneIntensity | None:
    """The row for a zone (case-insensitive), or None when the table does not know it."""
    return table().get(zone.strip().upper())
