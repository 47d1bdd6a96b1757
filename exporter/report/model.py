"""The report as plain data: rows of figures per group, totals, factors, quality notes and chart series."""

from __future__ import annotations

from dataclasses import dataclass, field

# The figures of a row, in the order the CSV and JSON carry them. The first four after the group's label
# are the contract's (docs/report.md); the rest add what a sustainability report needs.
FIGURES = (
    "energy_kwh",
    "emissions_location_kg",
    "emissions_market_kg",
    "embodied_kg",
    "gpu_energy_kwh",
    "cpu_energy_kwh",
    "unmetered_energy_kwh",
    "facility_energy_kwh",
    "water_l",
    "tokens",
    "energy_per_token_j",
    "coverage",
)

UNATTRIBUTED = "(unattributed)"


@dataclass(frozen=True, slots=True)
class Figures:
    """One row's figures; None means "not available" (never a silent zero): the notes say why."""

    energy_kwh: float | None = None
    emissions_location_kg: float | None = None
    emissions_market_kg: float | None = None
    embodied_kg: float | None = None
    gpu_energy_kwh: float | None = None
    cpu_energy_kwh: float | None = None
    unmetered_energy_kwh: float | None = None
    facility_energy_kwh: float | None = None
    water_l: float | None = None
    tokens: float | None = None
    energy_per_token_j: float | None = None
    coverage: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {name: getattr(self, name) for name in FIGURES}


@dataclass(frozen=True, slots=True)
class Row:
    """One group: its label value ("" when its series lack the label) and its figures.

    ``kind`` is "group" for a value of the grouping label, or "unattributed" for the node energy no
    workload was charged with (idle GPUs, CPU idle power, the unmetered rest of the node) when grouping by
    a workload label.
    """

    group: str
    kind: str
    figures: Figures
    notes: tuple[str, ...] = ()
    instances: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Note:
    """A data-quality finding: a stable code, a sentence, and the instances it concerns."""

    code: str
    text: str
    instances: tuple[str, ...] = ()
    severity: str = "warning"  # "warning" (the figures are affected) or "info"


@dataclass(frozen=True, slots=True)
class Factor:
    """A factor the figures rest on, with where it comes from, as the exporters stated it."""

    kind: str  # grid_intensity, pue, or a footprint_emission_factor kind
    name: str  # zone for grid intensity; the factor's name otherwise
    value: float | None  # time-weighted mean over the period (grid intensity) or the value
    unit: str
    minimum: float | None = None
    maximum: float | None = None
    provider: str = ""
    signal: str = ""
    basis: str = ""
    source: str = ""
    year: str = ""
    share: float | None = None  # fraction of the period's intensity samples that used it
    instances: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ChartSeries:
    """One line or bar series of a chart: a name and (unix seconds, value) points."""

    name: str
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class Bucket:
    """A part of the period (a UTC day, clipped to the period) and each group's energy in it, kWh."""

    start: float
    end: float
    energy_kwh: dict[str, float]


@dataclass
class Report:
    by: str
    start: float
    end: float
    prometheus_url: str
    generated_at: float
    match: str = ""
    rows: list[Row] = field(default_factory=list)
    total: Figures = field(default_factory=Figures)
    factors: list[Factor] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    coverage: dict[str, float] = field(default_factory=dict)  # instance -> fraction of the period
    daily: list[Bucket] = field(default_factory=list)
    intensity: list[ChartSeries] = field(default_factory=list)
    budgets: list[ChartSeries] = field(default_factory=list)
    coverage_step_s: float = 0.0
