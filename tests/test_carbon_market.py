"""Market-based Scope 2 (carbon.market) against hand-computed figures, beside the location-based method."""

from __future__ import annotations

import calendar
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from carbon_servers import Clock
from prometheus_client import CollectorRegistry, generate_latest

from exporter.attribution import AttributionPolicy
from exporter.carbon.accounting import embodied_grams, operational_grams, water_litres
from exporter.carbon.config import parse_carbon_config
from exporter.carbon.market import MarketMethod
from exporter.carbon.service import CarbonService
from exporter.collector import SnapshotCollector
from exporter.errors import ConfigError
from exporter.ledger import ProcessLedger
from exporter.model import GpuProcessSample, GpuReading
from exporter.sampler import Attribution, Sampler
from exporter.workload import WorkloadResolver
from tests.metrics_text import parse, select

# The worked example of docs/methodology.md: wind PPA for half the consumption, a solar PPA for 40 %
# of it from 08:00 to 16:00 UTC, the supplier's factor of 250 g/kWh for the rest.
SOLAR = [0.0] * 8 + [0.4] * 8 + [0.0] * 8
MARKET = {
    "instruments": [
        {"name": "wind-ppa", "share": 0.5, "grams_per_kwh": 0, "source": "PPA contract 2026", "year": 2026},
        {"name": "solar-ppa", "hourly_share": SOLAR, "grams_per_kwh": 0},
    ],
    "supplier_grams_per_kwh": 250,
    "residual_grams_per_kwh": 420,
    "residual_source": "AIB European Residual Mixes",
    "residual_year": "2025",
}
# 2026-05-21 00:00 UTC.
DAY = float(calendar.timegm((2026, 5, 21, 0, 0, 0, 0, 0, 0)))
HOUR = 3600.0


def market(raw: dict[str, Any] = MARKET, **carbon: Any) -> MarketMethod:
    config = parse_carbon_config({"zone": "DE", "market": raw, **carbon}).market
    assert config is not None
    return MarketMethod(config)


def test_hour_mix_by_hand() -> None:
    method = market()
    # 12:00 UTC: wind 0.5 + solar 0.4 at 0 g, the remaining 0.1 at the supplier's 250 g/kWh.
    noon = method.hours[12]
    assert noon.covered == (("wind-ppa", 0.5), ("solar-ppa", 0.4))
    assert noon.rest_share == pytest.approx(0.1) and noon.grams_per_kwh == pytest.approx(25.0)
    # 02:00 UTC: no sun, half of it at 250 g/kWh. The supplier factor wins over the residual mix.
    assert method.hours[2].grams_per_kwh == pytest.approx(125.0)
    # No supplier factor: the rest is charged at the residual mix.
    residual = market({**MARKET, "supplier_grams_per_kwh": None})
    assert residual.hours[2].grams_per_kwh == pytest.approx(0.5 * 420)


def test_shares_are_applied_in_order_and_never_claim_more_than_everything() -> None:
    over = market(
        {
            "instruments": [
                {"name": "ppa", "share": 0.7, "grams_per_kwh": 10},
                {"name": "recs", "share": 0.5, "grams_per_kwh": 0},
            ],
            "residual_grams_per_kwh": 400,
        }
    )
    mix = over.hours[0]
    # The certificates cover only the 0.3 the PPA left: 0.7 x 10 + 0.3 x 0, no residual at all.
    assert mix.covered == (("ppa", 0.7), ("recs", pytest.approx(0.3)))
    assert mix.rest_share == 0.0 and mix.grams_per_kwh == pytest.approx(7.0)
    # Fully covered by instruments, no rest factor is needed at all.
    full = market({"instruments": [{"name": "green-tariff", "share": 1, "grams_per_kwh": 12}]})
    assert full.hours[5].grams_per_kwh == 12.0


