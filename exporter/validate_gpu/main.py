"""``footprint-exporter validate-gpu`` and ``python -m exporter.validate_gpu``: arguments, then the kit."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any, NoReturn

from exporter.durations import parse_duration
from exporter.validate_gpu.kit import Edges, Kit, Options
from exporter.validate_gpu.load import CudaLoad, Load

PROG = "footprint-exporter validate-gpu"


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _seconds(flag: str, text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise _UsageError(f"{flag}: {exc}") from None


def parse_args(argv: Sequence[str]) -> Options:
    parser = _Parser(
        prog=PROG,
        description="Load one NVIDIA GPU from two processes at a 3:1 duty cycle through the CUDA driver "
        "API and measure what NVML and the exporter report: energy counter against integrated power, "
        "update periods, per-process samples, NVML call costs, the attributed split, a replay trace. "
        "Reads only; never changes GPU settings.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="directory for report.json, report.md, traces"
    )
    parser.add_argument("--gpu", default="0", help="NVML index of the GPU to load (default 0)")
    parser.add_argument("--quick", action="store_true", help="about one minute instead of about three")
    parser.add_argument(
        "--selfcheck-only",
        action="store_true",
        help="only check that NVML and CUDA work (each NVML function, one kernel launch); seconds",
    )
    parser.add_argument("--idle", help="idle phase (default 15s; quick 5s)")
    parser.add_argument("--shared", help="phase with both workers at 3:1 (default 60s; quick 20s)")
    parser.add_argument("--alone", help="each worker alone (default 25s each; quick 8s)")
    parser.add_argument("--costs", help="time given to the cost measurements (default 8s; quick 4s)")
    parser.add_argument("--period", default="200ms", help="duty-cycle period (default 200ms)")
    parser.add_argument(
        "--duty", default="0.75:0.25", help="busy fractions of worker A and B (default 0.75:0.25)"
    )
    parser.add_argument(
        "--launch", default="5ms", help="calibrate one kernel launch to this long (default 5ms)"
    )
    parser.add_argument(
        "--deadline", help="skip phases that would end later than this (default 230s; quick 100s)"
    )
    args = parser.parse_args(list(argv))
    try:
        gpu = int(args.gpu)
    except ValueError:
        raise _UsageError(f"--gpu: not a whole number: {args.gpu!r}") from None
    options = Options.quick_run(args.out, gpu) if args.quick else Options(out_dir=args.out, gpu=gpu)
    options.selfcheck_only = args.selfcheck_only
    for flag, attr in (
        ("--idle", "idle_s"),
        ("--shared", "shared_s"),
        ("--alone", "alone_s"),
        ("--costs", "costs_s"),
    ):
        value = getattr(args, flag[2:])
        if value is not None:
            setattr(options, attr, _seconds(flag, value))
    if args.deadline is not None:
        options.deadline_s = _seconds("--deadline", args.deadline)
    options.period_s = _seconds("--period", args.period)
    options.launch_ms = 1000.0 * _seconds("--launch", args.launch)
    try:
        a, b = (float(x) for x in args.duty.split(":"))
    except ValueError:
        raise _UsageError(f"--duty: expected two fractions like 0.75:0.25, got {args.duty!r}") from None
    options.duty_a, options.duty_b = a, b
    try:
        options.check()
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    return options


def _cuda_load(pci_bus_id: str, gpu: int, launch_ms: float) -> Load:
    return CudaLoad(pci_bus_id, gpu, launch_ms)


def main(argv: Sequence[str] | None = None, *, nvml: Any = None) -> int:
    """0: every step worked; 1: the report was written but some step failed; 2: bad arguments."""
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv)
    except _UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    if nvml is None:
        try:
            import pynvml

            nvml = pynvml
        except ImportError as exc:
            print(
                f"{PROG}: the nvidia-ml-py package (module pynvml) is not installed: {exc}", file=sys.stderr
            )
            return 1
    try:
        kit = Kit(options, Edges(nvml=nvml, load_factory=_cuda_load))
    except OSError as exc:
        print(f"{PROG}: --out: cannot write to {options.out_dir}: {exc}", file=sys.stderr)
        return 2
    if threading.current_thread() is threading.main_thread():
        # A time limit's SIGTERM ends the run like Ctrl-C: workers stopped, the report kept.
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        return kit.run()
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; partial report in {options.out_dir}", file=sys.stderr)
        return 130


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
