"""Pure arithmetic of the report: counter increases per (group, instance) in; rows, totals and notes out."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from exporter.report.model import FIGURES, UNATTRIBUTED, Figures, Row

JOULES_PER_KWH = 3.6e6
# A group's coverage below this counts as a gap worth a note (one missing 5-minute step in a day is 0.35%).
COVERAGE_OK = 0.99

ENERGY_PARTS = ("energy_gpu", "energy_cpu", "energy_unmetered")
LOCATION_PARTS = ("loc_gpu", "loc_cpu", "loc_unmetered")
MARKET_PARTS = ("mkt_gpu", "mkt_cpu")
EMBODIED_PARTS = ("emb_gpu", "emb_node")

# Energy columns that break the energy down by device; every other figure is all-or-nothing in the totals.
BREAKDOWN = ("gpu_energy_kwh", "cpu_energy_kwh", "unmetered_energy_kwh")

# Key of a stored increase: (group label value, instance).
Key = tuple[str, str]


@dataclass
class Stored:
    """What Prometheus holds for the period, as increases of the exporters' counters.

    ``parts`` maps a part name (``energy_gpu``, ``loc_cpu``, ``water``, ...) to the increase per
    (group, instance): from the per-process counters when grouping by a workload label, from the node
    counters otherwise. A part missing for an instance means its exporter did not serve that counter (no
    market configuration, no BMC, no WUE...). ``node`` holds the node counters per instance for the
    workload case, from which the unattributed row is taken (node total minus what workloads got).
    """

    workload: bool
    parts: dict[str, dict[Key, float]] = field(default_factory=dict)
    node: dict[str, dict[str, float]] = field(default_factory=dict)
    pue: dict[str, float] = field(default_factory=dict)  # instance -> time-weighted mean PUE
    coverage: dict[str, float] = field(default_factory=dict)  # instance -> fraction of the period
    tokens: dict[tuple[str, str], float] = field(default_factory=dict)  # (namespace, pod) -> tokens
    pod_energy: dict[tuple[str, str, str], float] = field(default_factory=dict)  # (group, ns, pod) -> J
    instance_notes: dict[str, set[str]] = field(default_factory=dict)  # instance -> note codes


def _instances(stored: Stored) -> set[str]:
    seen = {inst for values in stored.parts.values() for _, inst in values}
    return seen | {inst for values in stored.node.values() for inst in values}


def _node_part(stored: Stored, part: str, instance: str) -> float | None:
    values = stored.node.get(part) if stored.workload else None
    if stored.workload:
        return None if values is None else values.get(instance)
    # Grouping by a node label: the node's value is the sum over the groups it appears in (one, usually).
    found = [v for (_, inst), v in stored.parts.get(part, {}).items() if inst == instance]
    return sum(found) if found else None


def _node_energy(stored: Stored) -> dict[str, float]:
    """Instance -> its measured energy (GPU + CPU + unmetered), joules."""
    parts = ENERGY_PARTS
    return {inst: sum(_node_part(stored, p, inst) or 0.0 for p in parts) for inst in _instances(stored)}


def _has(stored: Stored, parts: Iterable[str], instance: str) -> bool:
    """Whether the instance's exporter served any of these node counters (the figure is configured there)."""
    return any(_node_part(stored, part, instance) is not None for part in parts)


@dataclass
class _Cell:
    """One row's parts on one instance."""

    values: dict[str, float] = field(default_factory=dict)

    def sum(self, parts: Iterable[str]) -> float:
        return sum(self.values.get(p, 0.0) for p in parts)


def _cells(stored: Stored) -> dict[str, dict[str, _Cell]]:
    """Row key -> instance -> the row's parts there; the unattributed row is node minus workloads."""
    cells: dict[str, dict[str, _Cell]] = defaultdict(lambda: defaultdict(_Cell))
    for part, values in stored.parts.items():
        for (group, instance), value in values.items():
            cells[group][instance].values[part] = value
    if not stored.workload:
        return cells
    for instance in _instances(stored):
        rest = _Cell()
        for part in (*ENERGY_PARTS, *LOCATION_PARTS, *MARKET_PARTS, *EMBODIED_PARTS):
            node_value = _node_part(stored, part, instance)
            if node_value is None:
                continue
            attributed = sum(v for (_, inst), v in stored.parts.get(part, {}).items() if inst == instance)
            rest.values[part] = node_value - attributed
        if rest.values:
            cells[UNATTRIBUTED][instance] = rest
    return cells


