"""A load worker process of the validation kit: one CUDA context, driven by JSON lines on stdin.

``python -m exporter.validate_gpu.worker [--selfcheck] ...`` prints one JSON object per line:

- ``{"event": "selfcheck", "ok": ..., "steps": [...]}`` then exits (``--selfcheck``);
- ``{"event": "ready", "pid": ..., "device": {...}, "iters": ..., "launch_ms": ...}`` once the kernel
  is loaded and calibrated, then for each ``{"cmd": "run", "delay": s, "duration": s, "period": s,
  "offset": f, "busy": f}`` a ``{"event": "done", ...}`` when the run is over; ``{"cmd": "exit"}`` or
  the end of stdin frees the GPU and ends the process;
- ``{"event": "error", "step": ..., "error": ...}`` when CUDA fails before ``ready``.

Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from exporter.validate_gpu.cuda import (
    CudaDriver,
    CudaError,
    SpinKernel,
    calibrate,
    expected_output,
    run_duty,
)

# A run longer than this is a protocol error, not a request: a worker never holds the GPU for hours.
MAX_RUN_S = 1800.0


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _timed(kernel: SpinKernel, iters: int) -> float:
    started = time.perf_counter()
    kernel.launch(iters)
    return time.perf_counter() - started


def selfcheck(args: argparse.Namespace) -> int:
    steps: list[dict[str, Any]] = []

    def on_step(step: str, detail: str) -> None:
        steps.append({"step": step, "ok": True, "detail": detail})

    kernel: SpinKernel | None = None
    try:
        driver = CudaDriver.open()
        on_step("dlopen", "libcuda loaded")
        kernel = opened = SpinKernel.open(driver, args.pci, args.ordinal, 0, on_step)
        iters = 4096
        took = _timed(opened, iters)
        took = _timed(opened, iters)
        got = opened.first_output()
        want = expected_output(0, iters)
        # float32 rounding over thousands of FMAs drifts a little from the exact value; a kernel that
        # did not run (or ran another number of rounds) is far off.
        close = abs(got - want) <= 0.05 * abs(want)
        on_step(
            "launch",
            f"{iters} rounds on {opened.grid} blocks in {1000 * took:.2f} ms; output {got:.6g} "
            f"(expected about {want:.6g}: {'ok' if close else 'MISMATCH'})",
        )
        iters, launch_s = calibrate(lambda n: _timed(opened, n), args.target_ms / 1000.0)
        on_step("calibrate", f"{iters} rounds take {1000 * launch_s:.2f} ms")
        ok = True
        result: dict[str, Any] = {
            "device": opened.device.to_json(),
            "iters": iters,
            "launch_ms": 1000 * launch_s,
            "output_ok": close,
        }
    except CudaError as exc:
        steps.append({"step": exc.call, "ok": False, "error": str(exc)})
        ok, result = False, {}
    finally:
        if kernel is not None:
            kernel.close()
    _emit({"event": "selfcheck", "ok": ok, "pid": os.getpid(), "steps": steps, **result})
    return 0 if ok else 1


def serve(args: argparse.Namespace) -> int:
    try:
        driver = CudaDriver.open()
        kernel = SpinKernel.open(driver, args.pci, args.ordinal, args.tag_mib << 20)
        if args.iters > 0:
            iters, launch_s = args.iters, sorted(_timed(kernel, args.iters) for _ in range(3))[1]
        else:
            iters, launch_s = calibrate(lambda n: _timed(kernel, n), args.target_ms / 1000.0)
    except CudaError as exc:
        _emit({"event": "error", "step": exc.call, "error": str(exc), "pid": os.getpid()})
        return 1
    parent = os.getppid()
    _emit(
        {
            "event": "ready",
            "pid": os.getpid(),
            "device": kernel.device.to_json(),
            "iters": iters,
            "launch_ms": 1000 * launch_s,
            "tag_bytes": args.tag_mib << 20,
        }
    )
    try:
        for line in sys.stdin:
            try:
                cmd = json.loads(line)
            except ValueError:
                _emit({"event": "bad_command", "line": line[:200]})
                continue
            if not isinstance(cmd, dict) or cmd.get("cmd") == "exit":
                break
            if cmd.get("cmd") != "run":
                _emit({"event": "bad_command", "line": line[:200]})
                continue
            try:
                delay = max(0.0, float(cmd["delay"]))
                duration = min(MAX_RUN_S, max(0.0, float(cmd["duration"])))
                period, offset, busy = float(cmd["period"]), float(cmd["offset"]), float(cmd["busy"])
            except (KeyError, TypeError, ValueError) as exc:
                _emit({"event": "bad_command", "line": line[:200], "error": str(exc)})
                continue
            start = time.monotonic() + delay
            result = run_duty(
                lambda: kernel.launch(iters),
                clock=time.monotonic,
                sleep=time.sleep,
                start=start,
                end=start + duration,
                period_s=period,
                offset=offset,
                busy=busy,
                launch_estimate_s=launch_s,
                # A kit killed outright cannot say stop: do not keep loading the GPU without it.
                should_stop=lambda: os.getppid() != parent,
            )
            _emit({"event": "done", **result.to_json()})
    finally:
        kernel.close()
        _emit({"event": "bye"})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exporter.validate_gpu.worker")
    parser.add_argument("--selfcheck", action="store_true")
    parser.add_argument("--pci", default="", help="PCI bus id of the GPU (as NVML gives it)")
    parser.add_argument("--ordinal", type=int, default=0, help="CUDA ordinal when the PCI id is not found")
    parser.add_argument("--tag-mib", type=int, default=0, help="extra device memory, to tell workers apart")
    parser.add_argument("--iters", type=int, default=0, help="rounds per launch (0: calibrate)")
    parser.add_argument("--target-ms", type=float, default=5.0, help="calibrate a launch to this long")
    args = parser.parse_args(argv)
    return selfcheck(args) if args.selfcheck else serve(args)


if __name__ == "__main__":
    raise SystemExit(main())
