"""``footprint-exporter record``: writes GPU readings as a replay trace.

The format is JSON Lines, described in docs/sources.md, "Replay traces".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, NoReturn

from exporter.config import convert_flag
from exporter.durations import parse_duration
from exporter.errors import ConfigError, shorten, shown
from exporter.model import GpuProcessSample, GpuReading
from exporter.sources import GpuSource, SourceUnavailable

CgroupReader = Callable[[int], str]
SourceFactory = Callable[[str, int, str], GpuSource]


class _UsageError(Exception):
    """A bad argument: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def read_cgroup(procfs_root: str, pid: int) -> str:
    """The process' cgroup: the bare path on a pure cgroup v2 host, else the file's lines; "" if unreadable.

    Never anything else from /proc/<pid>: command lines and environments carry secrets.
    """
    try:
        with open(os.path.join(procfs_root, str(pid), "cgroup"), encoding="utf-8", errors="replace") as fh:
            lines = [line.strip() for line in fh if line.strip()]
    except OSError:
        return ""
    if len(lines) == 1 and lines[0].startswith("0::"):
        return lines[0][3:]
    return "\n".join(lines)


def process_to_json(process: GpuProcessSample, cgroup_of: CgroupReader) -> dict[str, Any]:
    """One process of a trace line. ``cgroup`` comes from the reading when the source knew it."""
    out: dict[str, Any] = {"pid": process.pid, "comm": process.comm, "user": process.user}
    if process.sm_util is not None:
        out["sm_util"] = process.sm_util
    if process.used_memory_bytes is not None:
        out["used_memory_bytes"] = process.used_memory_bytes
    out["cgroup"] = process.cgroup if process.cgroup is not None else cgroup_of(process.pid)
    if process.start_time is not None:
        # Not in the contract's example, but the replay reads it: it keeps a reused PID apart.
        out["start_time"] = process.start_time
    if process.gpu_instance_id is not None:
        out["gpu_instance_id"] = process.gpu_instance_id
    if process.mig_sm_share is not None:
        out["mig_sm_share"] = process.mig_sm_share
    return out


def reading_to_json(reading: GpuReading, cgroup_of: CgroupReader = lambda pid: "") -> dict[str, Any] | None:
    """One GPU of a trace line, fields that are None left out; None for a GPU that has nothing to replay.

    A GPU that is down, or that reports no power, is left out of that line: a trace entry must carry
    ``power_w``, and the replay holds the GPU's previous sample over the gap.
    """
    if not reading.up or reading.power_w is None:
        return None
    out: dict[str, Any] = {"index": reading.index, "uuid": reading.uuid, "name": reading.name}
    optional: tuple[tuple[str, Any], ...] = (
        ("power_w", reading.power_w),
        ("energy_j", reading.energy_j),
        ("util", reading.util),
        ("mem_used_bytes", reading.mem_used_bytes),
        ("mem_total_bytes", reading.mem_total_bytes),
        ("temp_c", reading.temp_c),
        ("power_limit_w", reading.power_limit_w),
    )
    for key, value in optional:
        if value is not None:
            out[key] = value
    if reading.driver_version:
        out["driver_version"] = reading.driver_version
    if reading.pci_bus_id:
        out["pci_bus_id"] = reading.pci_bus_id
    if reading.processes is not None:
        out["processes"] = [process_to_json(p, cgroup_of) for p in reading.processes]
    if reading.mig_instances is not None:
        out["mig_instances"] = [
            {"gpu_instance_id": m.gpu_instance_id, "uuid": m.uuid}
            | ({} if m.sm_share is None else {"sm_share": m.sm_share})
            for m in reading.mig_instances
        ]
    return out


def write_sample(
    out: IO[str], t: float, readings: Sequence[GpuReading], cgroup_of: CgroupReader = lambda pid: ""
) -> None:
    """Write one trace line for the readings taken ``t`` seconds after the start, and flush it."""
    gpus = [g for g in (reading_to_json(r, cgroup_of) for r in readings) if g is not None]
    out.write(json.dumps({"t": round(t, 6), "gpus": gpus}) + "\n")
    # Flushed per line so that a trace cut short (kill -9, power loss) is still valid up to there.
    out.flush()


