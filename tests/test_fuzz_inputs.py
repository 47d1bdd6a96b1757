"""Fuzzing every input a user hands the exporter: a clean start, or exit 2 and one line naming the key.

Configuration files, flags, environment variables, web configs and replay trace lines are generated
(random structures over our real keys, odd numbers and strings, mutated bytes) and run in-process
through the checks the exporter runs at start; a handful go through the real process.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.cli import check_settings
from exporter.config import FLAGS, FLAGS_BY_NAME, Config, Flag, load_config
from exporter.durations import format_duration
from exporter.errors import ConfigError
from exporter.sources.replay import ReplayGpuSource
from exporter.web import load_web_config

# Hypothesis warns when an example's repr is large (our long strings); the examples are meant to be.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_MESSAGE = 500


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fuzz-") as name:
        yield Path(name)


def assert_one_line(error: ConfigError) -> None:
    message = str(error)
    assert error.key and message.startswith(error.key + ": ") and error.problem
    assert "\n" not in message and "\r" not in message and message.isprintable(), message
    assert len(message) < MAX_MESSAGE, message


def assert_in_bounds(cfg: Config) -> None:
    """What starts carries only values the exporter can run with."""
    for flag in FLAGS:
        value = cfg[flag.name]
        if flag.kind in ("int", "float", "duration") and value is not None:
            assert math.isfinite(value)
            assert flag.minimum is None or value >= flag.minimum
            assert flag.maximum is None or value <= flag.maximum
        if flag.kind == "choice":
            assert value in flag.choices


# --- values: what a user might type, and what an attacker would ---
odd_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            "0",
            "-1",
            "1e400",
            "nan",
            "inf",
            "-inf",
            "1_000",
            " 5 ",
            "0x10",
            "1.5s",
            "1000000000y",
            "9" * 400,
            "9" * 400 + "s",
            "\u00b2",
            "\u0663",
            "10ms",
            "1s",
            "5m",
            "1h",
            "100y",
            "101y",
            "true",
            "no",
            ":9877",
            "[::1]:80",
            "a" * 5000,
            "\udcff",
            "\x00",
            "\n",
            "simulated",
            "replay",
            "auto",
            "none",
            "debug",
            "json",
        ]
    ),
)
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**500), max_value=10**500),
    st.floats(),
    odd_text,
)


def good_value(flag: Flag) -> st.SearchStrategy[Any]:
    """Values inside the flag's contract, so that the accepted path is fuzzed too."""
    low = flag.minimum if flag.minimum is not None else 0
    high = flag.maximum if flag.maximum is not None else 10**6
    if flag.kind == "int":
        return st.integers(int(low), int(high))
    if flag.kind == "float":
        return st.floats(low, high)
    if flag.kind == "duration":
        return st.integers(round(low * 1000), round(high * 1000)).map(lambda ms: format_duration(ms / 1000))
    if flag.kind == "choice":
        return st.sampled_from([c for c in flag.choices if c != "replay"])
    if flag.kind == "bool":
        return st.booleans()
    if flag.name == "web.listen-address":
        return st.sampled_from([":9877", "127.0.0.1:0", "[::1]:9100", "localhost:80"])
    if flag.name in ("config.file", "web.config.file", "source.gpu.replay.file"):
        return st.just("")
    return st.sampled_from(["/var/lib/footprint/state.json", "node-1", "/proc", "/metrics2"])


def flag_value(flag: Flag) -> st.SearchStrategy[Any]:
    return st.one_of(good_value(flag), scalar)


good_docs = st.fixed_dictionaries(
    {}, optional={f.name: good_value(f) for f in FLAGS if f.name != "config.file"}
)
settings_docs = st.fixed_dictionaries(
    {}, optional={f.name: flag_value(f) for f in FLAGS if f.name != "config.file"}
)
segments = st.sampled_from(sorted({part for f in FLAGS for part in f.name.split(".")} | {"carbon", "x"}))
flag_keys = st.one_of(st.sampled_from([f.name for f in FLAGS]), segments, st.text(max_size=10))


def trees(keys: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalar,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)
        ),
        max_leaves=25,
    )


def dump(data: Any) -> bytes:
    try:
        return yaml.safe_dump(data, allow_unicode=True).encode("utf-8", "surrogateescape")
    except (yaml.YAMLError, UnicodeEncodeError):
        return repr(data).encode("utf-8", "surrogateescape")


def mutate(data: bytes, position: int, insert: bytes) -> bytes:
    position = position % (len(data) + 1)
    return data[:position] + insert + data[position:]


