"""The landing page at / and the start-up log: node totals in kWh and kg, the carbon source, warnings."""

from __future__ import annotations

import html
import logging
import re
from pathlib import Path

import pytest
import requests

from exporter.carbon.config import parse_carbon_config
from exporter.carbon.status import carbon_warnings, startup_summary
from exporter.landing import node_totals, render_landing
from exporter.model import (
    CpuReading,
    CpuState,
    GpuReading,
    GpuState,
    IntensityState,
    NodeState,
    ProviderState,
    Snapshot,
    SourceStatus,
)
from tests.chromium import browser, save_for_docs
from tests.exporter_proc import start_exporter
from tests.metrics_text import parse

NOW = 1_760_000_000.0
WORLD = IntensityState("WORLD", "embedded", "average", 480.0, 3.0e7, "Ember", "2023")
DE_EMBEDDED = IntensityState("DE", "embedded", "average", 381.0, 3.0e7, "Ember", "2023")
DE_LIVE = IntensityState("DE", "electricitymaps", "average", 250.0, 120.0)


def snapshot(**changes: object) -> Snapshot:
    gpus = (
        GpuState(GpuReading(0, "GPU-a", "NVIDIA H100", power_w=300.0), 7.2e6, 1.0e6, 1500.0, None, 20.0),
        GpuState(GpuReading(1, "GPU-b", "NVIDIA H100", power_w=100.0), 3.6e6, 3.6e6, 500.0, None, 20.0),
    )
    cpus = (CpuState(CpuReading("package-0", "rapl", 1.0, 50.0), 1.8e6, 9.0e5, 250.0),)
    base = {
        "timestamp": NOW - 1,
        "samples_total": 3600,
        "gpu_source": "nvml",
        "gpus": gpus,
        "cpus": cpus,
        "intensities": (DE_LIVE,),
        "providers": (ProviderState("electricitymaps", True),),
        "pue": 1.2,
        "water_litres_total": 12.5,
        "node_embodied_emissions_g_total": 10.0,
    }
    base.update(changes)
    return Snapshot(**base)  # type: ignore[arg-type]


def text_of(page: bytes) -> str:
    """The page's visible text, tags removed, whitespace collapsed."""
    return html.unescape(
        re.sub(r"\s+", " ", re.sub(r"<style>.*?</style>|<[^>]+>", " ", page.decode(), flags=re.S))
    )


def test_totals_add_gpus_cpus_and_the_unmetered_rest() -> None:
    totals = node_totals(snapshot())
    assert totals.power_w == 450.0 and totals.node_power_w is None
    assert totals.energy_kwh == pytest.approx((7.2e6 + 3.6e6 + 1.8e6) / 3.6e6)
    assert totals.emissions_kg == pytest.approx(2.25)
    assert totals.embodied_kg == pytest.approx(0.05)
    assert totals.market_kg is None and totals.water_l == 12.5
    node = NodeState("redfish", True, 700.0, 2.0e7, 3.6e6, 1000.0, 300.0, 0, 0)
    with_bmc = node_totals(snapshot(node=node))
    assert with_bmc.node_power_w == 700.0
    assert with_bmc.energy_kwh == pytest.approx(totals.energy_kwh + 1.0)
    assert with_bmc.emissions_kg == pytest.approx(2.55)


def test_no_emissions_without_carbon_accounting() -> None:
    totals = node_totals(snapshot(intensities=()))
    assert totals.emissions_kg is None and totals.embodied_kg is None
    assert "not measured" in text_of(render_landing(snapshot(intensities=()), now=NOW))


def test_page_shows_this_node_and_the_carbon_source() -> None:
    text = text_of(render_landing(snapshot(), "/metrics", started_at=NOW - 3600, now=NOW))
    assert "450 W power now (GPU + CPU)" in text
    assert "3.500 kWh energy since" in text
    assert "2.250 kg CO2e location-based" in text
    assert "12.5 L water" in text
    assert "average DE electricitymaps lifecycle 250.0 120 s" in text
    assert "No data-quality warnings" in text
    assert "GPU source nvml" in text and "PUE 1.2" in text


