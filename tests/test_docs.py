"""The README's generated tables match the code; every catalogue metric is documented and served."""

from __future__ import annotations

from pathlib import Path

from exporter.catalogue import CATALOGUE
from exporter.config import FLAGS
from exporter.docs import render

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_tables_are_up_to_date() -> None:
    text = README.read_text(encoding="utf-8")
    assert render(text) == text, "README tables are stale: run `python -m exporter.docs`"


def test_every_metric_and_flag_appears_in_readme() -> None:
    text = README.read_text(encoding="utf-8")
    for name in CATALOGUE:
        assert f"`{name}`" in text
    for flag in FLAGS:
        assert f"`--{flag.name}`" in text


def test_catalogue_follows_naming_conventions() -> None:
    for spec in CATALOGUE.values():
        assert spec.name.startswith("footprint_")
        assert (spec.type == "counter") == spec.name.endswith("_total"), spec.name
        if spec.type == "info":
            assert spec.name.endswith("_info"), spec.name
        assert spec.help.endswith("."), spec.name
