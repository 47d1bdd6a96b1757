"""The kit's side of the GPU load: worker processes started, given duty cycles, and heard back from."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Any, Protocol

import exporter


class LoadError(Exception):
    """The load could not be started or a worker stopped answering."""


@dataclass(frozen=True)
class Duty:
    """When a worker computes within each period: from ``offset`` for ``busy`` (fractions of the period)."""

    offset: float
    busy: float

    def to_json(self) -> dict[str, float]:
        return {"offset": self.offset, "busy": self.busy}


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    pid: int
    iters: int
    launch_ms: float
    tag_bytes: int
    device: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "iters": self.iters,
            "launch_ms": self.launch_ms,
            "tag_bytes": self.tag_bytes,
            "device": self.device,
        }


class Load(Protocol):
    """What the kit needs from a GPU load; the CUDA one below, a simulated one in the tests."""

    def selfcheck(self, timeout_s: float) -> dict[str, Any]:
        """Load the kernel once and launch it; {"ok": bool, "steps": [...], ...}. Never raises."""
        ...

    def start(self, tags_mib: dict[str, int], timeout_s: float) -> dict[str, WorkerInfo]:
        """Start one worker per name (holding ``tags_mib`` extra MiB), loaded and calibrated, each
        within ``timeout_s``."""
        ...

    def run(self, plan: dict[str, Duty], delay_s: float, duration_s: float, period_s: float) -> None:
        """Workers in ``plan`` compute on their duty cycle from ``delay_s`` from now; the rest hold idle."""
        ...

    def collect(self, timeout_s: float) -> dict[str, dict[str, Any]]:
        """What each worker of the last ``run`` did (launches, busy_s, ...), once their runs ended."""
        ...

    def stop(self) -> None:
        """End every worker (their contexts go away)."""
        ...


class _Worker:
    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.pending = False
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)

    def expect(self, events: tuple[str, ...], timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LoadError(f"worker {self.name}: no {'/'.join(events)} within {timeout_s:.0f} s")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                code = self.proc.wait(timeout=5)
                raise LoadError(f"worker {self.name} exited (status {code}) before {'/'.join(events)}")
            try:
                msg = json.loads(line)
            except ValueError:
                sys.stderr.write(f"worker {self.name}: {line}")
                continue
            if isinstance(msg, dict) and msg.get("event") in events:
                return msg
            sys.stderr.write(f"worker {self.name}: {line}")

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(obj) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise LoadError(f"worker {self.name}: cannot send a command: {exc}") from None

    def end(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"cmd": "exit"})
                self.proc.stdin.close()  # type: ignore[union-attr]
                self.proc.wait(timeout=15)
            except (LoadError, OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=5)


class CudaLoad:
    """Worker processes (``python -m exporter.validate_gpu.worker``) on the GPU with NVML's ``pci_bus_id``."""

    def __init__(self, pci_bus_id: str, ordinal: int, target_ms: float, python: str = sys.executable) -> None:
        self.pci_bus_id = pci_bus_id
        self.ordinal = ordinal
        self.target_ms = target_ms
        self.python = python
        self.workers: dict[str, _Worker] = {}
        root = os.path.dirname(os.path.dirname(os.path.abspath(exporter.__file__)))
        self.env = dict(os.environ)
        # The workers import this very checkout, whether or not it is installed.
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)

    def _argv(self, *extra: str) -> list[str]:
        return [
            self.python,
            "-m",
            "exporter.validate_gpu.worker",
            "--pci",
            self.pci_bus_id,
            "--ordinal",
            str(self.ordinal),
            "--target-ms",
            str(self.target_ms),
            *extra,
        ]

    def selfcheck(self, timeout_s: float) -> dict[str, Any]:
        worker = _Worker("selfcheck", self._argv("--selfcheck"), self.env)
        try:
            return worker.expect(("selfcheck",), timeout_s)
        except LoadError as exc:
            return {"ok": False, "steps": [{"step": "worker", "ok": False, "error": str(exc)}]}
        finally:
            worker.end()

    def start(self, tags_mib: dict[str, int], timeout_s: float) -> dict[str, WorkerInfo]:
        infos: dict[str, WorkerInfo] = {}
        iters = 0
        for name, tag in tags_mib.items():
            # The first worker calibrates; the others run the same number of rounds per launch, so
            # that launches compare as units of work.
            extra = ["--tag-mib", str(tag)] + (["--iters", str(iters)] if iters else [])
            worker = self.workers[name] = _Worker(name, self._argv(*extra), self.env)
            msg = worker.expect(("ready", "error"), timeout_s)
            if msg["event"] == "error":
                raise LoadError(f"worker {name}: {msg.get('error')}")
            iters = int(msg["iters"])
            infos[name] = WorkerInfo(
                name, int(msg["pid"]), iters, float(msg["launch_ms"]), int(msg["tag_bytes"]), msg["device"]
            )
        return infos

    def run(self, plan: dict[str, Duty], delay_s: float, duration_s: float, period_s: float) -> None:
        for name, duty in plan.items():
            worker = self.workers[name]
            worker.send(
                {
                    "cmd": "run",
                    "delay": delay_s,
                    "duration": duration_s,
                    "period": period_s,
                    "offset": duty.offset,
                    "busy": duty.busy,
                }
            )
            worker.pending = True

    def collect(self, timeout_s: float) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, worker in self.workers.items():
            if worker.pending:
                worker.pending = False
                msg = worker.expect(("done",), timeout_s)
                msg.pop("event", None)
                out[name] = msg
        return out

    def stop(self) -> None:
        for worker in self.workers.values():
            worker.end()
        self.workers.clear()
