"""Plays a recorded GPU trace in real time from the exporter's start.

The format is JSON Lines, described in docs/sources.md, "Replay traces".
"""

from __future__ import annotations

import bisect
import json
import logging
import math
from array import array
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import IO, Any

from exporter.errors import ConfigError, shorten, shown
from exporter.model import GpuProcessSample, GpuReading, MigInstance

log = logging.getLogger(__name__)

KEY = "source.gpu.replay.file"
MAX_LINE_BYTES = 4 << 20  # 8 GPUs x 200 processes make about 300 KB
# Bounds of the values a trace may carry: wide enough for any real board, tight enough that sums and
# products over a long run stay finite (a power of 1e308 W broke every tick).
MAX_INDEX = 1023
MAX_POWER_W = 100_000.0
MAX_ENERGY_J = 1e18  # NVML's counter is 64 bits of millijoules: 1.8e16 J
MAX_T = 1e10  # seconds: three centuries
MAX_INT = 2**63 - 1
MAX_PID = 2**31 - 1
MAX_GPU_INSTANCE = 2**32 - 2  # NVML's gpuInstanceId is 32 bits; 0xFFFFFFFF means "no instance"
MAX_TEXT = 4096
_CACHED_LINES = 4  # parsed lines kept for play: a tick normally needs one


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number (JSON has no NaN or Infinity)")


def _number(value: Any, where: str, low: float, high: float, integer: bool = False) -> Any:
    """A finite number in [low, high]; integers are compared as integers, so 400 digits never overflow."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: expected a number, got {shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: expected a finite number, got {shown(value)}")
    if not low <= value <= high:
        raise ValueError(f"{where}: {shown(value)} is outside {low:g} to {high:g}")
    return int(value) if integer else float(value)


def _text(value: Any, where: str, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise ValueError(f"{where}: expected a string of at most {MAX_TEXT} characters, got {shown(value)}")
    try:
        # JSON escapes can spell lone surrogates ("\udcff"), which no label value can carry.
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{where}: {shown(value)} is not valid Unicode") from None
    return value


def _optional(
    gpu: dict[str, Any], key: str, where: str, low: float, high: float, integer: bool = False
) -> Any:
    value = gpu.get(key)
    return None if value is None else _number(value, f"{where}.{key}", low, high, integer)


def _process(raw: Any, where: str) -> GpuProcessSample:
    if not isinstance(raw, dict) or "pid" not in raw:
        raise ValueError(f"{where}: a process needs at least a pid")
    return GpuProcessSample(
        pid=_number(raw["pid"], f"{where}.pid", 0, MAX_PID, integer=True),
        comm=_text(raw.get("comm"), f"{where}.comm"),
        user=_text(raw.get("user"), f"{where}.user"),
        sm_util=_optional(raw, "sm_util", where, 0.0, 1.0),
        used_memory_bytes=_optional(raw, "used_memory_bytes", where, 0, MAX_INT, integer=True),
        cgroup=_text(raw.get("cgroup"), f"{where}.cgroup") or None,
        start_time=_optional(raw, "start_time", where, 0.0, 1e15),
        gpu_instance_id=_optional(raw, "gpu_instance_id", where, 0, MAX_GPU_INSTANCE, integer=True),
        mig_sm_share=_optional(raw, "mig_sm_share", where, 0.0, 1.0),
    )


def _mig_instances(raw: Any, where: str) -> tuple[MigInstance, ...] | None:
    """A MIG GPU's devices (docs/sources.md, "Replay traces"); None where the line has none."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ValueError(f"{where}: expected a list, got {shown(raw)}")
    out = []
    for k, item in enumerate(raw):
        at = f"{where}[{k}]"
        if not isinstance(item, dict) or "gpu_instance_id" not in item or "uuid" not in item:
            raise ValueError(f"{at} needs gpu_instance_id and uuid")
        gi_id = _number(item["gpu_instance_id"], f"{at}.gpu_instance_id", 0, MAX_GPU_INSTANCE, integer=True)
        uuid = _text(item["uuid"], f"{at}.uuid")  # "" where NVML did not answer it
        out.append(MigInstance(gi_id, uuid, _optional(item, "sm_share", at, 0.0, 1.0)))
    uuids = [m.uuid for m in out if m.uuid]
    if len(set(uuids)) != len(uuids):
        twice = next(u for u in uuids if uuids.count(u) > 1)
        raise ValueError(f"{where}: uuid {twice} appears twice")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class _Sample:
    """One GPU in one line, checked: what a reading needs."""

    index: int
    uuid: str
    name: str
    driver_version: str
    pci_bus_id: str
    power_w: float
    energy_j: float | None
    util: float | None
    mem_used_bytes: int | None
    mem_total_bytes: int | None
    temp_c: float | None
    power_limit_w: float | None
    processes: tuple[GpuProcessSample, ...]
    mig_instances: tuple[MigInstance, ...] | None


