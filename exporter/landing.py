"""The landing page at ``/``: this node's power, energy and emissions since start, carbon source, warnings.

Built from the latest snapshot only (no I/O, like a scrape), as plain HTML without scripts or external files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from html import escape

from exporter import __version__
from exporter.carbon.status import basis_of, carbon_warnings
from exporter.model import Snapshot

JOULES_PER_KWH = 3.6e6
CSP = "default-src 'none'; style-src 'unsafe-inline'"
REFRESH_S = 15

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 900px;
  padding: 0 16px; color: #1b1b1b; }
h1 { font-size: 22px; margin: 0; } h2 { font-size: 17px; margin: 24px 0 8px; }
.meta { color: #555; margin: 2px 0 16px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 160px; }
.card b { display: block; font-size: 22px; } .card span { color: #555; font-size: 12px; }
.warning { border-left: 4px solid #D55E00; background: #fff4ec; padding: 6px 10px; margin: 6px 0; }
.info { border-left: 4px solid #0072B2; background: #eef6fb; padding: 6px 10px; margin: 6px 0; }
.ok { border-left: 4px solid #009E73; padding: 6px 10px; margin: 6px 0; }
table { border-collapse: collapse; font-size: 14px; }
th, td { border-bottom: 1px solid #e4e4e4; padding: 4px 10px; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
"""


@dataclass(frozen=True, slots=True)
class Totals:
    """This node's figures in the snapshot; None where the node does not measure it."""

    power_w: float | None
    node_power_w: float | None
    energy_kwh: float
    emissions_kg: float | None
    market_kg: float | None
    embodied_kg: float | None
    water_l: float | None


def node_totals(snap: Snapshot) -> Totals:
    """Sum the snapshot's counters: GPUs + CPU packages (+ the unmetered rest when a BMC is read)."""
    # Devices never measured serve no energy series (no silent zeros); they add nothing here either.
    gpus = [g for g in snap.gpus if g.measured]
    cpus = [c for c in snap.cpus if c.measured]
    powers = [g.reading.power_w for g in gpus if g.reading.up and g.reading.power_w is not None]
    powers += [c.reading.power_w for c in cpus if c.reading.power_w is not None and c.energy_method != "none"]
    energy_j = sum(g.energy_j_total for g in gpus) + sum(c.energy_j_total for c in cpus)
    emissions: float | None = None
    embodied: float | None = None
    if snap.intensities:
        emissions = sum(g.emissions_g_total for g in gpus) + sum(c.emissions_g_total for c in cpus)
        embodied = sum(g.embodied_emissions_g_total for g in gpus) + (
            snap.node_embodied_emissions_g_total or 0
        )
    node_power = None
    if snap.node is not None:
        energy_j += snap.node.unmetered_energy_j_total
        if snap.node.unmetered_emissions_g_total is not None and emissions is not None:
            emissions += snap.node.unmetered_emissions_g_total
        node_power = snap.node.power_w if snap.node.fresh else None
    # Market-based counters exist only with carbon.market; a device without one leaves the sum undefined.
    market_parts = [g.market_emissions_g_total for g in gpus] + [c.market_emissions_g_total for c in cpus]
    market = None
    if market_parts and all(m is not None for m in market_parts):
        market = sum(float(m) for m in market_parts if m is not None)
    return Totals(
        power_w=sum(powers) if powers else None,
        node_power_w=node_power,
        energy_kwh=energy_j / JOULES_PER_KWH,
        emissions_kg=None if emissions is None else emissions / 1000,
        market_kg=None if market is None else market / 1000,
        embodied_kg=None if embodied is None else embodied / 1000,
        water_l=snap.water_litres_total,
    )


def _fmt(value: float | None, digits: int | None, unit: str) -> str:
    """A figure with its unit; digits None: three decimals, six below 1 (a fresh node's first watt-hours)."""
    if value is None:
        return "not measured"
    if digits is None:
        digits = 3 if abs(value) >= 1 or value == 0 else 6
    return f"{value:,.{digits}f} {unit}"


def _card(value: str, caption: str) -> str:
    return f'<div class="card"><b>{escape(value)}</b><span>{escape(caption)}</span></div>'


def device_warnings(snap: Snapshot) -> list[tuple[str, str]]:
    """(severity, text) about devices and sources: down, lost, or giving no measurement."""
    found: list[tuple[str, str]] = []
    for g in snap.gpus:
        r = g.reading
        if not r.up:
            found.append(
                ("warning", f"GPU {r.index} ({r.uuid}) is down: {r.error or 'no answer'}; no energy accrues")
            )
        elif g.energy_method == "none" or (r.power_w is None and r.energy_j is None):
            reason = g.unmeasured_reason or "no_power_or_energy"
            found.append(
                (
                    "warning",
                    f"GPU {r.index} ({r.name or r.uuid}) is not measured now ({reason}): no energy or "
                    "emissions accrue for it",
                )
            )
    for c in snap.cpus:
        if c.energy_method == "none":
            reason = c.unmeasured_reason or "no_power_or_energy"
            found.append(("warning", f"CPU domain {c.reading.package} is not measured now ({reason})"))
    for s in snap.sources:
        if not s.up:
            found.append(("warning", f"source {s.name} is down: its devices' series are left out"))
    if snap.gpu_source == "none" and not snap.gpus:
        found.append(("info", "no GPU source (NVML not loaded, or --source.gpu=none): CPU energy only"))
    if snap.node is not None and not snap.node.fresh:
        found.append(
            ("warning", f"the BMC ({snap.node.method}) has not answered lately: node power is stale")
        )
    return found


