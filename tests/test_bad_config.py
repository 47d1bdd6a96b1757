"""Bad configuration from the fault-injection campaign (issue 17): refused with one line naming the key.

Run in-process through the same checks the exporter runs at start (``load_config`` and
``check_settings``); tests/test_bad_input_e2e.py starts the real process for a few of them.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest

from exporter.cli import check_settings
from exporter.config import FLAGS, load_config
from exporter.docs import flags_table
from exporter.durations import parse_duration
from exporter.errors import SHOWN_CHARS, ConfigError, shown

HUGE = "9" * 400
LAUGHS = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"
    "sample:\n  interval: *i\n"
)


def refuse(
    tmp_path: Path, content: bytes | str, argv: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> ConfigError:
    """The error starting with this configuration file raises; fails if it starts."""
    path = tmp_path / "config.yml"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(ConfigError) as info:
        check_settings(load_config([*argv, f"--config.file={path}"], environ=env or {}))
    message = str(info.value)
    assert "\n" not in message and message.isprintable()
    assert len(message) < 400, message
    return info.value


@pytest.mark.parametrize(
    ("content", "key"),
    [
        (f"sample:\n  interval: {HUGE}s\n", "sample.interval"),
        (f"state:\n  interval: {HUGE}ms\n", "state.interval"),
        (f"attribution:\n  retention: {HUGE}y\n", "attribution.retention"),
        (f"attribution:\n  max-series: {HUGE}\n", "attribution.max-series"),
        (f"source.cpu.tdp-watts: {HUGE}\n", "source.cpu.tdp-watts"),
        (f"attribution.idle-watts: {HUGE}.5\n", "attribution.idle-watts"),
        (f"source:\n  gpu.simulated.count: {HUGE}\n", "source.gpu.simulated.count"),
        (f"source:\n  gpu.simulated.seed: {HUGE}\n", "source.gpu.simulated.seed"),
        (f"carbon:\n  max_age: {HUGE}s\n", "carbon.max_age"),
        (f"carbon:\n  pue: {HUGE}\n", "carbon.pue"),
        (f"carbon:\n  wue: {HUGE}\n", "carbon.wue"),
        (
            f"carbon:\n  providers:\n    - type: static\n      grams_per_kwh: {HUGE}\n",
            "carbon.providers[0].grams_per_kwh",
        ),
        (
            f"carbon:\n  providers:\n    - type: ukgrid\n      refresh: {HUGE}m\n",
            "carbon.providers[0].refresh",
        ),
        (f"carbon:\n  embodied:\n    gpu:\n      H100:\n        kg: {HUGE}\n", "carbon.embodied.gpu.H100.kg"),
    ],
)
def test_400_digit_numbers_and_durations_are_refused(tmp_path: Path, content: str, key: str) -> None:
    error = refuse(tmp_path, content)
    assert error.key == key
    assert HUGE not in str(error)  # shown shortened


def test_a_billion_years_is_refused_by_bounds(tmp_path: Path) -> None:
    # It used to start, and the sampler thread died on its first wait.
    error = refuse(tmp_path, "sample:\n  interval: 1000000000y\n")
    assert error.key == "sample.interval" and "100y" in error.problem
    error = refuse(tmp_path, "sample:\n  interval: 11m\n")
    assert error.key == "sample.interval" and "at most 10m" in error.problem


def test_simulated_count_of_ten_to_the_400_is_refused_at_once(tmp_path: Path) -> None:
    started = time.process_time()
    error = refuse(
        tmp_path, "", argv=(f"--source.gpu.simulated.count=1{'0' * 400}", "--source.gpu=simulated")
    )
    assert error.key == "--source.gpu.simulated.count" and "at most 1024" in error.problem
    assert time.process_time() - started < 5  # it used to hang building the fleet


@pytest.mark.parametrize(
    "content",
    [b"sample:\n  interval: 1s\nlog:\n  level: \xff\xfe\n", b"\xef\xbb\xbfsource:\n  gpu: \xc3\x28\n"],
)
def test_non_utf8_config_names_the_file_and_line(tmp_path: Path, content: bytes) -> None:
    error = refuse(tmp_path, content)
    assert error.key == "config.file" and "not UTF-8" in error.problem and "line" in error.problem


@pytest.mark.parametrize("form", ["flow", "block"])
def test_yaml_nested_5000_deep_is_one_line(tmp_path: Path, form: str) -> None:
    if form == "flow":
        content = "sample: " + "[" * 5000 + "]" * 5000 + "\n"
    else:
        # Indentation grows with depth: 1,000 levels (past Python's recursion limit) fit in 1 MiB.
        content = "".join(" " * depth + f"k{depth}:\n" for depth in range(1000))
    error = refuse(tmp_path, content)
    assert error.key == "config.file" and "nested deeper than" in error.problem


def test_billion_laughs_is_refused_without_expanding(tmp_path: Path) -> None:
    # 9^9 = 387 million "lol"s if expanded; it grew memory by 40 MB/s while formatting the message.
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.process_time()
    error = refuse(tmp_path, LAUGHS)
    assert error.key == "config.file" and "aliases" in error.problem and "line 1" in error.problem
    assert time.process_time() - started < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB


def test_anchors_are_refused_even_when_small(tmp_path: Path) -> None:
    error = refuse(tmp_path, "log: &x {level: debug}\n")
    assert error.key == "config.file" and "anchors" in error.problem


@pytest.mark.parametrize(
    ("content", "key", "fragment"),
    [
        ("source.cpu.tdp-watts: .nan\n", "source.cpu.tdp-watts", "finite"),
        ("source.cpu.tdp-watts: .inf\n", "source.cpu.tdp-watts", "finite"),
        ("source.cpu.tdp-watts: 1e400\n", "source.cpu.tdp-watts", "finite"),
        ("source.cpu.tdp-watts: 5000\n", "source.cpu.tdp-watts", "at most 2000"),
        ("attribution.idle-watts: -1\n", "attribution.idle-watts", "at least 0"),
        ("attribution.max-series: 1e3\n", "attribution.max-series", "integer"),
        ("state.file: [a, b]\n", "state.file", "string"),
        ("log.level: {a: 1}\n", "log.level", "not one of"),
        ("attribution.cpu: [true]\n", "attribution.cpu", "true or false"),
        (f"state.file: {'x' * 5000}\n", "state.file", "at most 4096"),
        ("sample.interval: 2024-13-45\n", "config.file", "month"),
        (f"source.gpu.simulated.count: {'9' * 5000}\n", "config.file", "4300 digits"),
        ("sample: !!python/object:os.system x\n", "config.file", "constructor"),
        ("sample: \x00\n", "config.file", "#x0000"),
        ("web.listen-address: 'a..b:9877'\n", "web.listen-address", "host name"),
        ("web.listen-address: ':\u00b2'\n", "web.listen-address", "host]:port"),
        ("web.telemetry-path: '/a b'\n", "web.telemetry-path", "absolute URL path"),
        ("carbon:\n  pue: 9\n", "carbon.pue", "<= 5"),
        ("carbon:\n  pue: .nan\n", "carbon.pue", "number"),
    ],
)
def test_other_bad_values_name_their_key(tmp_path: Path, content: str, key: str, fragment: str) -> None:
    error = refuse(tmp_path, content)
    assert error.key == key and fragment in error.problem, error


def test_long_values_are_shown_shortened(tmp_path: Path) -> None:
    error = refuse(tmp_path, f"log:\n  level: {'v' * 100_000}\n")
    assert error.key == "log.level"
    assert f"'{'v' * (SHOWN_CHARS - 1)}..." in error.problem and len(str(error)) < 200


def test_a_huge_key_is_shown_shortened(tmp_path: Path) -> None:
    error = refuse(tmp_path, f"? {'k' * 100_000}\n: 1\n")  # an explicit key: plain ones stop at 1,024
    assert error.key.startswith("kkkk") and len(error.key) < 200 and "unknown setting" in error.problem


def test_a_key_with_a_newline_stays_on_one_line(tmp_path: Path) -> None:
    error = refuse(tmp_path, '"a\\nb": 1\n')
    assert error.key == "a\\nb"


def test_empty_value_leaves_the_default(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("sample:\n  interval:\n")
    assert load_config([f"--config.file={path}"], environ={})["sample.interval"] == 1.0


def test_config_file_must_be_a_regular_file_of_bounded_size(tmp_path: Path) -> None:
    for target, fragment in (("/dev/zero", "not a regular file"), (str(tmp_path), "not a regular file")):
        with pytest.raises(ConfigError) as info:
            load_config([f"--config.file={target}"], environ={})
        assert info.value.key == "config.file" and fragment in info.value.problem
    big = tmp_path / "big.yml"
    big.write_text("# " + "x" * (2 << 20) + "\n")
    with pytest.raises(ConfigError) as info:
        load_config([f"--config.file={big}"], environ={})
    assert "larger than 1024 KiB" in info.value.problem


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"FOOTPRINT_SAMPLE_INTERVAL": HUGE + "h"}, "FOOTPRINT_SAMPLE_INTERVAL"),
        ({"FOOTPRINT_SOURCE_GPU_SIMULATED_COUNT": HUGE}, "FOOTPRINT_SOURCE_GPU_SIMULATED_COUNT"),
        ({"FOOTPRINT_SOURCE_CPU_TDP_WATTS": "nan"}, "FOOTPRINT_SOURCE_CPU_TDP_WATTS"),
        ({"FOOTPRINT_STATE_FILE": "a\0b"}, "FOOTPRINT_STATE_FILE"),
        ({"FOOTPRINT_LOG_LEVEL": "\udcff"}, "FOOTPRINT_LOG_LEVEL"),  # a non-UTF-8 byte, as Python decodes it
    ],
)
def test_bad_environment_names_the_variable(tmp_path: Path, env: dict[str, str], key: str) -> None:
    assert refuse(tmp_path, "", env=env).key == key


def test_command_line_errors_are_shortened(tmp_path: Path) -> None:
    error = refuse(tmp_path, "", argv=(f"--no-such-{'x' * 10_000}",))
    assert error.key == "command line" and "unrecognized" in error.problem and len(str(error)) < 300


def test_every_number_and_duration_has_bounds_shown_in_help_and_docs() -> None:
    table = flags_table()
    for flag in FLAGS:
        if flag.kind in ("int", "float", "duration"):
            assert flag.minimum is not None and flag.maximum is not None, flag.name
            assert flag.bounds_text is not None and f"Range: {flag.bounds_text}." in table
            # The largest accepted value starts; one beyond it is refused.
            if flag.kind == "duration":
                assert flag.maximum <= parse_duration("100y")


def test_shown_never_formats_a_whole_huge_value() -> None:
    nested: list[object] = ["lol"] * 9
    for _ in range(40):  # 9^40 leaves if expanded
        nested = [nested] * 9
    started = time.process_time()
    text = shown(nested)
    assert len(text) <= SHOWN_CHARS + 3 and time.process_time() - started < 1
    assert shown(10**5000).startswith("<an integer of about 50")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"budgets:\n  - name: \xff\n", "not UTF-8"),
        (
            f"budgets:\n  - name: b\n    selector: '{{namespace=\"a\"}}'\n    period: 30d\n"
            f"    grams: {HUGE}\n".encode(),
            "budgets[0] (b).grams: must be a positive number",
        ),
        (LAUGHS.replace("sample:\n  interval: *i", "budgets: *i").encode(), "aliases"),
    ],
)
def test_bad_budgets_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, fragment: str
) -> None:
    from exporter.budgets import main as budgets_main

    path = tmp_path / "budgets.yml"
    path.write_bytes(content)
    assert budgets_main(["check", "--budgets", str(path), "--rules-out", str(tmp_path / "r.yml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err