carbon = st.fixed_dictionaries(
    {},
    optional={
        "zone": st.one_of(st.sampled_from(["DE", "FR", "WORLD", "nowhere"]), odd_text),
        "pue": scalar,
        "wue": scalar,
        "max_age": scalar,
        "providers": st.lists(
            st.fixed_dictionaries(
                {
                    "type": st.sampled_from(
                        ["static", "ukgrid", "electricitymaps", "watttime", "carbon_aware_sdk", "x"]
                    )
                },
                optional={
                    "grams_per_kwh": scalar,
                    "refresh": scalar,
                    "timeout": scalar,
                    "retries": scalar,
                    "url": odd_text,
                    "token_env": odd_text,
                    "region": odd_text,
                    "location": odd_text,
                },
            ),
            max_size=3,
        ),
        "embodied": trees(st.sampled_from(["enabled", "gpu", "node", "kg", "life_years", "H100"])),
    },
)
config_docs = st.one_of(
    good_docs,
    settings_docs,
    trees(flag_keys),
    st.dictionaries(st.sampled_from([f.name for f in FLAGS]), scalar, max_size=6),
    st.fixed_dictionaries({"carbon": carbon}),
)
config_bytes = st.one_of(
    config_docs.map(dump),
    st.tuples(config_docs.map(dump), st.integers(min_value=0), st.binary(min_size=1, max_size=8)).map(
        lambda t: mutate(*t)
    ),
    st.binary(max_size=200),
)


def check_config(argv: list[str], environ: dict[str, str]) -> None:
    try:
        cfg = load_config(argv, environ=environ)
        check_settings(cfg)
    except ConfigError as error:
        assert_one_line(error)
        return
    assert_in_bounds(cfg)


@FUZZ
@given(content=config_bytes)
def test_configuration_files(workdir: Path, content: bytes) -> None:
    path = workdir / "config.yml"
    path.write_bytes(content)
    check_config([f"--config.file={path}"], {})


flag_values = st.sampled_from(FLAGS).flatmap(
    lambda f: st.one_of(good_value(f).map(str), odd_text).map(lambda v: f"--{f.name}={v}")
)
good_flags = st.lists(
    st.sampled_from(FLAGS).flatmap(lambda f: good_value(f).map(lambda v: f"--{f.name}={v}"))
)
mixed_flags = st.lists(
    st.one_of(flag_values, odd_text, st.sampled_from(["--help=x", "--version=1", "--"])), max_size=5
)
argv = st.one_of(good_flags, mixed_flags)


@FUZZ
@given(args=argv)
def test_flags(args: list[str]) -> None:
    check_config(args, {})


@FUZZ
@given(
    environ=st.dictionaries(
        st.sampled_from([f.env for f in FLAGS if f.name != "config.file"]), odd_text, max_size=5
    )
)
def test_environment(environ: dict[str, str]) -> None:
    check_config([], environ)


web_keys = st.sampled_from(
    [
        "tls_server_config",
        "basic_auth_users",
        "http_server_config",
        "cert_file",
        "key_file",
        "client_auth_type",
        "client_ca_file",
        "min_version",
        "max_version",
        "http2",
        "headers",
        "prometheus",
        "TLS12",
        "x",
    ]
)
hashes = st.one_of(
    st.just("$2y$04$" + "a" * 21 + "e" + "b" * 31),
    st.builds(
        lambda c, rest: f"$2b${c:02d}${rest}",
        st.integers(0, 99),
        st.text("./abcXYZ019", min_size=50, max_size=56),
    ),
    odd_text,
)
web_docs = st.one_of(
    trees(web_keys),
    st.fixed_dictionaries(
        {"basic_auth_users": st.dictionaries(st.one_of(odd_text, st.integers()), hashes, max_size=3)}
    ),
)


@FUZZ
@given(content=st.one_of(web_docs.map(dump), st.binary(max_size=100)))
def test_web_configs(workdir: Path, content: bytes) -> None:
    path = workdir / "web.yml"
    path.write_bytes(content)
    try:
        load_web_config(str(path))
    except ConfigError as error:
        assert_one_line(error)


# --- replay lines ---
json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
)
json_value = st.recursive(
    json_scalar,
    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=5), c, max_size=3)),
    max_leaves=10,
)
process = st.fixed_dictionaries(
    {"pid": st.one_of(st.integers(0, 100), json_value)},
    optional={
        "comm": json_value,
        "user": json_value,
        "sm_util": json_value,
        "used_memory_bytes": json_value,
        "cgroup": json_value,
        "start_time": json_value,
    },
)
gpu = st.fixed_dictionaries(
    {
        "index": st.one_of(st.integers(0, 3), json_value),
        "uuid": st.one_of(st.sampled_from(["GPU-a", "GPU-b"]), json_value),
        "power_w": st.one_of(st.floats(0, 1000), json_value),
    },
    optional={
        "energy_j": json_value,
        "util": json_value,
        "mem_used_bytes": json_value,
        "temp_c": json_value,
        "name": json_value,
        "processes": st.one_of(st.lists(process, max_size=3), json_value),
    },
)
valid_process = st.fixed_dictionaries(
    {"pid": st.integers(0, 2**31 - 1)},
    optional={
        "comm": st.text(max_size=15),
        "user": st.text(max_size=8),
        "sm_util": st.floats(0, 1),
        "used_memory_bytes": st.integers(0, 2**40),
        "cgroup": st.text(max_size=40),
        "start_time": st.floats(0, 2e9),
    },
)


