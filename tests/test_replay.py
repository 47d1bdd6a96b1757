"""Replay traces: parsing, holding values between samples, exact energy, looping, bad traces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter.errors import ConfigError
from exporter.sampler import Sampler
from exporter.sources.replay import ReplayGpuSource


def write_trace(path: Path, samples: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    return path


def ramp_trace(path: Path, with_counter: bool) -> tuple[Path, float]:
    """Power ramps linearly 100 -> 700 W over 60 s in 1 s steps: exact energy = 400 W x 60 s."""
    samples, energy = [], 5000.0
    for k in range(61):
        power = 100.0 + 10.0 * k
        gpu: dict[str, object] = {
            "index": 0,
            "uuid": "GPU-a",
            "name": "NVIDIA H100 80GB HBM3",
            "power_w": power,
            "util": 0.5,
            "processes": [{"pid": 7, "comm": "python", "sm_util": 0.5}],
        }
        if with_counter:
            if k:
                energy += (power - 5.0) * 1.0  # trapezoid of the ramp: mean of the two ends
            gpu["energy_j"] = energy
        samples.append({"t": float(k), "gpus": [gpu]})
    return write_trace(path, samples), 400.0 * 60.0


@pytest.mark.parametrize("with_counter", [True, False])
def test_energy_matches_exact_integral_through_the_sampler(tmp_path: Path, with_counter: bool) -> None:
    path, exact = ramp_trace(tmp_path / "t.jsonl", with_counter)
    clock = [100.0]
    sampler = Sampler(ReplayGpuSource(str(path)), None, clock=lambda: clock[0])
    # 0.7 s steps never line up with the trace's 1 s samples: energy must be interpolated, not stepped.
    while clock[0] <= 100.0 + 65.0:
        sampler.tick()
        clock[0] += 0.7
    total = sampler.snapshot.gpus[0].energy_j_total
    assert abs(total - exact) / exact < 0.005
    assert total == pytest.approx(exact, rel=1e-9)  # and in fact exact for this trace


def test_holds_earlier_sample_between_samples(tmp_path: Path) -> None:
    path, _ = ramp_trace(tmp_path / "t.jsonl", True)
    src = ReplayGpuSource(str(path))
    src.read(0.0)
    reading = src.read(10.6)[0]
    assert reading.power_w == 200.0  # sample at t=10
    assert reading.processes is not None and reading.processes[0].pid == 7
    assert reading.energy_j == pytest.approx(ReplayGpuSource.energy_at(src.tracks[0], 10.6))


def test_stops_at_end_or_loops(tmp_path: Path) -> None:
    path, exact = ramp_trace(tmp_path / "t.jsonl", True)
    once = ReplayGpuSource(str(path))
    once.read(0.0)
    assert once.read(500.0)[0].energy_j == pytest.approx(exact)
    looped = ReplayGpuSource(str(path), loop=True)
    looped.read(0.0)
    assert looped.read(150.0)[0].energy_j == pytest.approx(
        2 * exact + ReplayGpuSource.energy_at(looped.tracks[0], 30)
    )


@pytest.mark.parametrize(
    ("lines", "fragment"),
    [
        (['{"t": 0, "gpus": [{"index": 0, "uuid": "a", "power_w": 1}]}', "{oops"], "line 2"),
        (
            [
                '{"t": 1, "gpus": [{"index": 0, "uuid": "a", "power_w": 1}]}',
                '{"t": 0, "gpus": [{"index": 0, "uuid": "a", "power_w": 1}]}',
            ],
            "does not increase",
        ),
        (['{"t": 0, "gpus": [{"index": 0, "uuid": "a", "power_w": "hot"}]}'], "power_w"),
        (['{"t": 0, "gpus": [{"uuid": "a", "power_w": 1}]}'], "index and uuid"),
        ([], "no samples"),
    ],
)
def test_bad_trace_is_a_config_error(tmp_path: Path, lines: list[str], fragment: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines))
    with pytest.raises(ConfigError) as info:
        ReplayGpuSource(str(path))
    assert info.value.key == "source.gpu.replay.file"
    assert fragment in info.value.problem


GOOD = {"index": 0, "uuid": "GPU-a", "power_w": 100.0}


def line(t: float, *gpus: dict[str, object]) -> str:
    return json.dumps({"t": t, "gpus": list(gpus or [GOOD])})


def refused(tmp_path: Path, content: bytes | str) -> ConfigError:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(ConfigError) as info:
        ReplayGpuSource(str(path))
    assert info.value.key == "source.gpu.replay.file"
    assert "\n" not in str(info.value) and len(str(info.value)) < 400
    return info.value


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        # Binary garbage: a traceback before (UnicodeDecodeError while iterating the file).
        (line(0).encode() + b"\n" + bytes(range(256)) * 4 + b"\n", "line 2: not JSON"),
        (
            line(0).encode() + b"\n" + bytes(range(128, 256)) * 4 + b"\n",
            "line 2: not UTF-8 (byte 0x80 at column 1)",
        ),
        (
            line(0).encode()
            + b"\n"
            + line(1, {**GOOD, "processes": [{"pid": 1, "comm": "py"}]}).encode().replace(b"py", b"p\xffy")
            + b"\n",
            "line 2: not UTF-8",
        ),
        (line(0, {**GOOD, "processes": [{"pid": 1, "comm": "\udcff"}]}), "line 1.gpus[0].processes[0].comm"),
        (line(0, {**GOOD, "power_w": 1e308}), "line 1.gpus[0].power_w: 1e+308 is outside 0 to 100000"),
        (line(0, {**GOOD, "power_w": -200.0}), "line 1.gpus[0].power_w: -200.0 is outside"),
        (line(0, {**GOOD, "energy_j": -1.0}), "energy_j"),
        (line(0, {**GOOD, "util": 1.5}), "util"),
        (line(0, {**GOOD, "processes": [{"pid": 1, "sm_util": -0.1}]}), "sm_util"),
        (line(0, {**GOOD, "processes": [{"pid": -1}]}), "pid"),
        (line(0, {**GOOD, "processes": [{"pid": 1}, {"pid": 1}]}), "pid 1 appears twice"),
        (line(0, {**GOOD, "processes": {"pid": 1}}), "expected a list"),
        ('{"t": 0, "gpus": [{"index": 0, "uuid": "a", "power_w": NaN}]}', "NaN is not a number"),
        ('{"t": Infinity, "gpus": []}', "Infinity is not a number"),
        ('{"t": 0, "gpus": [{"index": 0, "uuid": "a", "power_w": 1e400}]}', "finite"),
        ('{"t": 0, "gpus": [{"index": 0, "uuid": "a", "power_w": ' + "9" * 400 + "}]}", "outside"),
        ('{"t": 0, "gpus": [{"index": 0, "uuid": "a", "power_w": ' + "9" * 5000 + "}]}", "not JSON"),
        ('{"t": 0, "gpus": ' + "[" * 100_000 + "]" * 100_000 + "}", "line 1"),
        (line(-1.0), "line 1.t"),
        (line(0) + "\n" + line(0), "line 2.t: t=0 does not increase"),
        (line(0) + "\n\n" + line(2) + "\n" + line(1), "line 4.t: t=1 does not increase"),
        (line(0, GOOD, {**GOOD, "power_w": 900.0}), "line 1.gpus[1]: GPU index 0 appears twice"),
        (line(0, GOOD, {**GOOD, "index": 1}), "line 1.gpus[1]: uuid 'GPU-a' appears twice"),
        (line(0) + "\n" + line(1, {**GOOD, "uuid": "GPU-b"}), "but 'GPU-a' on line 1"),
        (line(0, {"index": 0, "uuid": "a"}), "power_w: missing"),
        (line(0, {**GOOD, "uuid": ""}), "uuid is empty"),
        (line(0, {**GOOD, "index": 10**6}), "index"),
        (line(0, {**GOOD, "name": "x" * 5000}), "name"),
        ('{"t": 0, "gpus": [' + ",".join(['{"index": 0}'] * 10) + "]}\n", "index and uuid"),
        ("x" * ((4 << 20) + 10), "line 1: longer than 4 MiB"),
    ],
)
def test_bad_trace_lines_name_the_line(tmp_path: Path, content: bytes | str, fragment: str) -> None:
    assert fragment in refused(tmp_path, content).problem


def test_duplicate_index_is_not_merged(tmp_path: Path) -> None:
    # The campaign's case: two entries for GPU 0 were added, 1,950 J served where 1,050 J was due.
    a = {"index": 0, "uuid": "GPU-a", "power_w": 350.0}
    b = {"index": 0, "uuid": "GPU-a", "power_w": 300.0}
    error = refused(tmp_path, "\n".join(line(float(t), a, b) for t in range(4)))
    assert "line 1.gpus[1]: GPU index 0 appears twice in one sample" in error.problem


def test_end_of_trace_is_logged_and_marks_gpus_down(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path, exact = ramp_trace(tmp_path / "t.jsonl", True)
    source = ReplayGpuSource(str(path))
    assert all(r.up for r in source.read(0.0))
    assert all(r.up for r in source.read(60.0))  # the last sample
    with caplog.at_level("WARNING", logger="exporter.sources.replay"):
        after = source.read(60.4)  # the first read past the end still serves the end: no energy lost
        later = source.read(61.0)
        source.read(62.0)
    assert after[0].up and after[0].energy_j == pytest.approx(exact)
    assert not later[0].up and later[0].error == "trace_ended" and later[0].energy_j == pytest.approx(exact)
    ended = [r for r in caplog.records if "ended" in r.getMessage()]
    assert len(ended) == 1 and str(path) in ended[0].getMessage()


def test_sampler_counts_all_energy_up_to_the_end_then_holds(tmp_path: Path) -> None:
    path, exact = ramp_trace(tmp_path / "t.jsonl", False)
    clock = [0.0]
    sampler = Sampler(ReplayGpuSource(str(path)), None, clock=lambda: clock[0])
    while clock[0] < 70.0:
        sampler.tick()
        clock[0] += 0.7  # ticks never land on the trace's end (60 s)
    gpu = sampler.snapshot.gpus[0]
    assert not gpu.reading.up and gpu.energy_j_total == pytest.approx(exact, rel=1e-9)


def test_looping_trace_stays_up(tmp_path: Path) -> None:
    path, _ = ramp_trace(tmp_path / "t.jsonl", True)
    source = ReplayGpuSource(str(path), loop=True)
    source.read(0.0)
    assert all(r.up for r in source.read(1000.0))


def test_trace_changed_while_playing_fails_the_read_not_the_exporter(tmp_path: Path) -> None:
    path, _ = ramp_trace(tmp_path / "t.jsonl", True)
    source = ReplayGpuSource(str(path))
    source.read(0.0)
    path.write_bytes(b"\xff" * path.stat().st_size)  # same inode, rewritten in place
    with pytest.raises(ValueError, match="changed while playing"):
        source.read(30.0)
    sampler = Sampler(source, None, clock=lambda: 40.0)
    snapshot = sampler.tick()  # the sampler counts it as a failed read
    assert [s.up for s in snapshot.sources] == [False]


def test_play_reads_back_only_the_lines_it_needs(tmp_path: Path) -> None:
    path, _ = ramp_trace(tmp_path / "t.jsonl", True)
    source = ReplayGpuSource(str(path))
    assert not hasattr(source.tracks[0], "samples")  # the samples stay in the file
    source.read(0.0)
    assert source.read(10.6)[0].power_w == 200.0
    assert len(source._lines) <= 4


def test_the_real_h200_trace_passes_every_check() -> None:
    # Recorded on a lent H200 by the validation kit (tests/fixtures/real-gpu): the checks must not
    # refuse what the recorder writes from real NVML readings.
    run = Path(__file__).parent / "fixtures" / "real-gpu" / "h200-run1"
    source = ReplayGpuSource(str(run / "trace.jsonl"))
    report = json.loads((run / "report.json").read_text())["replay_check"]
    assert source.duration == pytest.approx(report["trace_span_s"])
    assert source.tracks[0].energy[-1] == pytest.approx(report["trace_energy_j"], rel=1e-12)
    source.close()
