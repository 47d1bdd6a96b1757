"""Pure statistics of the validation kit: update periods, integrals, per-process sample behaviour, splits."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any


def quantile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); ``values`` must not be empty."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("quantile of nothing")
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary(values: Sequence[float], scale: float = 1.0) -> dict[str, Any]:
    """n, median, p90, min and max of ``values`` times ``scale`` (e.g. 1000 for seconds to ms)."""
    if not values:
        return {"n": 0, "median": None, "p90": None, "min": None, "max": None}
    return {
        "n": len(values),
        "median": quantile(values, 0.5) * scale,
        "p90": quantile(values, 0.9) * scale,
        "min": min(values) * scale,
        "max": max(values) * scale,
    }


def change_times(times: Sequence[float], values: Sequence[Any]) -> list[float]:
    """The poll times at which a value differed from the previous poll's (None polls are skipped)."""
    out: list[float] = []
    previous: Any = None
    for t, v in zip(times, values, strict=True):
        if v is None:
            continue
        if previous is not None and v != previous:
            out.append(t)
        previous = v
    return out


def update_period(times: Sequence[float], values: Sequence[Any], poll_s: float) -> dict[str, Any]:
    """How often a polled value changes: intervals between changes, in milliseconds.

    An update that repeats the previous value is invisible to a poller, so with a quantised or flat
    signal this is an upper bound of the true update period; the resolution is the poll interval.
    """
    changes = change_times(times, values)
    intervals = [b - a for a, b in itertools.pairwise(changes)]
    out = summary(intervals, 1000.0)
    out["changes"] = len(changes)
    out["polls"] = sum(1 for v in values if v is not None)
    out["poll_ms"] = poll_s * 1000.0
    # NVML calls slower than the poll interval (in a sandbox, say) stretch it: the real resolution.
    gaps = [b - a for a, b in itertools.pairwise(times)]
    out["poll_ms_achieved"] = quantile(gaps, 0.5) * 1000.0 if gaps else None
    return out


def trapezoid(times: Sequence[float], values: Sequence[float | None]) -> float | None:
    """Integral of a polled signal over its polls (None polls dropped); None with fewer than two."""
    points = [(t, v) for t, v in zip(times, values, strict=True) if v is not None]
    if len(points) < 2:
        return None
    return math.fsum((t1 - t0) * (v0 + v1) / 2.0 for (t0, v0), (t1, v1) in itertools.pairwise(points))


def every(
    times: Sequence[float], values: Sequence[float | None], step_s: float
) -> tuple[list[float], list[float]]:
    """The first valid poll at or after each multiple of ``step_s`` from the first poll: what a poller
    that reads only every ``step_s`` would have seen."""
    out_t: list[float] = []
    out_v: list[float] = []
    next_t: float | None = None
    for t, v in zip(times, values, strict=True):
        if v is None:
            continue
        if next_t is None or t >= next_t - 1e-9:
            out_t.append(t)
            out_v.append(v)
            next_t = (t if next_t is None else next_t) + step_s
            while next_t <= t:
                next_t += step_s
    return out_t, out_v


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def process_sample_stats(calls: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Behaviour of nvmlDeviceGetProcessUtilization over a series of calls from one poller.

    ``calls``: one per call, {"t", "result": "ok" | error name, "samples": [{"pid", "ts_us", "sm"}]},
    in call order. Returns how often calls came back empty (NOT_FOUND), how many samples each call
    gave per process, and for each process the interval between its samples' NVML timestamps.
    """
    n_calls = 0
    results: dict[str, int] = {}
    per_call_counts: list[int] = []
    per_pid_ts: dict[int, list[int]] = {}
    per_pid_sm: dict[int, list[float]] = {}
    per_pid_per_call: dict[int, list[int]] = {}
    all_ts: set[int] = set()
    for call in calls:
        n_calls += 1
        result = str(call.get("result"))
        results[result] = results.get(result, 0) + 1
        if result != "ok":
            continue
        counts: dict[int, int] = {}
        for s in call.get("samples") or ():
            pid, ts = int(s["pid"]), int(s["ts_us"])
            counts[pid] = counts.get(pid, 0) + 1
            per_pid_ts.setdefault(pid, []).append(ts)
            per_pid_sm.setdefault(pid, []).append(float(s["sm"]))
            all_ts.add(ts)
        for pid, count in counts.items():
            per_pid_per_call.setdefault(pid, []).append(count)
        per_call_counts.append(sum(counts.values()))
    per_pid: dict[str, Any] = {}
    for pid, stamps in sorted(per_pid_ts.items()):
        distinct = sorted(set(stamps))
        gaps = [(b - a) / 1e6 for a, b in itertools.pairwise(distinct)]
        per_call = per_pid_per_call.get(pid, [])
        per_pid[str(pid)] = {
            "samples": len(stamps),
            "duplicate_samples": len(stamps) - len(distinct),
            "period_ms": summary(gaps, 1000.0),
            "samples_per_call_mean": sum(per_call) / len(per_call) if per_call else None,
            "samples_per_call_max": max(per_call) if per_call else None,
            "sm_util_mean": sum(per_pid_sm[pid]) / len(per_pid_sm[pid]),
        }
    stamps_sorted = sorted(all_ts)
    gaps_all = [(b - a) / 1e6 for a, b in itertools.pairwise(stamps_sorted)]
    not_found = sum(v for k, v in results.items() if k != "ok")
    return {
        "calls": n_calls,
        "results": results,
        "empty_fraction": not_found / n_calls if n_calls else None,
        "samples_per_call": summary([float(c) for c in per_call_counts]),
        "driver_sample_period_ms": summary(gaps_all, 1000.0),
        "per_pid": per_pid,
    }


def shares(energy_by_name: dict[str, float]) -> dict[str, float | None]:
    total = math.fsum(energy_by_name.values())
    return {k: (v / total if total > 0 else None) for k, v in energy_by_name.items()}
