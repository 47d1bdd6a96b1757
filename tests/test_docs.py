"""The manual's generated tables match the code; every catalogue metric and flag is documented."""

from __future__ import annotations

from exporter.catalogue import CATALOGUE
from exporter.config import FLAGS
from exporter.docs import DOCS, PAGES, render


def test_generated_tables_are_up_to_date() -> None:
    for name, page in PAGES.items():
        text = (DOCS / page).read_text(encoding="utf-8")
        assert render(text, (name,)) == text, f"docs/{page} is stale: run `python -m exporter.docs`"


def test_every_metric_and_flag_is_documented() -> None:
    metrics = (DOCS / "metrics.md").read_text(encoding="utf-8")
    for name in CATALOGUE:
        assert f"`{name}`" in metrics
    flags = (DOCS / "configuration.md").read_text(encoding="utf-8")
    for flag in FLAGS:
        assert f"`--{flag.name}`" in flags


def test_catalogue_follows_naming_conventions() -> None:
    for spec in CATALOGUE.values():
        assert spec.name.startswith("footprint_")
        assert (spec.type == "counter") == spec.name.endswith("_total"), spec.name
        if spec.type == "info":
            assert spec.name.endswith("_info"), spec.name
        assert spec.help.endswith("."), spec.name
