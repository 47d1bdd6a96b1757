"""The embedded table of yearly average grid carbon intensity per zone and basis: the last resort."""

from __future__ import annotations

import calendar
import csv
import functools
import io
from dataclasses import dataclass
from importlib import resources

PROVIDER = "embedded"
DEFAULT_ZONE = "WORLD"
BASES = ("lifecycle", "direct")


@dataclass(frozen=True, slots=True)
class ZoneIntensity:
    """One row of the table: a zone's yearly average intensity on one basis, with where it comes from."""

    zone: str
    name: str
    grams_per_kwh: float
    year: str
    source: str
    basis: str = "lifecycle"

    @property
    def end_of_year(self) -> float | None:
        """Epoch seconds of 1 January after the year the figure describes: the time its age counts from."""
        try:
            return float(calendar.timegm((int(self.year) + 1, 1, 1, 0, 0, 0, 0, 0, 0)))
        except ValueError:
            return None


def parse_table(text: str) -> dict[tuple[str, str], ZoneIntensity]:
    """Rows of a ``zone,name,grams_per_kwh,year,basis,source`` CSV keyed by (upper-case zone, basis)."""
    table: dict[tuple[str, str], ZoneIntensity] = {}
    for number, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        try:
            zone = row["zone"].strip().upper()
            grams = float(row["grams_per_kwh"])
            basis = row["basis"].strip()
            entry = ZoneIntensity(zone, row["name"], grams, row["year"].strip(), row["source"].strip(), basis)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"carbon_intensity.csv line {number}: {exc}") from exc
        if basis not in BASES:
            raise ValueError(f"carbon_intensity.csv line {number}: basis must be lifecycle or direct")
        if not zone or grams < 0 or (zone, basis) in table:
            raise ValueError(
                f"carbon_intensity.csv line {number}: empty, negative or duplicate zone {zone!r} ({basis})"
            )
        table[(zone, basis)] = entry
    return table


@functools.cache
def table() -> dict[tuple[str, str], ZoneIntensity]:
    """The packaged table (exporter/data/carbon_intensity.csv), read once."""
    text = resources.files("exporter").joinpath("data/carbon_intensity.csv").read_text(encoding="utf-8")
    return parse_table(text)


def lookup(zone: str, basis: str = "lifecycle") -> ZoneIntensity | None:
    """The row for a zone (case-insensitive) on a basis, or None when the table has none."""
    return table().get((zone.strip().upper(), basis))


def knows(zone: str) -> bool:
    """Whether the table has a row for the zone on any basis."""
    wanted = zone.strip().upper()
    return any(key[0] == wanted for key in table())