def _gpu(raw: Any, where: str) -> _Sample:
    if not isinstance(raw, dict) or "index" not in raw or "uuid" not in raw:
        raise ValueError(f"{where} needs index and uuid")
    uuid = _text(raw["uuid"], f"{where}.uuid")
    if not uuid:
        raise ValueError(f"{where}.uuid is empty")
    procs = raw.get("processes")
    if procs is not None and not isinstance(procs, list):
        raise ValueError(f"{where}.processes: expected a list, got {shown(procs)}")
    processes = tuple(_process(p, f"{where}.processes[{k}]") for k, p in enumerate(procs or ()))
    pids = [p.pid for p in processes]
    if len(set(pids)) != len(pids):
        twice = next(pid for pid in pids if pids.count(pid) > 1)
        raise ValueError(f"{where}.processes: pid {twice} appears twice")
    if "power_w" not in raw:
        raise ValueError(f"{where}.power_w: missing")
    return _Sample(
        index=_number(raw["index"], f"{where}.index", 0, MAX_INDEX, integer=True),
        uuid=uuid,
        name=_text(raw.get("name"), f"{where}.name"),
        driver_version=_text(raw.get("driver_version"), f"{where}.driver_version"),
        pci_bus_id=_text(raw.get("pci_bus_id"), f"{where}.pci_bus_id"),
        power_w=_number(raw["power_w"], f"{where}.power_w", 0.0, MAX_POWER_W),
        energy_j=_optional(raw, "energy_j", where, 0.0, MAX_ENERGY_J),
        util=_optional(raw, "util", where, 0.0, 1.0),
        mem_used_bytes=_optional(raw, "mem_used_bytes", where, 0, MAX_INT, integer=True),
        mem_total_bytes=_optional(raw, "mem_total_bytes", where, 0, MAX_INT, integer=True),
        temp_c=_optional(raw, "temp_c", where, -100.0, 300.0),
        power_limit_w=_optional(raw, "power_limit_w", where, 0.0, MAX_POWER_W),
        processes=processes,
        mig_instances=_mig_instances(raw.get("mig_instances"), f"{where}.mig_instances"),
    )


