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
        assert (zone, "lifecycle") in table, zone
    for (zone, basis), row in table.items():
        assert 0 < row.grams_per_kwh < 1500, row
        assert row.year.isdigit() and row.source and row.name
        # Every row states its basis, and says it in its source too, so the two cannot disagree.
        assert (row.zone, row.basis) == (zone, basis) and basis in ("lifecycle", "direct")
        assert basis == "direct" or "lifecycle" in row.source


def test_direct_rows_are_their_own_figures() -> None:
    gb = embedded.lookup("GB", "direct")
    us = embedded.lookup("US", "direct")
    assert gb is not None and us is not None
    # DESNZ 2023 UK factor 0.20707 kg CO2e/kWh; EIA 2022: 1,650 Mt CO2 / 4,230,672 GWh.
    assert (gb.grams_per_kwh, gb.year, gb.basis) == (207.07, "2023", "direct") and "DESNZ" in gb.source
    assert us.grams_per_kwh == round(1650e12 / 4230672e6) and us.year == "2022" and "EIA" in us.source
    # The lifecycle row of the same zone is untouched: the two bases are never one series.
    assert embedded.lookup("GB") is not None and embedded.lookup("GB").grams_per_kwh == 238  # type: ignore[union-attr]
    assert embedded.lookup("DE", "direct") is None and embedded.knows("DE") and not embedded.knows("XX")


def test_lookup_is_case_insensitive_and_unknown_is_none() -> None:
    assert embedded.lookup(" de ") == embedded.lookup("DE")
    assert embedded.lookup("XX") is None


def test_bad_tables_are_refused() -> None:
    header = "zone,name,grams_per_kwh,year,basis,source\n"
    table = embedded.parse_table(
        header + "DE,Germany,381,2023,lifecycle,Ember\nDE,Germany,350,2023,direct,X\n"
    )
    assert (
        table[("DE", "lifecycle")].grams_per_kwh == 381.0 and table[("DE", "direct")].grams_per_kwh == 350.0
    )
    for bad in (
        "DE,Germany,lots,2023,lifecycle,Ember\n",
        "DE,Germany,-1,2023,lifecycle,Ember\n",
        "DE,Germany,381,2023,lifecycle,Ember\nde,Germany,381,2023,lifecycle,Ember\n",
        "DE,Germany,381,2023,combustion,Ember\n",
        "DE,Germany,381,2023\n",
    ):
        with pytest.raises(ValueError, match="line"):
            embedded.parse_table(header + bad)
