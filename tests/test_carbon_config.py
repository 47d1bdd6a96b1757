"""Tests for exporter/carbon/config.py: defaults, and every error naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from exporter.carbon.config import parse_carbon_config
from exporter.errors import ConfigError


def test_defaults_without_a_section() -> None:
    config = parse_carbon_config(None)
    assert (config.zone, config.pue, config.wue, config.max_age, config.providers) == (
        "WORLD",
        1.0,
        None,
        10800.0,
        (),
    )
    assert config.embodied.enabled and config.embodied.default_life_years == 5.0


def test_full_configuration() -> None:
    config = parse_carbon_config(
        {
            "zone": "de",
            "pue": 1.2,
            "wue": 1.8,
            "max_age": "30m",
            "providers": [
                {"type": "electricitymaps", "token_env": "EM_TOKEN", "refresh": "5m", "timeout": "2s"},
                {
                    "type": "watttime",
                    "region": "CAISO_NORTH",
                    "username_env": "WT_USER",
                    "password_file": "/run/pw",
                },
                {"type": "ukgrid", "region_id": 13, "url": "http://127.0.0.1:9/"},
                {"type": "carbon_aware_sdk", "url": "http://sdk:8080", "location": "eastus"},
                {"type": "static", "grams_per_kwh": 350},
            ],
        }
    )
    assert (config.zone, config.pue, config.wue, config.max_age) == ("DE", 1.2, 1.8, 1800.0)
    em, wt, uk, sdk, static = config.providers
    assert (em.url, em.zone, em.refresh, em.timeout, em.signal, em.forecast) == (
        "https://api.electricitymaps.com/v3",
        "DE",
        300.0,
        2.0,
        "average",
        False,
    )
    assert (wt.signal, wt.zone, wt.login_url, wt.password_file) == (
        "marginal",
        "CAISO_NORTH",
        "https://api.watttime.org/login",
        "/run/pw",
    )
    assert (uk.url, uk.zone, uk.region_id, uk.forecast) == ("http://127.0.0.1:9", "GB-region-13", 13, True)
    assert (sdk.zone, sdk.url) == ("eastus", "http://sdk:8080")
    assert (static.grams_per_kwh, static.signal, static.zone) == (350.0, "average", "DE")


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ([], "carbon"),
        ({"zone": "ATLANTIS"}, "carbon.zone"),
        ({"colour": "green"}, "carbon.colour"),
        ({"pue": 0.9}, "carbon.pue"),
        ({"pue": "1.2"}, "carbon.pue"),
        ({"pue": True}, "carbon.pue"),
        ({"wue": -1}, "carbon.wue"),
        ({"max_age": "an hour"}, "carbon.max_age"),
        ({"providers": {"type": "static"}}, "carbon.providers"),
        (
            {"providers": [{"type": "static", "grams_per_kwh": 1}, {"type": "coal"}]},
            "carbon.providers[1].type",
        ),
        ({"providers": [{"grams_per_kwh": 1}]}, "carbon.providers[0].type"),
        (
            {"providers": [{"type": "ukgrid"}, {"type": "ukgrid", "refresh": "5 minutes"}]},
            "carbon.providers[1].refresh",
        ),
        ({"providers": [{"type": "ukgrid", "timeout": 5}]}, "carbon.providers[0].timeout"),
        ({"providers": [{"type": "ukgrid", "region_id": 18}]}, "carbon.providers[0].region_id"),
        ({"providers": [{"type": "ukgrid", "url": "ftp://x"}]}, "carbon.providers[0].url"),
        ({"providers": [{"type": "ukgrid", "token": "x"}]}, "carbon.providers[0].token"),
        ({"providers": [{"type": "ukgrid"}, {"type": "ukgrid"}]}, "carbon.providers[1].type"),
        ({"providers": [{"type": "electricitymaps"}]}, "carbon.providers[0].token_env"),
        (
            {"providers": [{"type": "electricitymaps", "token_env": "T", "emission_factor_type": "x"}]},
            "carbon.providers[0].emission_factor_type",
        ),
        (
            {"providers": [{"type": "watttime", "username_env": "U", "password_env": "P"}]},
            "carbon.providers[0].region",
        ),
        (
            {"providers": [{"type": "watttime", "region": "R", "username_env": "U"}]},
            "carbon.providers[0].password_env",
        ),
        ({"providers": [{"type": "carbon_aware_sdk", "location": "eastus"}]}, "carbon.providers[0].url"),
        ({"providers": [{"type": "carbon_aware_sdk", "url": "http://x"}]}, "carbon.providers[0].location"),
        ({"providers": [{"type": "static"}]}, "carbon.providers[0].grams_per_kwh"),
        ({"providers": [{"type": "static", "grams_per_kwh": "lots"}]}, "carbon.providers[0].grams_per_kwh"),
        (
            {"providers": [{"type": "static", "grams_per_kwh": 1, "signal": "both"}]},
            "carbon.providers[0].signal",
        ),
        (
            {"providers": [{"type": "static", "grams_per_kwh": 1, "refresh": "5m"}]},
            "carbon.providers[0].refresh",
        ),
        ({"embodied": {"gpu": {"H100": {"kg": -5}}}}, "carbon.embodied.gpu.H100.kg"),
        ({"embodied": {"gpu": {"H100": {"life_years": 4}}}}, "carbon.embodied.gpu.H100.kg"),
        ({"embodied": {"node": {"kg": 100, "life_years": 0}}}, "carbon.embodied.node.life_years"),
        ({"embodied": {"default_life_years": "five"}}, "carbon.embodied.default_life_years"),
        ({"embodied": {"cpu": {}}}, "carbon.embodied.cpu"),
    ],
)
def test_errors_name_the_key(raw: object, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_carbon_config(raw)
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ")


def test_missing_secret_variable_is_not_a_config_error() -> None:
    config = parse_carbon_config(
        {"providers": [{"type": "electricitymaps", "token_env": "SURELY_NOT_SET_X1"}]}
    )
    assert config.providers[0].token_env == "SURELY_NOT_SET_X1"


def test_the_configuration_reference_example_parses() -> None:
    """The YAML of docs/carbon.md "Configuration reference" is a valid configuration, as documented."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "carbon.md").read_text(encoding="utf-8")
    block = page.split("## Configuration reference", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    config = parse_carbon_config(yaml.safe_load(block)["carbon"])
    assert (config.basis, config.marginal_basis, config.max_age) == ("lifecycle", "direct", 10800.0)
    assert (config.plausible_min, config.plausible_max) == (0.0, 2000.0)
    assert config.market is not None and [i.name for i in config.market.instruments] == [
        "wind-ppa",
        "solar-ppa",
    ]
    assert config.market.instruments[0].year == "2026" and config.market.basis == "direct"
    assert config.providers[0].basis == "lifecycle"  # Electricity Maps follows carbon.basis


def test_the_fleet_examples_parse() -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "carbon.md").read_text(encoding="utf-8")
    section = page.split("## One fetch per zone for a fleet", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```yaml")[1:]]
    central, node = (parse_carbon_config(yaml.safe_load(b)["carbon"]) for b in blocks)
    assert [p.type for p in central.providers] == ["electricitymaps"]
    (relay,) = node.providers
    assert (relay.type, relay.refresh, relay.zone, relay.basis) == ("central", 60.0, "DE", "")
