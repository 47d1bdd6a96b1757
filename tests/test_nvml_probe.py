"""What a real H200 answered to nvmlDeviceGetProcessUtilization, and that the NVML fake answers alike.

tests/fixtures/nvml/h200-process-utilization.json was recorded on a lent H200 by the script beside it:
three processes time-sliced the GPU for 36 s while nvmlDeviceGetProcessUtilization was read every
~20 ms ("f": each sample once), every 1 s ("s") and every 5 s ("l"), each reader passing the newest
timestamp it had seen. The fake (tests/fake_pynvml.py) models what these tests find.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pynvml
import pytest
from fake_pynvml import FakeGpu, FakeNvml, FakeProcess

PROBE = Path(__file__).parent / "fixtures" / "nvml" / "h200-process-utilization.json"
PERIOD_US = 200_000


def _calls(data: dict[str, Any], reader: str) -> list[list[tuple[int, int, int]]]:
    """The answers of one reader that returned samples, as (pid, timestamp us, smUtil) tuples."""
    return [[tuple(x) for x in r] for _, r in data[reader] if isinstance(r, list)]


@pytest.fixture(scope="module")
def probe() -> dict[str, Any]:
    return dict(json.loads(PROBE.read_text()))


def _one_moment_each(calls: list[list[tuple[int, int, int]]]) -> None:
    """Read fast enough, each answer holds one sample: one process per sampling moment."""
    assert Counter(len(c) for c in calls).most_common(1)[0][0] == 1
    moments = sorted({ts for c in calls for _, ts, _ in c})
    gaps = [b - a for a, b in itertools.pairwise(moments)]
    # Moments every 200 ms (on one clock for all processes: any two are whole periods apart).
    assert Counter(round(g / PERIOD_US) for g in gaps).most_common(1)[0][0] == 1
    assert all(abs(g - round(g / PERIOD_US) * PERIOD_US) < 5_000 for g in gaps)


def _means_over_moments(values: list[int], moments: int, full: int) -> None:
    """One value per process and read: its samples' sum over all the moments in the read's window."""
    step = full / moments
    near = [v for v in values if abs(v / step - round(v / step)) * step <= 1.0]
    assert len(near) >= 0.9 * len(values), values


def test_h200_gives_one_process_per_sampling_moment_on_a_200ms_clock(probe: dict[str, Any]) -> None:
    fast = _calls(probe, "f")
    assert len(fast) > 150
    _one_moment_each(fast)
    assert all(len({pid for pid, _, _ in c}) == len(c) for c in fast)  # one structure per process
    # Each moment gives the period's utilisation (always busy: 99) to one of the three processes.
    assert Counter(v for c in fast for _, _, v in c).most_common(1)[0][0] == 99
    assert {pid for c in fast for pid, _, _ in c} == set(probe["pid"])
    # Timestamps are wall-clock microseconds, readable about 10 ms after the moment.
    lags = sorted(now - ts / 1e6 for now, r in probe["f"] if isinstance(r, list) for _, ts, _ in r)
    assert 0.0 <= lags[len(lags) // 2] < 0.05


def test_h200_averages_over_every_moment_since_the_timestamp_idle_ones_as_zero(probe: dict[str, Any]) -> None:
    slow = _calls(probe, "s")
    assert len(slow) >= 30 and all(len({p for p, _, _ in c}) == len(c) for c in slow)
    _means_over_moments([v for c in slow for _, _, v in c], 5, 99)  # steps of ~20 for 1 s
    lagged = _calls(probe, "l")
    # Over 5 s (25 moments) the three processes' values add up to about the GPU's 99.
    assert all(sum(v for _, _, v in c) == pytest.approx(99, abs=12) for c in lagged[1:])


def test_fake_answers_as_the_h200_did() -> None:
    a, b, c = 433, 434, 435
    gpu = FakeGpu(
        uuid="GPU-h200",
        sample_period_s=0.2,
        processes=[FakeProcess(a, sm_util=100), FakeProcess(b, sm_util=100), FakeProcess(c, sm_util=100)],
    )
    nvml = FakeNvml(gpus=[gpu])
    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    fast: list[list[tuple[int, int, int]]] = []
    slow: list[list[tuple[int, int, int]]] = []
    fast_ts = slow_ts = 0
    for step in range(1, 1801):  # 36 s in 20 ms steps; B busy every other 0.1 s, C 4 s on, 4 s off
        gpu.processes[1].sm_util = 100 if (step // 5) % 2 == 0 else 0
        gpu.processes[2].sm_util = 100 if (step // 200) % 2 == 0 else 0
        # Time-sliced: the busy ones share the 20 ms.
        busy = [p for p in gpu.processes if p.sm_util]
        for p in busy:
            p.sm_util = 100 / len(busy)
        nvml.advance(0.02)
        for reader, every in ((fast, 1), (slow, 50)):
            if step % every:
                continue
            ts = fast_ts if reader is fast else slow_ts
            try:
                answer = [
                    (s.pid, s.timeStamp, s.smUtil) for s in nvml.nvmlDeviceGetProcessUtilization(handle, ts)
                ]
            except pynvml.NVMLError_NotFound:
                continue
            reader.append(answer)
            newest = max(t for _, t, _ in answer)
            if reader is fast:
                fast_ts = newest
            else:
                slow_ts = newest
    _one_moment_each(fast)
    assert Counter(v for c in fast for _, _, v in c).most_common(1)[0][0] == 100
    _means_over_moments([v for c in slow for _, _, v in c], 5, 100)
