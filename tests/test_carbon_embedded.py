"""Tests for exporter/carbon/embedded.py and the packaged exporter/data/carbon_intensity.csv."""

from __future__ import annotations

import pytest

from exporter.carbon import embedded

# Reference values (Ember / OWID, 2023, g/kWh) from shared/reference/carbon-apis.md.
REFERENCE = {"US": 369, "FR": 56, "DE": 381, "GB": 238, "CN": 582, "IN": 713}
# Countries with well over 1 TWh of yearly demand on every continent; the table must know them all.
MUST_HAVE = (
    "WORLD",
    "US",
    "CA",
    "MX",
    "BR",
    "AR",
    "CL",
    "CO",
    "PE",
    "GB",
    "IE",
    "FR",
    "DE",
    "NL",
    "BE",
    "ES",
    "PT",
    "IT",
    "AT",
    "CH",
    "PL",
    "CZ",
    "SE",
    "NO",
    "FI",
    "DK",
    "RU",
    "UA",
    "TR",
    "CN",
    "JP",
    "KR",
    "TW",
    "IN",
    "PK",
    "BD",
    "ID",
    "MY",
    "SG",
    "TH",
    "VN",
    "PH",
    "AU",
    "NZ",
    "ZA",
    "NG",
    "EG",
    "KE",
    "MA",
    "DZ",
    "SA",
    "AE",
    "IL",
    "IR",
    "IQ",
    "KZ",
    "US-CAL-CISO",
    "US-TEX-ERCO",
    "US-NY-NYIS",
    "AU-NSW",
)


def test_reference_values_and_world_average() -> None:
    for zone, grams in REFERENCE.items():
        row = embedded.lookup(zone)
        assert row is not None and row.grams_per_kwh == grams, zone
        assert row.year == "2023" and "Ember" in row.source
    world = embedded.lookup("WORLD")
    assert world is not None and world.grams_per_kwh == 480


def test_table_covers_countries_and_regions_with_source_and_year() -> None:
    table = embedded.table()
    assert len(table) >= 150
    for zone in MUST_HAVE:
        assert zone in table, zone
    for row in table.values():
        assert 0 < row.grams_per_kwh < 1500, row
        assert row.year.isdigit() and row.source and row.name


def test_lookup_is_case_insensitive_and_unknown_is_none() -> None:
    assert embedded.lookup(" de ") == embedded.lookup("DE")
    assert embedded.lookup("XX") is None


def test_bad_tables_are_refused() -> None:
    header = "zone,name,grams_per_kwh,year,source\n"
    assert embedded.parse_table(header + "DE,Germany,381,2023,Ember\n")["DE"].grams_per_kwh == 381.0
    for bad in (
        "DE,Germany,lots,2023,Ember\n",
        "DE,Germany,-1,2023,Ember\n",
        "DE,Germany,381,2023,Ember\nde,Germany,381,2023,Ember\n",
    ):
        with pytest.raises(ValueError, match="line"):
            embedded.parse_table(header + bad)