def _row_figures(
    stored: Stored, by_instance: Mapping[str, _Cell], energy_by_instance: Mapping[str, float]
) -> tuple[Figures, set[str]]:
    notes: set[str] = set()
    energy_j = {inst: cell.sum(ENERGY_PARTS) for inst, cell in by_instance.items()}
    used = [inst for inst, e in energy_j.items() if e > 0] or list(by_instance)
    for inst in used:
        notes |= stored.instance_notes.get(inst, set())

    def kwh(parts: Iterable[str]) -> float | None:
        # Zero where the nodes measure the part and the group got none of it (a CPU-only job's GPU energy);
        # None where no node of the group measures it at all (no BMC: no unmetered energy).
        names = tuple(parts)
        present = any(p in cell.values for cell in by_instance.values() for p in names)
        if not present and not any(_has(stored, names, inst) for inst in by_instance):
            return None
        return sum(cell.sum(names) for cell in by_instance.values()) / JOULES_PER_KWH

    def grams_to_kg(parts: tuple[str, ...], code: str) -> float | None:
        # Available only where every instance the row used served these counters: a partial sum would
        # pass for the whole.
        missing = [inst for inst in used if not _has(stored, parts, inst)]
        if missing:
            notes.add(code)
            return None
        return sum(cell.sum(parts) for cell in by_instance.values()) / 1000.0

    facility: float | None = None
    if all(inst in stored.pue for inst in used):
        facility = sum(energy_j[inst] * stored.pue[inst] for inst in by_instance) / JOULES_PER_KWH
    else:
        notes.add("pue_missing")

    water: float | None = None
    if all(_has(stored, ("water",), inst) for inst in used):
        if stored.workload:
            # Site water (IT energy x WUE) is a node figure: a workload gets the node's water in
            # proportion to the energy it was charged with there.
            total = 0.0
            for inst, e in energy_j.items():
                node_e = energy_by_instance.get(inst, 0.0)
                node_w = _node_part(stored, "water", inst) or 0.0
                total += node_w * e / node_e if node_e > 0 else 0.0
            water = total
        else:
            water = sum(cell.values.get("water", 0.0) for cell in by_instance.values())
    else:
        notes.add("water_missing")

    covered = [inst for inst in used if inst in stored.coverage]
    coverage: float | None = None
    if covered:
        weights = [max(energy_j.get(inst, 0.0), 0.0) for inst in covered]
        if sum(weights) <= 0:
            weights = [1.0] * len(covered)
        coverage = sum(w * stored.coverage[i] for w, i in zip(weights, covered, strict=True)) / sum(weights)
        if coverage < COVERAGE_OK:
            notes.add("coverage_gap")

    figures = Figures(
        energy_kwh=kwh(ENERGY_PARTS),
        emissions_location_kg=grams_to_kg(LOCATION_PARTS, "no_intensity"),
        emissions_market_kg=grams_to_kg(MARKET_PARTS, "market_missing"),
        embodied_kg=grams_to_kg(EMBODIED_PARTS, "embodied_missing"),
        gpu_energy_kwh=kwh(("energy_gpu",)),
        cpu_energy_kwh=kwh(("energy_cpu",)),
        unmetered_energy_kwh=kwh(("energy_unmetered",)),
        facility_energy_kwh=facility,
        water_l=water,
        coverage=coverage,
    )
    return figures, notes


def _tokens(stored: Stored) -> dict[str, tuple[float, float]]:
    """Group -> (tokens, GPU joules of the pods that reported them).

    A pod's tokens are shared among the groups its GPU energy was charged to, in proportion to that energy
    (one group, unless the grouping label splits a pod, as ``user`` can).
    """
    pod_total: dict[tuple[str, str], float] = defaultdict(float)
    for (_, ns, pod), joules in stored.pod_energy.items():
        pod_total[(ns, pod)] += joules
    out: dict[str, tuple[float, float]] = {}
    for (group, ns, pod), joules in stored.pod_energy.items():
        tokens = stored.tokens.get((ns, pod))
        if tokens is None or pod_total[(ns, pod)] <= 0:
            continue
        share = joules / pod_total[(ns, pod)]
        had = out.get(group, (0.0, 0.0))
        out[group] = (had[0] + tokens * share, had[1] + joules)
    return out


def build_rows(stored: Stored) -> list[Row]:
    """The report's rows, largest energy first, the unattributed row last."""
    cells = _cells(stored)
    node_energy = _node_energy(stored)
    tokens = _tokens(stored)
    rows = []
    for key, by_instance in cells.items():
        figures, notes = _row_figures(stored, by_instance, node_energy)
        kind = "unattributed" if stored.workload and key == UNATTRIBUTED else "group"
        if kind == "group" and key in tokens and tokens[key][0] > 0:
            count, joules = tokens[key]
            figures = _replace(figures, tokens=count, energy_per_token_j=joules / count)
        if kind == "unattributed" and (figures.energy_kwh or 0.0) < 0:
            notes.add("attributed_exceeds_measured")
        rows.append(Row(key, kind, figures, tuple(sorted(notes)), tuple(sorted(by_instance))))
    rows.sort(key=lambda r: (r.kind == "unattributed", -(r.figures.energy_kwh or 0.0), r.group))
    return rows


def _replace(figures: Figures, **changes: float | None) -> Figures:
    values = figures.as_dict()
    values.update(changes)
    return Figures(**values)


def total_of(rows: list[Row], stored: Stored) -> Figures:
    """The totals: each figure summed over the rows; None if a row's is None (a partial sum is no total)."""
    values: dict[str, float | None] = {}
    for name in FIGURES:
        if name in ("coverage", "energy_per_token_j", "tokens"):
            continue
        column = [getattr(r.figures, name) for r in rows]
        if name in BREAKDOWN:
            # Parts of the energy: the sum of what the nodes measure (the notes name nodes without a BMC).
            known = [v for v in column if v is not None]
            values[name] = sum(known) if known else None
        else:
            values[name] = None if not column or any(v is None for v in column) else sum(column)
    token_pairs = _tokens(stored).values()
    count = sum(t for t, _ in token_pairs)
    values["tokens"] = count if count > 0 else None
    values["energy_per_token_j"] = sum(j for _, j in token_pairs) / count if count > 0 else None
    # Energy-weighted over the instances, as for a row.
    node_energy = _node_energy(stored)
    covered = sorted(stored.coverage)
    if covered:
        weights = [max(node_energy.get(i, 0.0), 0.0) for i in covered]
        if sum(weights) <= 0:
            weights = [1.0] * len(covered)
        values["coverage"] = sum(w * stored.coverage[i] for w, i in zip(weights, covered, strict=True)) / sum(
            weights
        )
    else:
        values["coverage"] = None
    return Figures(**values)
