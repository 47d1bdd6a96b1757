"""Flags, environment and YAML merge, validation and one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from exporter.config import FLAGS, build_parser, load_config, parse_listen_address
from exporter.errors import ConfigError


def test_defaults_without_any_file() -> None:
    cfg = load_config([], environ={})
    assert cfg["web.listen-address"] == ":9877"
    assert cfg["sample.interval"] == 1.0
    assert cfg["source.gpu"] == "auto"
    assert cfg["source.gpu.simulated.count"] == 4
    assert cfg.sources["sample.interval"] == "default"


def test_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        "sample:\n  interval: 5s\nsource:\n  gpu: simulated\n  gpu.simulated.count: 8\n"
        "web.listen-address: 127.0.0.1:1234\n"
    )
    env = {"FOOTPRINT_SAMPLE_INTERVAL": "2s", "FOOTPRINT_SOURCE_GPU_SIMULATED_COUNT": "6"}
    cfg = load_config(["--config.file", str(path), "--sample.interval=250ms"], environ=env)
    assert cfg["sample.interval"] == 0.25 and cfg.sources["sample.interval"] == "flag"
    assert cfg["source.gpu.simulated.count"] == 6 and cfg.sources["source.gpu.simulated.count"] == "env"
    assert cfg["source.gpu"] == "simulated" and cfg.sources["source.gpu"] == "file"
    assert cfg["web.listen-address"] == "127.0.0.1:1234"


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("log:\n  level: debug\n")
    cfg = load_config([], environ={"FOOTPRINT_CONFIG_FILE": str(path)})
    assert cfg["log.level"] == "debug"


def test_env_names_follow_the_contract() -> None:
    names = {f.name: f.env for f in FLAGS}
    assert names["web.listen-address"] == "FOOTPRINT_WEB_LISTEN_ADDRESS"
    assert names["source.gpu.replay.file"] == "FOOTPRINT_SOURCE_GPU_REPLAY_FILE"


def test_bool_flag_and_negation() -> None:
    assert (
        load_config(
            ["--source.gpu.replay.loop", "--source.gpu=replay", "--source.gpu.replay.file=x"], environ={}
        )["source.gpu.replay.loop"]
        is True
    )
    assert load_config(["--no-attribution.cpu"], environ={})["attribution.cpu"] is False
    assert load_config([], environ={"FOOTPRINT_ATTRIBUTION_CPU": "false"})["attribution.cpu"] is False


@pytest.mark.parametrize(
    ("argv", "yaml_text", "env", "key", "fragment"),
    [
        ([], "sample:\n  intervall: 1s\n", {}, "sample.intervall", "unknown setting"),
        ([], "sample:\n  interval: 1.5s\n", {}, "sample.interval", "not a duration"),
        ([], "sample:\n  interval: 5\n", {}, "sample.interval", "duration"),
        ([], "source:\n  gpu: tpu\n", {}, "source.gpu", "not one of"),
        ([], "source.gpu.simulated.count: 0\n", {}, "source.gpu.simulated.count", "at least 1"),
        ([], "source.gpu.simulated.count: two\n", {}, "source.gpu.simulated.count", "expected an integer"),
        ([], "sample: [1, 2\n", {}, "config.file", "not valid YAML"),
        ([], "- a\n- b\n", {}, "config.file", "must hold a mapping"),
        (["--sample.interval=5ms"], "", {}, "--sample.interval", "at least 10ms"),
        (["--source.gpu=replay"], "", {}, "source.gpu.replay.file", "required"),
        (["--attribution.nvml-sample-period=1m"], "", {}, "--attribution.nvml-sample-period", "at most 20s"),
        ([], "attribution:\n  cpu-idle: pooled\n", {}, "attribution.cpu-idle", "not one of"),
        ([], "attribution.cpu-dram-idle-watts: -3\n", {}, "attribution.cpu-dram-idle-watts", "at least 0"),
        (["--web.listen-address=localhost"], "", {}, "web.listen-address", "host]:port"),
        ([], "", {"FOOTPRINT_SAMPLE_INTERVAL": "fast"}, "FOOTPRINT_SAMPLE_INTERVAL", "not a duration"),
        (["--no-such-flag"], "", {}, "command line", "unrecognized"),
    ],
)
def test_bad_configuration_names_the_key(
    tmp_path: Path, argv: list[str], yaml_text: str, env: dict[str, str], key: str, fragment: str
) -> None:
    path = tmp_path / "c.yml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config([*argv, "--config.file", str(path)], environ=env)
    assert info.value.key == key
    assert fragment in info.value.problem
    assert "\n" not in str(info.value)


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(["--config.file", str(tmp_path / "missing.yml")], environ={})
    assert info.value.key == "config.file" and "cannot read" in info.value.problem


def test_carbon_section_is_passed_through(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("carbon:\n  zone: FR\n  providers:\n    - type: static\n      grams_per_kwh: 50\n")
    cfg = load_config(["--config.file", str(path)], environ={})
    assert cfg.carbon_raw == {"zone": "FR", "providers": [{"type": "static", "grams_per_kwh": 50}]}


@pytest.mark.parametrize(
    ("text", "expected"),
    [(":9877", ("", 9877)), ("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:9877", ("::1", 9877))],
)
def test_listen_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(text) == expected


def test_help_lists_subcommands_choices_and_one_default_each() -> None:
    text = build_parser().format_help()
    for name in ("record", "budgets", "report", "validate-gpu"):
        assert re.search(rf"^  footprint-exporter {name} +\S", text, re.M), name
    # One entry per option: from its "--name" line to the next option.
    entries = re.split(r"\n  (?=--)", text.split("options:", 1)[1])
    by_flag = {e.split()[0].rstrip(","): " ".join(e.split()) for e in entries if e.startswith("--")}
    for flag in FLAGS:
        entry = by_flag[f"--{flag.name}"]
        assert len(re.findall(r"(?:\(|; )default[ :]", entry)) == 1, entry
        if flag.choices:
            assert "{" + ",".join(flag.choices) + "}" in entry, entry
