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
