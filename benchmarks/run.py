"""Entry point of ``make bench``: runs the benchmarks, prints the table, writes results/latest.md."""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import generate_latest

from benchmarks import accuracy, budgets, overhead, report, scale, sharing
from benchmarks.fakes import build_rig

RESULTS = Path(__file__).resolve().parent / "results"


def profile(gpus: int = 8, processes: int = 200, reps: int = 50, top: int = 25) -> str:
    """cProfile of ticks and scrapes at one size, top functions by own time: where to look for hot spots."""
    rig = build_rig(gpus, processes)
    out = []
    try:
        for what, work in (("tick", rig.tick), ("scrape", lambda: generate_latest(rig.registry))):
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(reps):
                work()
            prof.disable()
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
            out.append(f"== {what} {gpus}x{processes}, {reps} runs ==\n{buf.getvalue()}")
    finally:
        rig.close()
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short overhead window (10 s) and fewer repetitions, for development",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=("scale", "overhead", "accuracy", "budgets"),
        help="run only these parts (repeatable)",
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="overhead window in seconds (default 60)"
    )
    parser.add_argument(
        "--no-codecarbon", action="store_true", help="leave CodeCarbon out of the overhead run"
    )
    parser.add_argument(
        "--profile", action="store_true", help="print a cProfile of tick and scrape at 8x200 and exit"
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS / "latest.md", help="where to write the Markdown"
    )
    args = parser.parse_args(argv)
    if args.profile:
        print(profile())
        return 0
    parts = set(args.only or ("scale", "overhead", "accuracy", "budgets"))
    machine = report.machine()
    duration = args.duration if args.duration is not None else (10.0 if args.quick else 60.0)
    started = time.monotonic()
    acc = accuracy.run(args.quick) if "accuracy" in parts else []
    shared = sharing.run(args.quick) if "accuracy" in parts else []
    sizes = scale.run(args.quick) if "scale" in parts else []
    over = []
    if "overhead" in parts:
        print(f"overhead: measuring for {duration:g} s ...", file=sys.stderr, flush=True)
        over = overhead.run(
            duration_s=duration,
            scrape_every_s=5.0 if args.quick else 15.0,
            warmup_s=2.0 if args.quick else 5.0,
            burst=5 if args.quick else 20,
            with_codecarbon=not args.no_codecarbon,
        )
    budget_rows = budgets.run(args.quick) if "budgets" in parts else []
    mode = "quick (--quick)" if args.quick else "full"
    text = report.render(
        sizes,
        over,
        acc,
        f"{mode}, {time.monotonic() - started:.0f} s",
        machine,
        duration,
        shared,
        budget_rows,
    )
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n", encoding="utf-8")
    print(f"written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
