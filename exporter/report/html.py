"""The report as one self-contained HTML page: inline CSS and SVG charts, no script, font or external file."""

from __future__ import annotations

from html import escape

from exporter import __version__
from exporter.report.formats import TABLE, UNITS, display_group, fixed, iso, percent
from exporter.report.model import Report
from exporter.report.svg import lines, stacked_bars

# The page may load nothing at all: a browser refuses (and logs) any fetch, so a page that renders
# completely under this policy is provably self-contained.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 980px;
  color: #1b1b1b; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.meta { color: #555; margin: 0 0 16px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 12px; min-width: 150px; }
.card b { display: block; font-size: 20px; } .card span { color: #555; font-size: 12px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { border-bottom: 1px solid #e4e4e4; padding: 4px 6px; text-align: left; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: 600; border-top: 2px solid #999; }
tr.unattributed td { color: #555; font-style: italic; }
.warning { border-left: 4px solid #D55E00; padding: 2px 8px; margin: 6px 0; }
.info { border-left: 4px solid #0072B2; padding: 2px 8px; margin: 6px 0; }
svg.chart { max-width: 100%; height: auto; display: block; margin: 6px 0 12px; }
svg .tick, svg .legend, svg .unit { font: 11px system-ui, sans-serif; fill: #333; }
svg .grid { stroke: #eee; } svg .axis { stroke: #888; }
svg .reference { stroke: #D55E00; stroke-dasharray: 6 4; }
.small { color: #555; font-size: 12px; }
"""


def _card(value: str, caption: str) -> str:
    return f'<div class="card"><b>{escape(value)}</b><span>{escape(caption)}</span></div>'


def _rows_table(report: Report) -> str:
    head = "".join(f'<th class="n">{escape(h)}</th>' for _, h, _ in TABLE)
    out = [
        "<table><thead><tr>",
        f"<th>{escape(report.by)}</th>{head}<th class='n'>Coverage</th><th>Notes</th>",
        "</tr></thead><tbody>",
    ]
    for row in report.rows:
        cells = "".join(f'<td class="n">{fixed(getattr(row.figures, n), d)}</td>' for n, _, d in TABLE)
        out.append(
            f'<tr class="{row.kind}"><td>{escape(display_group(row))}</td>{cells}'
            f'<td class="n">{percent(row.figures.coverage)}</td><td>{escape(", ".join(row.notes))}</td></tr>'
        )
    cells = "".join(f'<td class="n">{fixed(getattr(report.total, n), d)}</td>' for n, _, d in TABLE)
    out.append(
        f'<tr class="total"><td>total</td>{cells}'
        f'<td class="n">{percent(report.total.coverage)}</td><td></td></tr>'
    )
    out.append("</tbody></table>")
    return "\n".join(out)


def _factors_table(report: Report) -> str:
    if not report.factors:
        return "<p>No factor series were stored for the period.</p>"
    out = [
        "<table><thead><tr><th>kind</th><th>name</th><th class='n'>value</th><th>unit</th>"
        "<th class='n'>min</th><th class='n'>max</th><th>provider</th><th>signal</th><th>basis</th>"
        "<th>source</th><th>year</th><th class='n'>share</th><th>nodes</th></tr></thead><tbody>"
    ]
    for f in report.factors:
        cells = [
            escape(f.kind),
            escape(f.name),
            fixed(f.value),
            escape(f.unit),
            fixed(f.minimum),
            fixed(f.maximum),
            escape(f.provider),
            escape(f.signal),
            escape(f.basis or "not stated"),
            escape(f.source),
            escape(f.year),
            percent(f.share),
            str(len(f.instances)) if f.instances else "",
        ]
        numeric = {2, 4, 5, 11}
        out.append(
            "<tr>"
            + "".join(
                f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(cells)
            )
            + "</tr>"
        )
    out.append("</tbody></table>")
    return "\n".join(out)


def _notes(report: Report) -> str:
    if not report.notes:
        return "<p>No findings: every node covered the whole period with measured devices.</p>"
    return "\n".join(
        f'<p class="{n.severity}"><b>{escape(n.code)}</b>: {escape(n.text)}</p>' for n in report.notes
    )


def _charts(report: Report) -> str:
    out = ["<h2>Energy per day</h2>"]
    if report.daily:
        out.append(stacked_bars(f"IT energy per day by {report.by}", report.daily))
    else:
        out.append("<p>No energy stored in the period.</p>")
    out.append("<h2>Grid carbon intensity</h2>")
    if report.intensity:
        out.append(
            lines("Grid carbon intensity in use", report.intensity, "gCO2e/kWh", report.start, report.end)
        )
    else:
        out.append("<p>No intensity series stored in the period.</p>")
    out.append("<h2>Carbon budgets</h2>")
    if report.budgets:
        out.append(
            lines(
                "Carbon budget usage", report.budgets, "% of budget", report.start, report.end, 100.0, 100.0
            )
        )
    else:
        out.append(
            "<p>No budget series (footprint:budget_usage:ratio) in the period: no budgets configured.</p>"
        )
    return "\n".join(out)


def to_html(report: Report) -> str:
    t = report.total
    title = f"AI footprint by {report.by}, {iso(report.start)} to {iso(report.end)}"
    cards = "".join(
        [
            _card(f"{fixed(t.energy_kwh)} kWh", "IT energy"),
            _card(f"{fixed(t.facility_energy_kwh)} kWh", "facility energy (x PUE)"),
            _card(f"{fixed(t.emissions_location_kg)} kg", "CO2e location-based"),
            _card(f"{fixed(t.emissions_market_kg)} kg", "CO2e market-based"),
            _card(f"{fixed(t.embodied_kg)} kg", "CO2e embodied"),
            _card(f"{fixed(t.water_l, 1)} L", "water"),
            _card(percent(t.coverage), "data coverage"),
        ]
    )
    match = f", series matching <code>{{{escape(report.match)}}}</code>" if report.match else ""
    legend = "".join(f"<li><code>{escape(k)}</code>: {escape(v)}</li>" for k, v in UNITS.items())
    coverage = "".join(
        f"<tr><td>{escape(i)}</td><td class='n'>{percent(c)}</td></tr>"
        for i, c in sorted(report.coverage.items())
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{STYLE}</style></head>
<body>
<h1>{escape(title)}</h1>
<p class="meta">From the counters stored in Prometheus ({escape(report.prometheus_url)}){match}; generated
{iso(report.generated_at)} by footprint-exporter {escape(__version__)}. A dash means the figure is not
available (see Data quality), never zero.</p>
<div class="cards">{cards}</div>
<h2>By {escape(report.by)}</h2>
{_rows_table(report)}
{_charts(report)}
<h2>Data quality</h2>
{_notes(report)}
<table><thead><tr><th>node</th><th class="n">coverage</th></tr></thead><tbody>{coverage}</tbody></table>
<p class="small">Coverage: the share of the period's {report.coverage_step_s:g}-second steps in which
Prometheus holds at least one sample of the node's exporter.</p>
<h2>Factors used</h2>
{_factors_table(report)}
<h2>Columns</h2>
<ul class="small">{legend}</ul>
</body></html>
"""