def valid_gpu(index: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"index": st.just(index), "uuid": st.just(f"GPU-{index}"), "power_w": st.floats(0, 1000)},
        optional={
            "energy_j": st.floats(0, 1e9),
            "util": st.floats(0, 1),
            "temp_c": st.floats(-10, 110),
            "name": st.text(max_size=20),
            "processes": st.lists(valid_process, max_size=3, unique_by=lambda p: p["pid"]),
        },
    )


trace_line = st.one_of(
    st.builds(
        lambda t, gpus: json.dumps({"t": t, "gpus": gpus}),
        st.one_of(st.floats(0, 100), json_value),
        st.lists(gpu, max_size=3),
    ),
    json_value.map(json.dumps),
    st.sampled_from(
        ['{"t": NaN, "gpus": []}', '{"t": 1, "gpus": [{"index": 0, "uuid": "a", "power_w": Infinity}]}', ""]
    ),
)


@st.composite
def valid_trace(draw: st.DrawFn) -> bytes:
    steps = draw(st.lists(st.floats(0.001, 10), min_size=1, max_size=6))
    lines, t = [], 0.0
    for step in steps:
        indexes = draw(st.lists(st.integers(0, 3), min_size=1, max_size=3, unique=True))
        gpus = [draw(valid_gpu(i)) for i in indexes]
        # Now and then one field of one line gets any JSON value at all.
        if draw(st.integers(0, 7)) == 0:
            gpus[0][draw(st.sampled_from(["power_w", "energy_j", "util", "index", "processes", "uuid"]))] = (
                draw(json_value)
            )
        lines.append(json.dumps({"t": t, "gpus": gpus}))
        t += step
    return "\n".join(lines).encode("utf-8", "surrogatepass")


trace_bytes = st.one_of(
    valid_trace(),
    st.lists(trace_line, min_size=1, max_size=6).map(
        lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")
    ),
    st.tuples(
        st.lists(trace_line, min_size=1, max_size=4).map(
            lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")
        ),
        st.integers(min_value=0),
        st.binary(min_size=1, max_size=6),
    ).map(lambda t: mutate(*t)),
)


@FUZZ
@given(content=trace_bytes, times=st.lists(st.floats(0, 500), min_size=1, max_size=5))
def test_replay_traces(workdir: Path, content: bytes, times: list[float]) -> None:
    path = workdir / "trace.jsonl"
    path.write_bytes(content)
    try:
        source = ReplayGpuSource(str(path))
    except ConfigError as error:
        assert_one_line(error)
        assert error.key == "source.gpu.replay.file"
        assert "line " in error.problem or "no samples" in error.problem
        return
    try:
        for now in sorted(times):
            for reading in source.read(now):
                assert reading.power_w is not None and 0 <= reading.power_w <= 100_000
                assert (
                    reading.energy_j is not None and math.isfinite(reading.energy_j) and reading.energy_j >= 0
                )
                for p in reading.processes or ():
                    p.comm.encode("utf-8")  # every label value can be served
    finally:
        source.close()


# --- a few through the real process: exit 2 and exactly one line on stderr ---
bad_numbers = st.sampled_from(
    ["9" * 400, "1e400", "nan", "-1", "1000000000y", "\u00b2", "1.5s", "[1, 2]", "{a: 1}"]
)


@settings(max_examples=5, deadline=None)
@given(
    flag=st.sampled_from([f for f in FLAGS if f.kind in ("int", "float", "duration")]),
    bad=bad_numbers,
    rest=st.dictionaries(
        st.sampled_from(["log.level", "source.cpu"]), st.sampled_from(["debug", "none"]), max_size=2
    ),
)
def test_real_process_exits_2_with_one_line(workdir: Path, flag: Any, bad: str, rest: dict[str, str]) -> None:
    path = workdir / "process.yml"
    path.write_text("\n".join([f"{flag.name}: {bad}", *(f"{k}: {v}" for k, v in rest.items()), ""]))
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", f"--config.file={path}", "--web.listen-address=127.0.0.1:0"],
        capture_output=True,
        text=True,
        errors="backslashreplace",
        timeout=60,
    )
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith(f"footprint-exporter: error: {flag.name}: ") or lines[0].startswith(
        "footprint-exporter: error: config.file: "
    ), lines[0]
    assert FLAGS_BY_NAME[flag.name].kind == flag.kind