def parse_line(raw: bytes, lineno: int) -> tuple[float, dict[int, _Sample]] | None:
    """One trace line checked in full: (t, GPU index -> sample), None for a blank line.

    Raises ValueError naming the line and the field.
    """
    where = f"line {lineno}"
    if len(raw) > MAX_LINE_BYTES:
        raise ValueError(f"{where}: longer than {MAX_LINE_BYTES >> 20} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{where}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
        ) from None
    if not text.strip():
        return None
    try:
        sample = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError(f"{where}: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and integers past 4,300 digits
        raise ValueError(f"{where}: not JSON: {shorten(str(exc), 80)}") from None
    if not isinstance(sample, dict) or "t" not in sample or not isinstance(sample.get("gpus"), list):
        raise ValueError(f"{where}: expected an object with t and gpus")
    t = _number(sample["t"], f"{where}.t", 0.0, MAX_T)
    gpus: dict[int, _Sample] = {}
    uuids: set[str] = set()
    for n, raw_gpu in enumerate(sample["gpus"]):
        gpu = _gpu(raw_gpu, f"{where}.gpus[{n}]")
        # Two entries for one GPU would be added together: 1,950 J served where 1,050 J was due.
        if gpu.index in gpus:
            raise ValueError(f"{where}.gpus[{n}]: GPU index {gpu.index} appears twice in one sample")
        if gpu.uuid in uuids:
            raise ValueError(f"{where}.gpus[{n}]: uuid {shown(gpu.uuid)} appears twice in one sample")
        gpus[gpu.index] = gpu
        uuids.add(gpu.uuid)
    return t, gpus


@dataclass(slots=True)
class _GpuTrack:
    """One GPU across the trace, in compact arrays: where its samples are, and its energy at each.

    The samples themselves stay in the file and are read again when played, so memory grows by
    about 32 bytes per GPU sample, not by the size of the trace.
    """

    index: int
    uuid: str
    first_line: int
    times: array[float] = field(default_factory=lambda: array("d"))
    offsets: array[int] = field(default_factory=lambda: array("q"))  # byte offset of each sample's line
    integrated: array[float] = field(default_factory=lambda: array("d"))  # joules by trapezoid, from 0
    counted: array[float] | None = field(default_factory=lambda: array("d"))  # joules by counter, from 0
    _power: float = 0.0
    _counter: float | None = None

    def add(self, t: float, offset: int, sample: _Sample) -> None:
        if self.times:
            self.integrated.append(
                self.integrated[-1] + (self._power + sample.power_w) / 2.0 * (t - self.times[-1])
            )
        else:
            self.integrated.append(0.0)
        if self.counted is not None:
            if sample.energy_j is None:
                self.counted = None  # a GPU without a counter in every sample integrates power
            elif self._counter is None:
                self.counted.append(0.0)
            else:
                # A counter that goes back (driver reload) adds nothing for that step.
                self.counted.append(self.counted[-1] + max(0.0, sample.energy_j - self._counter))
        self.times.append(t)
        self.offsets.append(offset)
        self._power, self._counter = sample.power_w, sample.energy_j

    @property
    def has_counter(self) -> bool:
        return self.counted is not None

    @property
    def energy(self) -> array[float]:
        return self.counted if self.counted is not None else self.integrated


def _index_trace(path: str, fh: IO[bytes]) -> list[_GpuTrack]:
    """Read the whole trace once, checking every line, keeping only each GPU's compact track."""
    tracks: dict[int, _GpuTrack] = {}
    last_t = -math.inf
    lineno = 0
    while True:
        offset = fh.tell()
        raw = fh.readline(MAX_LINE_BYTES + 1)
        if not raw:
            break
        lineno += 1
        try:
            parsed = parse_line(raw, lineno)
            if parsed is None:
                continue
            t, gpus = parsed
            if t <= last_t:
                raise ValueError(f"line {lineno}.t: t={t:g} does not increase (previous {last_t:g})")
            last_t = t
            for index, sample in gpus.items():
                track = tracks.get(index)
                if track is None:
                    track = tracks[index] = _GpuTrack(index, sample.uuid, lineno)
                elif sample.uuid != track.uuid:
                    raise ValueError(
                        f"line {lineno}: GPU index {index} has uuid {shown(sample.uuid)}, "
                        f"but {shown(track.uuid)} on line {track.first_line}"
                    )
                track.add(t, offset, sample)
        except ValueError as exc:
            raise ConfigError(KEY, f"{shorten(path)} {exc}") from None
    if not tracks:
        raise ConfigError(KEY, f"{shorten(path)} holds no samples")
    return [tracks[i] for i in sorted(tracks)]


class ReplayGpuSource:
    """Serves a trace as if its GPUs were here, starting at the first read.

    Between two samples it holds the earlier sample's values and interpolates energy linearly, so the
    energy read at any time is exact for the trace. A GPU absent from the trace at a time (before its
    first or after its last sample) is served as down. When the trace ends (and does not loop), the
    first read after the end still serves the last sample, so the energy up to the end is counted,
    and every GPU is down from the next read on: a finished trace is not a GPU still drawing power.

    The file is read once at start to check every line (exit 2 naming the line otherwise), then
    played by reading back only the lines in use.
    """

    name = "replay"

    def __init__(self, path: str, loop: bool = False) -> None:
        self.path = path
        try:
            self._fh: IO[bytes] = open(path, "rb")  # noqa: SIM115 - held open for play, closed by close()
        except (OSError, ValueError) as exc:
            raise ConfigError(
                KEY, f"cannot read {shorten(path)}: {getattr(exc, 'strerror', None) or exc}"
            ) from None
        try:
            self.tracks = _index_trace(path, self._fh)
        except BaseException:
            self._fh.close()
            raise
        self.loop = loop
        self.start = min(tr.times[0] for tr in self.tracks)
        self.end = max(tr.times[-1] for tr in self.tracks)
        self._t0: float | None = None
        self._lines: OrderedDict[int, dict[int, _Sample]] = OrderedDict()
        self._ended = 0  # reads past the end of a trace that does not loop

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
        ended = False
        if not self.loop and t > self.end:
            self._ended += 1
            if self._ended == 1:
                log.warning(
                    "replay trace %s ended after %gs: its GPUs are down from now on "
                    "(--source.gpu.replay.loop plays it again)",
                    self.path,
                    self.duration,
                )
                t = self.end  # this read still serves the end, so its energy is counted
            else:
                ended = True
        return [self._reading(track, t, int(loops), ended) for track in self.tracks]

    @staticmethod
    def energy_at(track: _GpuTrack, t: float) -> float:
        times, energy = track.times, track.energy
        if t <= times[0]:
            return 0.0
        if t >= times[-1]:
            return energy[-1]
        k = bisect.bisect_right(times, t) - 1
        span = times[k + 1] - times[k]
        frac = (t - times[k]) / span
        return energy[k] + frac * (energy[k + 1] - energy[k])

    def _sample(self, track: _GpuTrack, k: int) -> _Sample:
        offset = track.offsets[k]
        gpus = self._lines.get(offset)
        if gpus is None:
            self._fh.seek(offset)
            # The file was checked at start; a line that fails now was changed since, and the
            # sampler counts the read as failed.
            try:
                parsed = parse_line(self._fh.readline(MAX_LINE_BYTES + 1), 0)
            except ValueError as exc:
                raise ValueError(f"replay trace {self.path} changed while playing: {exc}") from None
            if parsed is None or track.index not in parsed[1]:
                raise ValueError(f"replay trace {self.path} changed while playing")
            gpus = parsed[1]
            self._lines[offset] = gpus
            if len(self._lines) > _CACHED_LINES:
                self._lines.popitem(last=False)
        else:
            self._lines.move_to_end(offset)
        return gpus[track.index]

    def _reading(self, track: _GpuTrack, t: float, loops: int, ended: bool) -> GpuReading:
        k = max(0, bisect.bisect_right(track.times, t) - 1)
        g = self._sample(track, k)
        up = not ended and track.times[0] <= t and (self.loop or t <= track.times[-1])
        error = "" if up else ("trace_ended" if ended else "not_in_trace")
        return GpuReading(
            index=track.index,
            uuid=track.uuid,
            name=g.name,
            driver_version=g.driver_version,
            pci_bus_id=g.pci_bus_id,
            up=up,
            error=error,
            power_w=g.power_w,
            energy_j=self.energy_at(track, t) + loops * track.energy[-1],
            util=g.util,
            mem_used_bytes=g.mem_used_bytes,
            mem_total_bytes=g.mem_total_bytes,
            temp_c=g.temp_c,
            power_limit_w=g.power_limit_w,
            processes=g.processes,
            mig_instances=g.mig_instances,
        )

    def close(self) -> None:
        self._fh.close()