def test_page_before_the_first_sample_says_so() -> None:
    # What the exporter serves between binding its port and the sampler's first tick: the sampler's
    # initial snapshot, which has a timestamp but no data (it showed "No data-quality warnings ...
    # fresh data" and "last sample 0 s ago").
    from exporter.sampler import Sampler

    text = text_of(render_landing(Sampler(None, None).snapshot))
    assert "no sample taken yet" in text and "no sample yet" in text
    assert "No data-quality warnings" not in text and "last sample" not in text


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"intensities": (WORLD,)}, "emissions use the world average (480 g/kWh, zone WORLD"),
        (
            {"intensities": (DE_EMBEDDED,)},
            "zone DE uses the embedded table's yearly average (381 g/kWh, Ember, 2023)",
        ),
        (
            {"intensities": (IntensityState("DE", "electricitymaps", "average", 250.0, 9000.0),)},
            "the intensity from electricitymaps is 2.5 h old",
        ),
        (
            {"providers": (ProviderState("electricitymaps", False, {"http_5xx": 3}),)},
            "carbon provider electricitymaps is not answering (http_5xx x3)",
        ),
        (
            {"gpus": (GpuState(GpuReading(0, "GPU-a", "NVIDIA H100", up=False, error="lost")),)},
            "GPU 0 (GPU-a) is down: lost",
        ),
        (
            {"gpus": (GpuState(GpuReading(0, "GPU-v", "GRID A100-4C")),)},
            "GPU 0 (GRID A100-4C) is not measured now (no_power_or_energy)",
        ),
        (
            {
                "gpus": (
                    GpuState(
                        GpuReading(0, "GPU-a", "H100", power_w=9e9),
                        energy_method="none",
                        unmeasured_reason="rejected",
                    ),
                )
            },
            "GPU 0 (H100) is not measured now (rejected)",
        ),
        (
            {
                "cpus": (
                    CpuState(
                        CpuReading("package-0", "rapl"), energy_method="none", unmeasured_reason="read_failed"
                    ),
                )
            },
            "CPU domain package-0 is not measured now (read_failed)",
        ),
        ({"sources": (SourceStatus("nvml", False),)}, "source nvml is down"),
        ({"gpus": (), "gpu_source": "none"}, "no GPU source"),
    ],
)
def test_each_warning_appears(changes: dict[str, object], expected: str) -> None:
    text = text_of(render_landing(snapshot(**changes), now=NOW))
    assert expected in text
    assert "No data-quality warnings" not in text


def test_basis_is_shown_where_stated_and_said_where_not() -> None:
    text = text_of(render_landing(snapshot(intensities=(DE_EMBEDDED,)), now=NOW))
    assert "DE embedded lifecycle 381.0" in text
    unstated = IntensityState("DE", "electricitymaps", "average", 250.0, 120.0, basis="")
    text = text_of(render_landing(snapshot(intensities=(unstated,)), now=NOW))
    assert "DE electricitymaps not stated 250.0" in text


def test_page_escapes_what_it_shows() -> None:
    gpus = (GpuState(GpuReading(0, "GPU-x", "<script>alert(1)</script>", power_w=1.0)),)
    page = render_landing(snapshot(gpus=gpus), now=NOW).decode()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_warnings_are_ordered_by_severity() -> None:
    found = carbon_warnings((DE_EMBEDDED,), (ProviderState("watttime", False),))
    assert [w.code for w in found] == ["provider_down", "embedded_table"]
    assert found[0].level == logging.WARNING and found[1].level == logging.INFO


def test_startup_summary_names_zone_provider_and_basis() -> None:
    cfg = parse_carbon_config({"zone": "DE", "pue": 1.3})
    lines = startup_summary(cfg, (DE_EMBEDDED,))
    assert lines == [
        (
            logging.INFO,
            "carbon: zone DE, providers embedded; in use now: 381 g/kWh from embedded "
            "(zone DE, lifecycle basis, Ember 2023), PUE 1.3",
        )
    ]
    world = startup_summary(parse_carbon_config(None), (WORLD,))
    assert world[-1][0] == logging.WARNING
    assert "every emission uses the world average (480 g/kWh" in world[-1][1]
    assert "set carbon.zone" in world[-1][1]
    chain = startup_summary(
        parse_carbon_config({"providers": [{"type": "static", "grams_per_kwh": 100, "zone": "X"}]}), (WORLD,)
    )
    assert "providers static -> embedded" in chain[0][1]
    assert "when the providers fail, emissions fall back to the world average" in chain[-1][1]