def render_landing(
    snap: Snapshot,
    telemetry_path: str = "/metrics",
    started_at: float | None = None,
    now: float | None = None,
) -> bytes:
    """The page as UTF-8 bytes."""
    now = time.time() if now is None else now
    totals = node_totals(snap)
    since = (
        f"since {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(started_at))}"
        if started_at is not None
        else "since start"
    )
    power = totals.node_power_w if totals.node_power_w is not None else totals.power_w
    power_caption = (
        "power now (whole node, BMC)" if totals.node_power_w is not None else "power now (GPU + CPU)"
    )
    cards = "".join(
        [
            _card(_fmt(power, 0, "W"), power_caption),
            _card(_fmt(totals.energy_kwh, None, "kWh"), f"energy {since}"),
            _card(_fmt(totals.emissions_kg, None, "kg"), "CO2e location-based (PUE included)"),
            _card(_fmt(totals.market_kg, None, "kg"), "CO2e market-based (carbon.market)"),
            _card(_fmt(totals.embodied_kg, None, "kg"), "CO2e embodied"),
            _card(_fmt(totals.water_l, 1, "L"), "water (carbon.wue)"),
        ]
    )
    warnings = [
        (("warning" if w.level >= 30 else "info"), w.text)
        for w in carbon_warnings(snap.intensities, snap.providers)
    ]
    warnings += device_warnings(snap)
    # The sampler's snapshot before its first tick has a timestamp (/healthz measures stalls from it) but
    # nothing sampled: that page must not claim fresh data.
    age = now - snap.timestamp if snap.samples_total else None
    if age is None:
        warnings.append(("warning", "no sample taken yet"))
    notes = "\n".join(f'<p class="{sev}">{escape(text)}</p>' for sev, text in warnings) or (
        '<p class="ok">No data-quality warnings: measured devices, a zone-specific intensity, fresh data.</p>'
    )
    carbon_rows = (
        "".join(
            f"<tr><td>{escape(i.signal)}</td><td>{escape(i.zone)}</td><td>{escape(i.provider)}</td>"
            f"<td>{escape(basis_of(i))}</td><td class='n'>{i.grams_per_kwh:,.1f}</td>"
            f"<td class='n'>{_age(i.age_s)}</td>"
            f"<td>{escape(' '.join(x for x in (i.source, i.year) if x))}</td></tr>"
            for i in snap.intensities
        )
        or "<tr><td colspan='7'>no carbon accounting</td></tr>"
    )
    gpu_rows = "".join(
        f"<tr><td>{g.reading.index}</td><td>{escape(g.reading.name)}</td>"
        f"<td class='n'>{_fmt(g.reading.power_w if g.reading.up else None, 0, 'W')}</td>"
        f"<td class='n'>{_fmt(g.energy_j_total / JOULES_PER_KWH, None, 'kWh')}</td>"
        f"<td class='n'>{_fmt(g.emissions_g_total / 1000 if snap.intensities else None, None, 'kg')}</td>"
        f"<td>{'up' if g.reading.up else 'down'}</td></tr>"
        for g in snap.gpus
    )
    gpus = (
        "<table><tr><th>GPU</th><th>name</th><th>power</th><th>energy</th><th>CO2e</th><th>state</th></tr>"
        f"{gpu_rows}</table>"
        if gpu_rows
        else "<p>No GPUs.</p>"
    )
    sample = f"last sample {age:.0f} s ago" if age is not None else "no sample yet"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta http-equiv="refresh" content="{REFRESH_S}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>AI Footprint Exporter</title><style>{STYLE}</style></head>
<body>
<h1>AI Footprint Exporter</h1>
<p class="meta">This node now, {escape(sample)}; version {escape(__version__)},
GPU source {escape(snap.gpu_source)}, PUE {snap.pue:g}. Figures are totals {escape(since)} (kWh and
kg CO2e); they are the counters on
<a href="{escape(telemetry_path)}">{escape(telemetry_path)}</a>.</p>
<div class="cards">{cards}</div>
<h2>Data quality</h2>
{notes}
<h2>Carbon intensity in use</h2>
<table><tr><th>signal</th><th>zone</th><th>provider</th><th>basis</th><th>g/kWh</th><th>age</th><th>source</th></tr>
{carbon_rows}</table>
<h2>GPUs</h2>
{gpus}
<h2>More</h2>
<ul><li><a href="{escape(telemetry_path)}">Metrics</a> (for Prometheus)</li>
<li><a href="/healthz">Health</a></li>
<li>A period's report for a sustainability team: <code>footprint-exporter report --help</code></li></ul>
</body></html>
"""
    return page.encode("utf-8")


def _age(seconds: float) -> str:
    if seconds >= 86400 * 365:
        return f"{seconds / (86400 * 365.25):.1f} y"
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds:.0f} s"
