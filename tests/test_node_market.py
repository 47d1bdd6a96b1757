"""Market-based Scope 2 of the whole node and of its unmetered energy (carbon.market with a node source),
against hand-computed figures of the worked example's market, across an hour whose factor changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.carbon.config import parse_carbon_config
from exporter.carbon.service import CarbonService
from tests.metrics_text import parse, select
from tests.test_carbon_market import DAY, HOUR, MARKET
from tests.test_node_power import exposition
from tests.test_node_spread import attribution, run

PUE = 1.2
KWH = 3.6e6
# The BMC's intervals [0.5, 10.5] and [10.5, 20.5] begin 5 s before 08:00 UTC: the first is half in hour 7
# (market factor 0.5 x 250 = 125 g/kWh), half in hour 8 (wind 0.5 and solar 0.4 at 0 g, 0.1 x 250 =
# 25 g/kWh): 75 g/kWh over the interval; the second is all in hour 8: 25 g/kWh.
WALL0 = DAY + 8 * HOUR - 5.5
FACTORS = (75.0, 25.0)
NODE_J = (6000.0, 7000.0)  # readings 600, 600, 800 W at t = 0.5, 10.5, 20.5
UNMETERED_J = (1500.0, 2500.0)  # against 450 W of GPU, CPU and DRAM


def service(market: bool = True) -> CarbonService:
    raw = {"zone": "DE", "pue": PUE, "providers": [{"type": "static", "grams_per_kwh": 380}]}
    carbon = CarbonService(parse_carbon_config({**raw, "market": MARKET} if market else raw))
    carbon.refresh_now()
    return carbon


def grams(joules: tuple[float, ...], factors: tuple[float, ...]) -> float:
    return sum(j / KWH * f * PUE for j, f in zip(joules, factors, strict=True))


def test_node_and_unmetered_market_emissions_by_hand(tmp_path: Path) -> None:
    sampler = run(attribution(tmp_path, spread=False), [600.0, 600.0, 800.0], service=service(), wall0=WALL0)
    node = sampler.snapshot.node
    assert node is not None
    # (6000 J x 75 + 7000 J x 25) g/kWh / 3.6e6 x 1.2 = 0.20833 g; unmetered (1500 x 75 + 2500 x 25) ... =
    # 0.05833 g. Location-based beside them: 13 kJ and 4 kJ at 380 g/kWh.
    assert node.market_emissions_g_total == pytest.approx(0.625 / 3, rel=1e-9)
    assert node.market_emissions_g_total == pytest.approx(grams(NODE_J, FACTORS), rel=1e-9)
    assert node.unmetered_market_emissions_g_total == pytest.approx(0.175 / 3, rel=1e-9)
    assert node.emissions_g_total == pytest.approx(13_000.0 / KWH * 380 * PUE, rel=1e-9)
    assert node.unmetered_emissions_g_total == pytest.approx(4000.0 / KWH * 380 * PUE, rel=1e-9)
    samples = parse(exposition(sampler))
    assert select(samples, "footprint_node_market_emissions_grams_total") == {
        frozenset({("method", "redfish")}): pytest.approx(0.625 / 3, rel=1e-9)
    }
    (unmetered,) = select(samples, "footprint_node_unmetered_market_emissions_grams_total").values()
    assert unmetered == pytest.approx(0.175 / 3, rel=1e-9)


def test_gpu_cpu_and_unmetered_market_emissions_make_the_node_whole(tmp_path: Path) -> None:
    # BMC read at the ticks' own seconds (0, 10, 20): the components' ticks then cover exactly the node's
    # intervals, and at constant component power each interval's time-weighted factor is theirs too.
    sampler = run(
        attribution(tmp_path, spread=False),
        [600.0, 600.0, 800.0],
        service=service(),
        wall0=DAY + 8 * HOUR - 5.0,
        offset=0.0,
    )
    snap = sampler.snapshot
    node = snap.node
    assert node is not None and node.market_emissions_g_total is not None
    assert node.market_emissions_g_total == pytest.approx(grams(NODE_J, FACTORS), rel=1e-9)
    components = sum(g.market_emissions_g_total or 0.0 for g in snap.gpus) + sum(
        c.market_emissions_g_total or 0.0 for c in snap.cpus
    )
    assert components == pytest.approx(grams((4500.0, 4500.0), FACTORS), rel=1e-9)
    assert components + (node.unmetered_market_emissions_g_total or 0.0) == pytest.approx(
        node.market_emissions_g_total, rel=1e-9
    )


def test_the_processes_share_of_unmetered_market_emissions(tmp_path: Path) -> None:
    sampler = run(attribution(tmp_path, spread=True), [600.0, 600.0, 800.0], service=service(), wall0=WALL0)
    # train was charged 3050 of 4500 J in both intervals: 3050/4500 of each interval's unmetered energy.
    share = {p.pid: p.market_emissions_g_total for p in sampler.snapshot.node_processes}
    train = grams(tuple(u * 3050 / 4500 for u in UNMETERED_J), FACTORS)
    assert share["100"] == pytest.approx(train, rel=1e-9)
    assert share["200"] == pytest.approx(grams((1500.0 * 450 / 4500,), (75.0,)), rel=1e-9)
    samples = parse(exposition(sampler))
    served = select(samples, "footprint_process_node_unmetered_market_emissions_grams_total", pid="100")
    assert list(served.values()) == [pytest.approx(train, rel=1e-9)]


def test_no_market_configured_serves_no_market_series(tmp_path: Path) -> None:
    sampler = run(attribution(tmp_path, spread=True), [600.0, 600.0, 800.0], service=service(market=False))
    node = sampler.snapshot.node
    assert node is not None and node.market_emissions_g_total is None
    assert node.unmetered_market_emissions_g_total is None
    names = {name for name, _ in parse(exposition(sampler))}
    assert "footprint_node_emissions_grams_total" in names
    assert not {n for n in names if "market" in n}
    assert sampler.dump_state()["node"]["market_grams"] is None


def test_node_market_totals_are_saved_and_continued(tmp_path: Path) -> None:
    sampler = run(attribution(tmp_path, spread=False), [600.0, 600.0, 800.0], service=service(), wall0=WALL0)
    state = sampler.dump_state()
    assert state["node"]["market_grams"] == pytest.approx(0.625 / 3, rel=1e-9)
    assert state["node"]["unmetered_market_grams"] == pytest.approx(0.175 / 3, rel=1e-9)
    again = run(attribution(tmp_path, spread=False), [600.0], seconds=1, service=service(), wall0=WALL0)
    again.restore_state(state)
    again.tick()
    node = again.snapshot.node
    assert node is not None
    assert (node.market_emissions_g_total, node.unmetered_market_emissions_g_total) == (
        state["node"]["market_grams"],
        state["node"]["unmetered_market_grams"],
    )
    with pytest.raises(ValueError):
        again.restore_state({"node": {"market_grams": -1.0}})
