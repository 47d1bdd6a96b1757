"""Embodied (manufacturing) carbon of GPUs and nodes: default figures, model matching, per-second rates."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from exporter.carbon.accounting import embodied_grams

DEFAULT_LIFE_YEARS = 5.0


@dataclass(frozen=True, slots=True)
class EmbodiedFigure:
    """A cradle-to-gate footprint in kg CO2e, its service life, and where the number comes from."""

    key: str  # model name fragment matched against the GPU name, e.g. "H100"
    kg: float
    life_years: float | None = None  # None: carbon.embodied.default_life_years
    basis: str = ""
    year: str = ""  # publication year of the source, where the source is a dated publication


# Per-GPU cradle-to-gate kg CO2e (board, die, memory; no server share). Where no vendor or study
# figure exists, the value is a documented estimate scaled from the nearest published one by die
# and memory size; the README repeats this table with the reasoning so an auditor can replace it.
DEFAULT_GPU_FIGURES: tuple[EmbodiedFigure, ...] = (
    EmbodiedFigure("H100", 164.0, basis="NVIDIA HGX H100 PCF summary, about 1,312 kg per 8-GPU board / 8"),
    EmbodiedFigure("H200", 190.0, basis="estimate: H100 figure + 61 GB more HBM3e"),
    EmbodiedFigure("GH200", 260.0, basis="estimate: H200-class GPU + Grace CPU and LPDDR5X"),
    EmbodiedFigure("B200", 230.0, basis="estimate: two dies and 180-192 GB HBM3e, scaled from H100"),
    EmbodiedFigure("B100", 230.0, basis="estimate: as B200"),
    EmbodiedFigure("GB200", 300.0, basis="estimate: B200 + share of Grace CPU"),
    EmbodiedFigure(
        "A100", 150.0, basis="Luccioni, Viguier, Ligozat 2022 (BLOOM carbon footprint), per GPU", year="2022"
    ),
    EmbodiedFigure("A800", 150.0, basis="estimate: as A100 (same die)"),
    EmbodiedFigure("H800", 164.0, basis="estimate: as H100 (same die)"),
    EmbodiedFigure("A30", 100.0, basis="estimate: GA100 die, 24 GB HBM2, PCIe card"),
    EmbodiedFigure("A40", 100.0, basis="estimate: GA102 die, 48 GB GDDR6, PCIe card"),
    EmbodiedFigure("L40S", 100.0, basis="estimate: AD102 die, 48 GB GDDR6, PCIe card"),
    EmbodiedFigure("L40", 100.0, basis="estimate: as L40S"),
    EmbodiedFigure("A10", 70.0, basis="estimate: GA102 die, 24 GB GDDR6, single-slot card"),
    EmbodiedFigure("L4", 40.0, basis="estimate: AD104 die, 24 GB GDDR6, low-profile card"),
    EmbodiedFigure("V100", 100.0, basis="estimate: GV100 die, 16-32 GB HBM2"),
    EmbodiedFigure("T4", 30.0, basis="estimate: TU104 die, 16 GB GDDR6, low-profile card"),
    EmbodiedFigure("P100", 90.0, basis="estimate: GP100 die, 16 GB HBM2"),
    EmbodiedFigure("MI300X", 250.0, basis="estimate: chiplets and 192 GB HBM3, scaled from H100"),
    EmbodiedFigure("MI250", 200.0, basis="estimate: two dies and 128 GB HBM2e"),
)
# An unknown model is charged more than the widely deployed H100 and A100, so the default errs on
# the side of over-counting rather than hiding a footprint.
UNKNOWN_GPU = EmbodiedFigure("", 200.0, basis="default for unknown models (conservative)")
# Node without its GPUs: CPUs, memory, storage, board, chassis, power supplies.
DEFAULT_NODE = EmbodiedFigure(
    "node", 2500.0, basis="Luccioni, Viguier, Ligozat 2022: GPU server node", year="2022"
)


def _pattern(key: str) -> re.Pattern[str]:
    # The key must not be glued to a letter or digit before it, nor a digit after it: "A10" matches
    # "NVIDIA A10G" but not "A100", "H100" matches "H100-SXM5" but not "GH100x".
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(key)}(?![0-9])", re.IGNORECASE)


def match_gpu(name: str, figures: Sequence[EmbodiedFigure]) -> EmbodiedFigure | None:
    """The figure whose key names this GPU model; the longest matching key wins (L40S over L40)."""
    best: EmbodiedFigure | None = None
    for figure in figures:
        longer = best is None or len(figure.key) > len(best.key)
        if figure.key and longer and _pattern(figure.key).search(name):
            best = figure
    return best


def grams_per_second(figure: EmbodiedFigure, default_life_years: float) -> float:
    """The figure amortised linearly over its service life, grams CO2e per second of service."""
    life = figure.life_years if figure.life_years is not None else default_life_years
    return embodied_grams(figure.kg, life, 1.0)
