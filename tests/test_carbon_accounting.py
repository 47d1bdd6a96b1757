"""Tests for exporter/carbon/accounting.py and embodied.py: the arithmetic an auditor recomputes."""

from __future__ import annotations

import pytest

from exporter.carbon.accounting import SECONDS_PER_YEAR, embodied_grams, operational_grams, water_litres
from exporter.carbon.config import parse_carbon_config
from exporter.carbon.embodied import DEFAULT_GPU_FIGURES, UNKNOWN_GPU, match_gpu
from exporter.carbon.service import CarbonService
from exporter.carbon.watttime import GRAMS_PER_KWH_PER_LBS_PER_MWH, to_grams_per_kwh


def test_one_kwh_at_one_intensity_is_that_many_grams_times_pue() -> None:
    assert operational_grams(3.6e6, [(10.0, 400.0)], 1.0) == pytest.approx(400.0)
    assert operational_grams(3.6e6, [(10.0, 400.0)], 1.25) == pytest.approx(500.0)


def test_pue_applied_once_not_twice() -> None:
    pue = 1.5
    grams = operational_grams(7.2e6, [(1.0, 100.0)], pue)
    assert grams == pytest.approx(2 * 100 * 1.5)
    assert grams != pytest.approx(2 * 100 * 1.5 * 1.5)


def test_energy_spreads_over_segments_by_time() -> None:
    # 3 s at 100 and 1 s at 500: three quarters of the energy at 100, one quarter at 500.
    grams = operational_grams(3.6e6, [(3.0, 100.0), (1.0, 500.0)], 1.0)
    assert grams == pytest.approx(0.75 * 100 + 0.25 * 500)


def test_zero_length_interval_charges_last_intensity_and_no_segments_charge_nothing() -> None:
    assert operational_grams(3.6e6, [(0.0, 250.0)], 1.0) == pytest.approx(250.0)
    assert operational_grams(3.6e6, [], 1.0) == 0.0


def test_embodied_is_exactly_kg_times_seconds_over_life() -> None:
    for kg, life, seconds in ((164.0, 5.0, 1.0), (2500.0, 4.0, 3600.0), (150.0, 6.0, 86400.0 * 30)):
        assert embodied_grams(kg, life, seconds) == kg * 1000.0 * seconds / (life * 365.25 * 86400.0)
    # a whole service life amortises the whole footprint
    assert embodied_grams(164.0, 5.0, 5 * SECONDS_PER_YEAR) == pytest.approx(164000.0)
    with pytest.raises(ValueError):
        embodied_grams(1.0, 0.0, 1.0)


def test_water_uses_it_energy_without_pue() -> None:
    # 2 kWh of IT energy at a site WUE of 1.8 L/kWh: 3.6 L whatever the PUE.
    assert water_litres(7.2e6, 1.8, 1.4) == pytest.approx(3.6)


def test_watttime_pounds_per_mwh_to_grams_per_kwh() -> None:
    assert GRAMS_PER_KWH_PER_LBS_PER_MWH == 0.45359237
    assert to_grams_per_kwh(1000.0, "lbs_co2_per_mwh") == pytest.approx(453.59237)
    assert to_grams_per_kwh(870.3, None) == pytest.approx(394.7614396)
    assert to_grams_per_kwh(300.0, "g_co2_per_kwh") == 300.0


def test_gpu_models_match_their_own_figure() -> None:
    figures = DEFAULT_GPU_FIGURES
    cases = {
        "NVIDIA H100 80GB HBM3": "H100",
        "NVIDIA H100 NVL": "H100",
        "NVIDIA A100-SXM4-80GB": "A100",
        "NVIDIA A10G": "A10",
        "NVIDIA A10": "A10",
        "NVIDIA L40S": "L40S",
        "NVIDIA L4": "L4",
        "Tesla V100-SXM2-32GB": "V100",
        "Tesla T4": "T4",
        "NVIDIA H200": "H200",
        "NVIDIA GH200 480GB": "GH200",
        "NVIDIA B200": "B200",
    }
    for name, key in cases.items():
        figure = match_gpu(name, figures)
        assert figure is not None and figure.key == key, name
    assert match_gpu("Some Future Accelerator X1", figures) is None
    assert all(f.basis for f in figures) and UNKNOWN_GPU.kg >= max(
        f.kg for f in figures if f.key in ("H100", "A100", "L40S", "V100")
    )


def test_service_embodied_rates_follow_config_and_defaults() -> None:
    service = CarbonService(
        parse_carbon_config(
            {
                "embodied": {
                    "gpu": {"H100": {"kg": 200, "life_years": 4}},
                    "default_life_years": 6,
                    "node": {"kg": 3000},
                },
            }
        )
    )
    assert service.gpu_embodied_grams_per_second("NVIDIA H100 80GB HBM3") == 200_000 / (4 * SECONDS_PER_YEAR)
    assert service.gpu_embodied_grams_per_second("NVIDIA A100-SXM4-40GB") == 150_000 / (6 * SECONDS_PER_YEAR)
    assert service.gpu_embodied_grams_per_second("Mystery GPU") == UNKNOWN_GPU.kg * 1000 / (
        6 * SECONDS_PER_YEAR
    )
    assert service.node_embodied_grams_per_second() == 3_000_000 / (6 * SECONDS_PER_YEAR)
    default = CarbonService(parse_carbon_config(None))
    assert default.node_embodied_grams_per_second() == 2_500_000 / (5 * SECONDS_PER_YEAR)
    off = CarbonService(parse_carbon_config({"embodied": {"enabled": False}}))
    assert off.gpu_embodied_grams_per_second("NVIDIA H100") == 0.0
    assert off.node_embodied_grams_per_second() is None
    no_node = CarbonService(parse_carbon_config({"embodied": {"node": None}}))
    assert no_node.node_embodied_grams_per_second() is None
