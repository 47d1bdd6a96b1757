"""Plays a recorded GPU trace (JSON Lines, DESIGN.md section 5) in real time from the exporter's start."""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass
from typing import Any

from exporter.errors import ConfigError
from exporter.model import GpuProcessSample, GpuReading


@dataclass(frozen=True, slots=True)
class _GpuTrack:
    """One GPU across the trace: its samples and the cumulative energy at each sample time."""

    index: int
    uuid: str
    times: tuple[float, ...]
    samples: tuple[dict[str, Any], ...]
    energy: tuple[float, ...]  # joules at each sample time, starting at 0
    has_counter: bool


def _number(value: Any, where: str, kind: type = float) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    return kind(value)


def _process(raw: Any, where: str) -> GpuProcessSample:
    if not isinstance(raw, dict) or "pid" not in raw:
        raise ValueError(f"{where}: a process needs at least a pid")
    sm = raw.get("sm_util")
    mem = raw.get("used_memory_bytes")
    return GpuProcessSample(
        pid=_number(raw["pid"], f"{where}.pid", int),
        comm=str(raw.get("comm", "")),
        user=str(raw.get("user", "")),
        sm_util=None if sm is None else _number(sm, f"{where}.sm_util"),
        used_memory_bytes=None if mem is None else _number(mem, f"{where}.used_memory_bytes", int),
        cgroup=raw.get("cgroup") or None,
        start_time=None
        if raw.get("start_time") is None
        else _number(raw["start_time"], f"{where}.start_time"),
    )


def load_trace(path: str) -> list[_GpuTrack]:
    """Parse and check a trace file; raises ConfigError naming the line on any problem."""
    per_gpu: dict[int, list[tuple[float, dict[str, Any]]]] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            last_t = -math.inf
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                where = f"line {lineno}"
                try:
                    sample = json.loads(line)
                    if (
                        not isinstance(sample, dict)
                        or "t" not in sample
                        or not isinstance(sample.get("gpus"), list)
                    ):
                        raise ValueError("expected an object with t and gpus")
                    t = _number(sample["t"], f"{where}.t")
                    if t <= last_t:
                        raise ValueError(f"t={t} does not increase")
                    last_t = t
                    for n, gpu in enumerate(sample["gpus"]):
                        if not isinstance(gpu, dict) or "index" not in gpu or "uuid" not in gpu:
                            raise ValueError(f"gpus[{n}] needs index and uuid")
                        _number(gpu.get("power_w"), f"{where}.gpus[{n}].power_w")
                        if gpu.get("energy_j") is not None:
                            _number(gpu["energy_j"], f"{where}.gpus[{n}].energy_j")
                        gpu["_procs"] = tuple(
                            _process(p, f"{where}.gpus[{n}].processes[{k}]")
                            for k, p in enumerate(gpu.get("processes") or ())
                        )
                        per_gpu.setdefault(_number(gpu["index"], "index", int), []).append((t, gpu))
                except (ValueError, TypeError) as exc:
                    raise ConfigError("source.gpu.replay.file", f"{path} {where}: {exc}") from None
    except OSError as exc:
        raise ConfigError("source.gpu.replay.file", f"cannot read {path}: {exc.strerror or exc}") from None
    if not per_gpu:
        raise ConfigError("source.gpu.replay.file", f"{path} holds no samples")
    tracks = []
    for index, rows in sorted(per_gpu.items()):
        times = tuple(t for t, _ in rows)
        samples = tuple(g for _, g in rows)
        has_counter = all(g.get("energy_j") is not None for g in samples)
        energy = [0.0]
        for k in range(1, len(rows)):
            if has_counter:
                step = max(0.0, samples[k]["energy_j"] - samples[k - 1]["energy_j"])
            else:
                step = (samples[k - 1]["power_w"] + samples[k]["power_w"]) / 2.0 * (times[k] - times[k - 1])
            energy.append(energy[-1] + step)
        tracks.append(_GpuTrack(index, str(samples[0]["uuid"]), times, samples, tuple(energy), has_counter))
    return tracks


class ReplayGpuSource:
    """Serves a trace as if its GPUs were here, starting at the first read.

    Between two samples it holds the earlier sample's values and interpolates energy linearly, so the
    energy read at any time is exact for the trace. A GPU absent from the trace at a time (before its
    first or after its last sample, when not looping) is served as down.
    """

    name = "replay"

    def __init__(self, path: str, loop: bool = False) -> None:
        self.tracks = load_trace(path)
        self.loop = loop
        self.start = min(tr.times[0] for tr in self.tracks)
        self.end = max(tr.times[-1] for tr in self.tracks)
        self._t0: float | None = None

    @property
    def duration(self) -> float:
        return self.end - self.start

    def read(self, now: float) -> list[GpuReading]:
        if self._t0 is None:
            self._t0 = now
        elapsed = now - self._t0
        loops = 0.0
        if self.loop and self.duration > 0:
            loops, elapsed = divmod(elapsed, self.duration)
        t = self.start + elapsed
        return [self._reading(track, t, int(loops)) for track in self.tracks]

    @staticmethod
    def energy_at(track: _GpuTrack, t: float) -> float:
        if t <= track.times[0]:
            return 0.0
        if t >= track.times[-1]:
            return track.energy[-1]
        k = bisect.bisect_right(track.times, t) - 1
        span = track.times[k + 1] - track.times[k]
        frac = (t - track.times[k]) / span
        return track.energy[k] + frac * (track.energy[k + 1] - track.energy[k])

    def _reading(self, track: _GpuTrack, t: float, loops: int) -> GpuReading:
        k = max(0, bisect.bisect_right(track.times, t) - 1)
        g = track.samples[k]
        up = track.times[0] <= t and (self.loop or t <= track.times[-1] or track.times[-1] == self.end)
        energy = self.energy_at(track, t) + loops * track.energy[-1]

        def opt(key: str, kind: type) -> Any:
            value = g.get(key)
            return None if value is None else kind(value)

        return GpuReading(
            index=track.index,
            uuid=track.uuid,
            name=str(g.get("name", "")),
            driver_version=str(g.get("driver_version", "")),
            pci_bus_id=str(g.get("pci_bus_id", "")),
            up=up,
            error="" if up else "not in trace",
            power_w=float(g["power_w"]),
            energy_j=energy,
            util=opt("util", float),
            mem_used_bytes=opt("mem_used_bytes", int),
            mem_total_bytes=opt("mem_total_bytes", int),
            temp_c=opt("temp_c", float),
            power_limit_w=opt("power_limit_w", float),
            processes=g["_procs"],
        )

    def close(self) -> None:
        pass