def test_an_interval_across_an_hour_boundary_is_weighted_by_time_in_each_hour() -> None:
    method = market()
    # 07:30-08:30 UTC: half an hour at 125 g/kWh (no sun yet), half at 25.
    assert method.grams_per_kwh(DAY + 7.5 * HOUR, DAY + 8.5 * HOUR) == pytest.approx(75.0)
    # 10 kWh of IT energy in that hour at PUE 1.2: 12 kWh x 75 g.
    assert method.grams(10 * 3.6e6, DAY + 7.5 * HOUR, DAY + 8.5 * HOUR, 1.2) == pytest.approx(900.0)
    assert method.grams_per_kwh(DAY + 12 * HOUR, DAY + 12 * HOUR) == pytest.approx(25.0)
    assert method.grams(0.0, DAY, DAY + 1, 1.0) == 0.0


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (
            {"instruments": [{"name": "a", "share": 1.2, "grams_per_kwh": 0}]},
            "carbon.market.instruments[0].share",
        ),
        (
            {"instruments": [{"name": "a", "share": 0.5}], "residual_grams_per_kwh": 1},
            "carbon.market.instruments[0].grams_per_kwh",
        ),
        ({"instruments": [{"share": 0.5, "grams_per_kwh": 0}]}, "carbon.market.instruments[0].name"),
        (
            {"instruments": [{"name": "a", "share": 0.5, "hourly_share": SOLAR, "grams_per_kwh": 0}]},
            "carbon.market.instruments[0].share",
        ),
        (
            {
                "instruments": [{"name": "a", "hourly_share": [0.5] * 23, "grams_per_kwh": 0}],
                "residual_grams_per_kwh": 1,
            },
            "carbon.market.instruments[0].hourly_share",
        ),
        (
            {"instruments": [{"name": "a", "share": 0.5, "grams_per_kwh": 0}]},
            "carbon.market.residual_grams_per_kwh",
        ),
        (
            {
                "instruments": [
                    {"name": "a", "share": 0.5, "grams_per_kwh": 0},
                    {"name": "a", "share": 0.5, "grams_per_kwh": 0},
                ]
            },
            "carbon.market.instruments[1].name",
        ),
        ({"residual_grams_per_kwh": 5000}, "carbon.market.residual_grams_per_kwh"),
        ({"supplier": 250}, "carbon.market.supplier"),
        ({"instruments": {"name": "a"}}, "carbon.market.instruments"),
    ],
)
def test_market_configuration_errors_name_the_key(raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_carbon_config({"market": raw})
    assert caught.value.key == key, caught.value


class OneGpu:
    """A GPU at constant power with one process on it; energy from its hardware counter."""

    name = "scripted"

    def __init__(self, watts: float, wall: list[float]) -> None:
        self.watts = watts
        self.wall = wall
        self.start = wall[0]

    def read(self, now: float) -> list[GpuReading]:
        energy = self.watts * (self.wall[0] - self.start)
        proc = GpuProcessSample(pid=7, comm="train", user="alice", sm_util=0.9, start_time=1.0)
        return [GpuReading(0, "GPU-m", "NVIDIA H100", power_w=self.watts, energy_j=energy, processes=(proc,))]

    def close(self) -> None:
        pass


def run_node(tmp_path: Path, market_raw: dict[str, Any] | None, start: float, hours: float) -> Sampler:
    carbon_raw: dict[str, Any] = {
        "zone": "DE",
        "pue": 1.2,
        "providers": [{"type": "static", "grams_per_kwh": 380}],
        "embodied": {"enabled": False},
    }
    if market_raw is not None:
        carbon_raw["market"] = market_raw
    wall = [start]
    with requests.Session() as session:
        carbon = CarbonService(parse_carbon_config(carbon_raw), Clock(start), session)
    sampler = Sampler(
        # 1 kW (a tenth of the worked example's 10 kW node: one GPU reading 10 kW is refused as
        # impossible, see exporter/plausibility.py): 1 kWh per hour.
        OneGpu(1_000.0, wall),
        None,
        carbon,
        Attribution(
            AttributionPolicy(),
            WorkloadResolver(str(tmp_path / "noproc")),
            ProcessLedger("pid", 100, 3600.0),
            ProcessLedger("pid", 100, 3600.0),
        ),
        clock=lambda: wall[0],
        wall_clock=lambda: wall[0],
    )
    steps = int(hours * 3600 / 60)
    for _ in range(steps + 1):
        sampler.tick()
        wall[0] += 60.0
    return sampler


def served(sampler: Sampler) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: sampler.snapshot))
    return generate_latest(registry).decode()


