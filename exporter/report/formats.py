"""The report as CSV, JSON and Markdown (the HTML page is in exporter.report.html)."""

from __future__ import annotations

import csv
import io
import json
import time
from decimal import Decimal
from typing import Any

from exporter import __version__
from exporter.report.model import FIGURES, Figures, Report, Row

# What each figure means and its unit, for the JSON header, the Markdown legend and docs/report.md.
UNITS = {
    "energy_kwh": "kWh of IT energy (GPU + CPU + DRAM, + the unmetered rest of the node where a BMC is read)",
    "emissions_location_kg": "kg CO2e, location-based (grid average intensity, PUE included)",
    "emissions_market_kg": "kg CO2e, market-based (carbon.market instruments, supplier or residual mix)",
    "embodied_kg": "kg CO2e of manufacturing, amortised over the service life",
    "gpu_energy_kwh": "kWh of GPU energy",
    "cpu_energy_kwh": "kWh of CPU package and DRAM energy",
    "unmetered_energy_kwh": "kWh of node energy outside GPU, CPU and DRAM (BMC reading minus components)",
    "facility_energy_kwh": "kWh at the facility meter: IT energy x PUE",
    "water_l": "litres of site water (IT energy x WUE)",
    "tokens": "generated tokens of the group's pods (vLLM, SGLang, TGI, Triton counters; docs/inference.md)",
    "energy_per_token_j": "GPU joules per generated token, over the pods that report tokens",
    "coverage": "fraction of the period with stored samples of the nodes the group used (energy-weighted)",
}
TOTAL = "total"


def iso(t: float) -> str:
    """RFC 3339 in UTC, to the second (milliseconds when the time has them)."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
    ms = round((t - int(t)) * 1000) if t >= 0 else 0
    return f"{whole}.{ms:03d}Z" if ms and ms < 1000 else f"{whole}Z"


def number(value: float | None) -> str:
    """A plain decimal for spreadsheets (no exponent), up to 9 decimals; empty for a missing figure."""
    if value is None:
        return ""
    rounded = round(value, 9)
    if rounded == 0:
        return "0"
    if rounded.is_integer():
        return str(int(rounded))
    # The shortest decimal that reads back as the same float, written out without an exponent.
    return format(Decimal(repr(rounded)), "f")


def display_group(row: Row) -> str:
    if row.kind == "unattributed":
        return row.group
    return row.group or "(none)"


def to_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([report.by, *FIGURES, "notes", "row"])
    for row in report.rows:
        figures = row.figures.as_dict()
        writer.writerow([row.group, *(number(figures[f]) for f in FIGURES), ";".join(row.notes), row.kind])
    totals = report.total.as_dict()
    writer.writerow([TOTAL, *(number(totals[f]) for f in FIGURES), "", TOTAL])
    return out.getvalue()


def _figures_json(figures: Figures) -> dict[str, float | None]:
    return figures.as_dict()


def to_json_data(report: Report) -> dict[str, Any]:
    return {
        "report": {
            "by": report.by,
            "from": iso(report.start),
            "to": iso(report.end),
            "match": report.match,
            "prometheus_url": report.prometheus_url,
            "generated_at": iso(report.generated_at),
            "version": __version__,
            "units": UNITS,
        },
        "rows": [
            {
                report.by: row.group,
                "row": row.kind,
                **_figures_json(row.figures),
                "notes": list(row.notes),
                "instances": list(row.instances),
            }
            for row in report.rows
        ],
        "total": _figures_json(report.total),
        "factors": [
            {
                "kind": f.kind,
                "name": f.name,
                "value": f.value,
                "unit": f.unit,
                "min": f.minimum,
                "max": f.maximum,
                "provider": f.provider,
                "signal": f.signal,
                "basis": f.basis,
                "source": f.source,
                "year": f.year,
                "share": f.share,
                "instances": list(f.instances),
            }
            for f in report.factors
        ],
        "quality": {
            "coverage": report.coverage,
            "coverage_step_seconds": report.coverage_step_s,
            "notes": [
                {"code": n.code, "severity": n.severity, "text": n.text, "instances": list(n.instances)}
                for n in report.notes
            ],
        },
        "daily": [{"from": iso(b.start), "to": iso(b.end), "energy_kwh": b.energy_kwh} for b in report.daily],
    }


def to_json(report: Report) -> str:
    return json.dumps(to_json_data(report), indent=2, allow_nan=False) + "\n"


def fixed(value: float | None, digits: int = 3) -> str:
    """A figure for people: fixed decimals, a dash when missing."""
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


# The columns people read first, with their headings; every figure is in the CSV and JSON.
TABLE = (
    ("energy_kwh", "IT energy (kWh)", 3),
    ("facility_energy_kwh", "Facility energy (kWh)", 3),
    ("emissions_location_kg", "Location-based (kg CO2e)", 3),
    ("emissions_market_kg", "Market-based (kg CO2e)", 3),
    ("embodied_kg", "Embodied (kg CO2e)", 3),
    ("water_l", "Water (L)", 1),
    ("energy_per_token_j", "J per token", 3),
)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(report: Report) -> str:
    lines = [
        f"# AI footprint by {report.by}, {iso(report.start)} to {iso(report.end)}",
        "",
        f"From the counters stored in Prometheus ({report.prometheus_url})"
        + (f", series matching `{{{report.match}}}`" if report.match else "")
        + f"; generated {iso(report.generated_at)} by footprint-exporter {__version__}.",
        "",
        "| " + " | ".join([report.by, *(h for _, h, _ in TABLE), "Coverage", "Notes"]) + " |",
        "|" + "---|" + "---:|" * (len(TABLE) + 1) + "---|",
    ]
    for row in report.rows:
        cells = [_md_cell(display_group(row))]
        cells += [fixed(getattr(row.figures, name), digits) for name, _, digits in TABLE]
        cells += [percent(row.figures.coverage), _md_cell(", ".join(row.notes))]
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["**total**"]
    cells += [f"**{fixed(getattr(report.total, name), digits)}**" for name, _, digits in TABLE]
    cells += [percent(report.total.coverage), ""]
    lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Data quality", ""]
    if report.notes:
        lines += [f"- **{n.code}** ({n.severity}): {_md_cell(n.text)}" for n in report.notes]
    else:
        lines.append("- No findings: every node covered the whole period with measured devices.")
    if report.coverage:
        lines += ["", "| node | coverage |", "|---|---:|"]
        lines += [f"| {_md_cell(i)} | {percent(c)} |" for i, c in sorted(report.coverage.items())]
    lines += ["", "## Factors used", ""]
    if report.factors:
        lines += [
            "| kind | name | value | unit | min | max | provider | signal | basis | source | year | share |",
            "|---|---|---:|---|---:|---:|---|---|---|---|---|---:|",
        ]
        for f in report.factors:
            cells = [
                f.kind,
                f.name,
                fixed(f.value, 3),
                f.unit,
                fixed(f.minimum, 3),
                fixed(f.maximum, 3),
                f.provider,
                f.signal,
                f.basis or "not stated",
                f.source,
                f.year,
                percent(f.share),
            ]
            lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    else:
        lines.append("No factor series were stored for the period.")
    lines += ["", "## Columns", ""]
    lines += [f"- `{name}`: {text}" for name, text in UNITS.items()]
    return "\n".join(lines) + "\n"