@pytest.mark.integration
def test_running_exporter_serves_the_page_and_logs_the_zone(tmp_path: Path) -> None:
    config = tmp_path / "exporter.yml"
    config.write_text("carbon:\n  zone: DE\n  pue: 1.25\n")
    exporter = start_exporter(["--source.gpu=simulated", "--source.cpu=estimated", f"--config.file={config}"])
    try:
        # The page renders the sampler's last snapshot: before the first tick that is the empty one
        # (no intensity, PUE 1), and /healthz already answers then.
        exporter.wait_for_first_sample()
        page = requests.get(exporter.url + "/", timeout=10)
        metrics = parse(exporter.metrics())
    finally:
        _, log = exporter.stop()
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    text = text_of(page.content)
    gpu_j = sum(v for (name, _), v in metrics.items() if name == "footprint_gpu_energy_joules_total")
    cpu_j = sum(v for (name, _), v in metrics.items() if name == "footprint_cpu_energy_joules_total")
    shown = float(re.search(r"([\d,.]+) kWh energy since", text).group(1).replace(",", ""))  # type: ignore[union-attr]
    # The page came first: its energy is at most the later scrape's, and the sampler ticks once a second.
    assert shown <= (gpu_j + cpu_j) / 3.6e6 + 1e-3
    assert "DE embedded lifecycle 381.0" in text and "PUE 1.25" in text
    assert "world average" not in text
    assert re.search(r'level=info .*msg="carbon: zone DE, providers embedded; in use now: 381 g/kWh', log)
    assert "level=warning" not in log


@pytest.mark.integration
def test_landing_page_in_chromium_warns_about_the_world_average(tmp_path: Path) -> None:
    exporter = start_exporter(["--source.gpu=simulated", "--source.cpu=estimated"])
    try:
        exporter.wait_for_first_sample()  # the warning comes from the first snapshot's intensities
        with browser() as chrome:
            found = chrome.open(exporter.url + "/", width=1000, height=900)
            assert found.console_errors == [], found.messages
            warnings = chrome.evaluate(
                "Array.from(document.querySelectorAll('p.warning')).map(p => p.textContent)"
            )
            cards = chrome.evaluate("document.querySelectorAll('.card').length")
            width = chrome.evaluate("document.documentElement.scrollWidth")
            png = chrome.screenshot()
        save_for_docs("landing.png", exporter.url + "/", height=900)
    finally:
        _, log = exporter.stop()
    assert any("world average" in w and "carbon.zone" in w for w in warnings), warnings
    assert cards == 6 and width <= 1000
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert re.search(r'level=warning .*msg="carbon: zone WORLD: every emission uses the world average', log)
    (tmp_path / "landing.png").write_bytes(png)


def test_market_total_only_when_every_device_has_one() -> None:
    gpus = (
        GpuState(GpuReading(0, "GPU-a", "H100", power_w=300.0), 7.2e6, 0.0, 1500.0, None, 20.0, 400.0),
        GpuState(GpuReading(1, "GPU-b", "H100", power_w=100.0), 3.6e6, 0.0, 500.0, None, 20.0, 100.0),
    )
    cpus = (CpuState(CpuReading("package-0", "rapl", 1.0, 50.0), 1.8e6, 9.0e5, 250.0, None, 50.0),)
    assert node_totals(snapshot(gpus=gpus, cpus=cpus)).market_kg == pytest.approx(0.55)
    assert "0.550000 kg CO2e market-based" in text_of(render_landing(snapshot(gpus=gpus, cpus=cpus), now=NOW))
    assert node_totals(snapshot(gpus=gpus)).market_kg is None  # the CPU has no market figure
    never = GpuState(GpuReading(2, "GPU-v", "vGPU"), measured=False, energy_method="none")
    assert node_totals(snapshot(gpus=(*gpus, never), cpus=cpus)).market_kg == pytest.approx(0.55)