def test_location_and_market_side_by_side_on_the_running_node(tmp_path: Path) -> None:
    # 07:30 to 08:30 UTC at 1 kW, PUE 1.2, grid 380 g/kWh (static, lifecycle).
    sampler = run_node(tmp_path, MARKET, DAY + 7.5 * HOUR, 1.0)
    gpu = sampler.snapshot.gpus[0]
    assert gpu.energy_j_total == pytest.approx(1 * 3.6e6)
    assert gpu.emissions_g_total == pytest.approx(1 * 1.2 * 380)  # 456 g location-based
    assert gpu.market_emissions_g_total == pytest.approx(1 * 1.2 * 75)  # 90 g market-based
    (proc,) = sampler.snapshot.gpu_processes
    # The process's share is charged at the same market factor, interval by interval.
    assert proc.energy_j_total + gpu.unattributed_energy_j_total == pytest.approx(gpu.energy_j_total)
    assert proc.market_emissions_g_total == pytest.approx(proc.energy_j_total / 3.6e6 * 1.2 * 75)
    # Served, with the factors they come from.
    samples = parse(served(sampler))
    assert select(samples, "footprint_gpu_market_emissions_grams_total") == {
        frozenset({("gpu", "0"), ("uuid", "GPU-m")}): pytest.approx(90.0)
    }
    assert list(select(samples, "footprint_gpu_emissions_grams_total").values()) == [pytest.approx(456.0)]
    assert select(samples, "footprint_process_gpu_market_emissions_grams_total", pid="7")
    factors = select(samples, "footprint_emission_factor")
    by_name = {dict(k)["name"]: (dict(k), v) for k, v in factors.items()}
    assert by_name["wind-ppa"][0]["kind"] == "market_instrument" and by_name["wind-ppa"][0]["year"] == "2026"
    assert (
        by_name["supplier"][1] == 250.0 and by_name["residual"][0]["source"] == "AIB European Residual Mixes"
    )
    assert by_name["pue"][1] == 1.2 and by_name["DE"][0]["kind"] == "grid_fallback"


def test_no_market_series_without_carbon_market(tmp_path: Path) -> None:
    sampler = run_node(tmp_path, None, DAY, 0.1)
    assert sampler.snapshot.gpus[0].market_emissions_g_total is None
    assert all(p.market_emissions_g_total is None for p in sampler.snapshot.gpu_processes)
    text = served(sampler)
    assert "market_emissions" not in text and "footprint_gpu_emissions_grams_total" in text


def test_market_totals_survive_the_state_file(tmp_path: Path) -> None:
    sampler = run_node(tmp_path, MARKET, DAY + 12 * HOUR, 0.5)
    saved = sampler.dump_state()
    grams = sampler.snapshot.gpus[0].market_emissions_g_total
    assert grams == pytest.approx(0.5 * 1.2 * 25) and saved["gpus"]["GPU-m"]["market_grams"] == grams
    again = run_node(tmp_path, MARKET, DAY + 12 * HOUR, 0.0)  # one baseline read, then a minute passes
    again.restore_state(saved)
    again.tick()
    # Continued from the saved total: plus one minute at 1 kW x 1.2 x 25 g/kWh = 0.5 g.
    assert again.snapshot.gpus[0].market_emissions_g_total == pytest.approx(grams + 0.5)
    # Per process too: the ledger's dump carries market grams and restores them.
    att = sampler.attribution
    assert att is not None
    dumped = att.gpu_ledger.dump()
    assert dumped["series"][0]["market_g"] == pytest.approx(
        next(p.market_emissions_g_total for p in sampler.snapshot.gpu_processes if p.pid == "7")
    )
    ledger = ProcessLedger("pid", 100, 3600.0)
    assert ledger.restore(dumped, 0.0) == 1
    assert ledger.states(0.0)[0].market_emissions_g_total == pytest.approx(dumped["series"][0]["market_g"])


def test_the_worked_example_of_the_methodology_page() -> None:
    """The YAML and the four figures of docs/methodology.md "Worked example", recomputed."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "methodology.md").read_text(encoding="utf-8")
    section = page.split("## Worked example", 1)[1]
    raw = yaml.safe_load(section.split("```yaml", 1)[1].split("```", 1)[0])
    config = parse_carbon_config(raw["carbon"])
    assert config.market is not None and config.pue == 1.2 and config.wue == 1.8
    method = MarketMethod(config.market)
    energy_j, t0, t1 = 10 * 3.6e6, DAY + 7.5 * HOUR, DAY + 8.5 * HOUR
    assert [method.hours[7].grams_per_kwh, method.hours[8].grams_per_kwh] == [
        pytest.approx(125),
        pytest.approx(25),
    ]
    assert operational_grams(energy_j, [(3600.0, 380.0)], config.pue) == pytest.approx(4560.0)
    assert method.grams(energy_j, t0, t1, config.pue) == pytest.approx(900.0)
    assert 8 * embodied_grams(164, 5, 3600) == pytest.approx(29.934, abs=5e-4)
    assert embodied_grams(2500, 5, 3600) == pytest.approx(57.04, abs=5e-3)
    assert water_litres(energy_j, config.wue or 0.0, config.pue) == pytest.approx(18.0)
    for figure in ("**4,560 g**", "**900 g**", "**29.9 g**", "**57.0 g**", "**18 L**"):
        assert figure in section