def record(
    source: GpuSource,
    out: IO[str],
    *,
    duration_s: float,
    interval_s: float,
    clock: Callable[[], float],
    sleep: Callable[[float], object],
    stop: threading.Event,
    cgroup_of: CgroupReader,
) -> int:
    """Read ``source`` every ``interval_s`` and write each sample; returns the number of lines written.

    Samples are taken at t = 0, interval, 2 x interval, ... up to ``duration_s`` included (0: until
    ``stop`` is set). A read that overruns its slot skips the missed slots rather than bunching up.
    """
    start = clock()
    written = 0
    slot = 0
    last_t = -1.0
    while not stop.is_set():
        now = start if slot == 0 else clock()
        t = now - start
        if t > last_t:
            write_sample(out, t, source.read(now), cgroup_of)
            written += 1
            last_t = t
        slot += 1
        while start + slot * interval_s <= clock():
            slot += 1
        if duration_s > 0 and slot * interval_s > duration_s + 1e-9:
            break
        delay = start + slot * interval_s - clock()
        if delay > 0:
            sleep(delay)
    return written


def _build_source(kind: str, count: int, procfs_root: str) -> GpuSource:
    if kind == "simulated":
        from exporter.sources.simulated import SimulatedGpuSource

        return SimulatedGpuSource(count)
    from exporter.sources.nvml import NvmlGpuSource

    return NvmlGpuSource(procfs_root=procfs_root)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(
        prog="footprint-exporter record",
        description="Record GPU readings as a replay trace (JSON Lines) for --source.gpu=replay.",
        allow_abbrev=False,
    )
    parser.add_argument("--output", required=True, metavar="FILE", help="trace file to write ('-': stdout)")
    parser.add_argument(
        "--duration", default="60s", help="how long to record (default 60s); 0: until SIGINT/SIGTERM"
    )
    parser.add_argument(
        "--sample.interval", dest="interval", default="1s", help="time between samples (default 1s)"
    )
    parser.add_argument("--source.gpu", dest="source", default="nvml", help="nvml (default) or simulated")
    parser.add_argument(
        "--source.gpu.simulated.count", dest="count", default="4", help="simulated GPUs (default 4)"
    )
    parser.add_argument(
        "--path.procfs",
        dest="procfs",
        default="/proc",
        help="where the host's /proc is mounted (default /proc)",
    )
    args = parser.parse_args(argv)
    try:
        args.duration_s = parse_duration(args.duration)
    except ValueError as exc:
        raise _UsageError(f"--duration: {exc}") from None
    if args.source not in ("nvml", "simulated"):
        raise _UsageError(f"--source.gpu: must be nvml or simulated, got {shown(args.source)}")
    # The exporter's own bounds for the flags it shares with record.
    try:
        args.interval_s = convert_flag("sample.interval", args.interval)
        args.count = convert_flag("source.gpu.simulated.count", args.count)
    except ConfigError as exc:
        raise _UsageError(str(exc)) from None
    return args


def main(
    argv: list[str],
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] | None = None,
    stop: threading.Event | None = None,
    source_factory: SourceFactory = _build_source,
) -> int:
    """Run ``record``: 0 when done, 2 on a bad argument, 1 if the GPU source cannot start or writing fails."""
    try:
        args = _parse(argv)
    except _UsageError as exc:
        print(f"footprint-exporter record: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    stop = stop if stop is not None else threading.Event()
    wait: Callable[[float], object] = sleep if sleep is not None else stop.wait
    try:
        source = source_factory(args.source, args.count, args.procfs)
    except SourceUnavailable as exc:
        print(f"footprint-exporter record: GPU source {args.source} unavailable: {exc}", file=sys.stderr)
        return 1
    try:
        try:
            out: IO[str] = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")  # noqa: SIM115
        except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
            print(
                f"footprint-exporter record: --output: cannot open {shorten(args.output)}: "
                f"{getattr(exc, 'strerror', None) or exc}",
                file=sys.stderr,
            )
            return 2
        try:
            with _stop_on_signals(stop):
                written = record(
                    source,
                    out,
                    duration_s=args.duration_s,
                    interval_s=args.interval_s,
                    clock=clock,
                    sleep=wait,
                    stop=stop,
                    cgroup_of=lambda pid: read_cgroup(args.procfs, pid),
                )
        except BrokenPipeError:
            # The reader went away (``record --output - | head``): the end of the recording, not a
            # failure. Later writes to stdout (the interpreter's last flush) go nowhere instead.
            if out is sys.stdout:
                _discard_stdout()
            return 0
        except OSError as exc:
            print(f"footprint-exporter record: writing {shorten(args.output)} failed: {exc}", file=sys.stderr)
            return 1
        finally:
            if out is not sys.stdout:
                out.close()
    finally:
        source.close()
    print(f"footprint-exporter record: wrote {written} samples to {args.output}", file=sys.stderr)
    return 0


def _discard_stdout() -> None:
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM end the recording cleanly (last line complete) instead of killing it."""
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda _signum, _frame: stop.set())
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
