"""The validation run: self-check, idle and loaded phases, NVML measurements, costs, replay check, report.

Every step is isolated: a step that fails is recorded with its error and the run goes on with the
steps that do not need it. report.json and report.md are rewritten after every step, so whatever was
measured survives a later crash or a kill at the command's time limit.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import exporter
from exporter.attribution import AttributionPolicy
from exporter.ledger import ProcessLedger
from exporter.model import GpuReading, Snapshot
from exporter.record import read_cgroup, write_sample
from exporter.sampler import Attribution, Sampler
from exporter.validate_gpu import probe, stats
from exporter.validate_gpu.load import Duty, Load, LoadError, WorkerInfo
from exporter.validate_gpu.report import render_markdown, render_summary
from exporter.workload import WorkloadResolver

SCHEMA = "footprint-validate-gpu/1"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
TRACE = "trace.jsonl"
SAMPLES = "samples.jsonl"
POLLS = "polls.jsonl.gz"


@dataclass
class Options:
    """Durations in seconds. The defaults finish in about 3 minutes; ``quick()`` in about one."""

    out_dir: str
    gpu: int = 0
    idle_s: float = 15.0
    shared_s: float = 60.0
    alone_s: float = 25.0
    costs_s: float = 8.0
    period_s: float = 0.2
    duty_a: float = 0.75
    duty_b: float = 0.25
    tick_s: float = 1.0
    poll_s: float = 0.02
    proc_poll_s: float = 0.05
    fast_poll_s: float = 0.002
    fast_window_s: float = 3.0
    launch_ms: float = 5.0
    cost_calls: int = 200
    deadline_s: float = 230.0
    tag_a_mib: int = 384
    tag_b_mib: int = 128
    quick: bool = False
    selfcheck_only: bool = False

    @classmethod
    def quick_run(cls, out_dir: str, gpu: int = 0) -> Options:
        return cls(
            out_dir=out_dir,
            gpu=gpu,
            idle_s=5.0,
            shared_s=20.0,
            alone_s=8.0,
            costs_s=4.0,
            fast_window_s=2.0,
            cost_calls=50,
            deadline_s=100.0,
            quick=True,
        )

    def check(self) -> None:
        """Raise ValueError naming the option that makes no sense."""
        for name in ("idle_s", "shared_s", "alone_s", "costs_s", "fast_window_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("period_s", "tick_s", "poll_s", "proc_poll_s", "fast_poll_s", "launch_ms", "deadline_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if not (self.duty_a > 0 and self.duty_b > 0 and self.duty_a + self.duty_b <= 1.0 + 1e-9):
            raise ValueError("duty cycles must be > 0 and add up to at most 1")
        if self.cost_calls < 1:
            raise ValueError("cost_calls must be >= 1")


@dataclass
class Edges:
    """What the kit talks to; the tests pass fakes."""

    nvml: Any
    load_factory: Callable[[str, int, float], Load]
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], object] = time.sleep
    wall: Callable[[], float] = time.time
    timer: Callable[[], float] = time.perf_counter
    out: IO[str] = field(default_factory=lambda: sys.stdout)
    procfs_root: str = "/proc"


class Skipped(Exception):
    """A step that cannot run because something it needs is missing; not a failure of its own."""


class _TraceSource:
    """The exporter's NVML source, writing every reading it hands the sampler as a replay trace line."""

    name = "nvml"

    def __init__(self, inner: Any, out: IO[str], procfs_root: str) -> None:
        self.inner = inner
        self.out = out
        self.procfs_root = procfs_root
        self.t0: float | None = None
        self.last_t = -1.0
        self.lines = 0

    def read(self, now: float) -> list[GpuReading]:
        readings: list[GpuReading] = self.inner.read(now)
        if self.t0 is None:
            self.t0 = now
        t = round(now - self.t0, 6)
        if t > self.last_t:
            write_sample(self.out, t, readings, lambda pid: read_cgroup(self.procfs_root, pid))
            self.last_t = t
            self.lines += 1
        return readings

    def errors(self) -> dict[str, int]:
        errors: dict[str, int] = self.inner.errors()
        return errors

    def close(self) -> None:
        self.inner.close()


def new_attribution(procfs_root: str) -> Attribution:
    """The exporter's defaults (proportional policy, per-pid series), as ``footprint-exporter`` has them."""
    return Attribution(
        policy=AttributionPolicy(),
        resolver=WorkloadResolver(procfs_root),
        gpu_ledger=ProcessLedger("pid", 500, 600.0),
        cpu_ledger=ProcessLedger("pid", 500, 600.0),
    )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if not isinstance(exc, LoadError | Skipped) else str(exc)


class Kit:
    def __init__(self, options: Options, edges: Edges) -> None:
        self.o = options
        self.e = edges
        self.nvml = edges.nvml
        self.dir = Path(options.out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.t0 = edges.clock()
        self.report: dict[str, Any] = {
            "schema": SCHEMA,
            "status": "running",
            "started_at": _iso(edges.wall()),
            "finished_at": None,
            "wall_s": 0.0,
            "options": asdict(options),
            "environment": {},
            "gpu": {},
            "steps": [],
            "selfcheck": {},
            "workers": {},
            "pid_mapping": {},
            "phases": [],
            "update_periods": {},
            "process_samples": {},
            "costs": {},
            "split": {},
            "replay_check": {},
            "files": {},
        }
        self.handle: Any = None
        self.uuid = ""
        self.nvml_up = False
        self.load: Load | None = None
        self.workers: dict[str, WorkerInfo] = {}
        self.pid_names: dict[str, str] = {}
        self.source: _TraceSource | None = None
        self.sampler: Sampler | None = None
        self.signals: probe.SignalPoller | None = None
        self.fast: probe.ProcessSamplePoller | None = None
        self.slow: probe.ProcessSamplePoller | None = None
        self._files: dict[str, IO[str]] = {}
        for key, name in (("trace", TRACE), ("samples", SAMPLES)):
            self._files[key] = open(self.dir / name, "w", encoding="utf-8")  # noqa: SIM115 - closed in run()
            self.report["files"][key] = name
        # Every power and energy poll: too many lines to keep plain (several MB), so compressed.
        self._files["polls"] = gzip.open(self.dir / POLLS, "wt", encoding="utf-8")  # noqa: SIM115
        self.report["files"]["polls"] = POLLS

    # ------------------------------------------------------------------ plumbing

    def elapsed(self) -> float:
        return self.e.clock() - self.t0

    def say(self, line: str) -> None:
        self.e.out.write(f"[{self.elapsed():7.1f}s] {line}\n")
        self.e.out.flush()

    def save(self) -> None:
        self.report["wall_s"] = self.elapsed()
        tmp = self.dir / (REPORT_JSON + ".tmp")
        tmp.write_text(json.dumps(self.report, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, self.dir / REPORT_JSON)
        try:
            markdown = render_markdown(self.report)
        except Exception as exc:  # the JSON holds everything; a rendering bug must not lose it
            markdown = (
                f"# GPU validation report\n\nreport.md could not be rendered ({exc!r}); see report.json.\n"
            )
        tmp_md = self.dir / (REPORT_MD + ".tmp")
        tmp_md.write_text(markdown, encoding="utf-8")
        os.replace(tmp_md, self.dir / REPORT_MD)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[dict[str, Any]]:
        record: dict[str, Any] = {"name": name, "status": "running", "start_s": round(self.elapsed(), 3)}
        self.report["steps"].append(record)
        self.save()
        self.say(f"{name} ...")
        try:
            yield record
            record["status"] = "ok"
        except Skipped as exc:
            record["status"] = "skipped"
            record["reason"] = str(exc)
        except Exception as exc:  # one step failing must not stop the others
            record["status"] = "failed"
            record["error"] = _describe(exc)
            record["traceback"] = traceback.format_exc(limit=6)
        record["duration_s"] = round(self.elapsed() - record["start_s"], 3)
        detail = record.get("error") or record.get("reason") or ""
        self.say(f"{name}: {record['status']}" + (f": {detail}" if detail else ""))
        self.save()

    def _need_nvml(self) -> None:
        if not self.nvml_up:
            raise Skipped("NVML is not usable (see the nvml step)")

    def _need_workers(self) -> None:
        if not self.workers:
            raise Skipped("no GPU load (see the cuda_selfcheck and workers steps)")

    def _left(self) -> float:
        return self.o.deadline_s - self.elapsed()

    def _fits(self, seconds: float) -> None:
        if seconds + 5.0 > self._left():
            raise Skipped(f"{seconds:.0f} s would overrun the {self.o.deadline_s:.0f} s deadline")

    def _write(self, key: str, obj: dict[str, Any]) -> None:
        self._files[key].write(json.dumps(obj) + "\n")

    # ------------------------------------------------------------------ the run

    def run(self) -> int:
        finished = False
        try:
            self._run_steps()
            finished = True
        finally:
            if self.load is not None:
                with contextlib.suppress(Exception):
                    self.load.stop()
            for key in ("samples", "polls", "trace"):
                with contextlib.suppress(OSError):
                    self._files[key].close()
            if self.source is not None:
                with contextlib.suppress(Exception):
                    self.source.close()
            if self.nvml_up:
                with contextlib.suppress(Exception):
                    self.nvml.nvmlShutdown()
            failed = [s["name"] for s in self.report["steps"] if s["status"] in ("failed", "running")]
            if not finished:
                # Interrupted (Ctrl-C, SIGTERM at a time limit): what was measured so far is kept.
                self.report["status"] = "interrupted"
            else:
                self.report["status"] = "complete" if not failed else "complete_with_failures"
            self.report["failed_steps"] = failed
            self.report["finished_at"] = _iso(self.e.wall())
            self.save()
        self.e.out.write(render_summary(self.report))
        self.e.out.flush()
        return 0 if not self.report["failed_steps"] else 1

    def _run_steps(self) -> None:
        o = self.o
        with self.step("environment"):
            self._environment()
        with self.step("nvml"):
            self._nvml_start()
        with self.step("nvml_selfcheck"):
            self._need_nvml()
            self._nvml_selfcheck()
        with self.step("cuda_selfcheck"):
            self._cuda_selfcheck()
        if o.selfcheck_only:
            return
        with self.step("exporter_source"):
            self._need_nvml()
            self._exporter_source()
        with self.step("idle"):
            self._need_nvml()
            self._fits(o.idle_s)
            self._phase("idle", {}, o.idle_s, o.fast_window_s)
        with self.step("workers"):
            self._need_nvml()
            if self.load is None:
                raise Skipped("the CUDA self-check failed, so no worker is started")
            self._fits(10.0)
            self.workers = self.load.start(
                {"A": o.tag_a_mib, "B": o.tag_b_mib}, max(10.0, min(60.0, self._left() / 3))
            )
            self.report["workers"] = {name: info.to_json() for name, info in self.workers.items()}
            self._map_pids()
        shared = {"A": Duty(0.0, o.duty_a), "B": Duty(o.duty_a, o.duty_b)}
        with self.step("shared"):
            self._need_nvml()
            self._need_workers()
            self._fits(o.shared_s)
            self._phase("shared", shared, o.shared_s, o.fast_window_s)
        with self.step("costs"):
            self._need_nvml()
            self._costs(shared if self.workers else {})
        with self.step("alone_A"):
            self._need_nvml()
            self._need_workers()
            self._fits(o.alone_s)
            self._phase("alone_A", {"A": shared["A"]}, o.alone_s, 0.0)
        with self.step("alone_B"):
            self._need_nvml()
            self._need_workers()
            self._fits(o.alone_s)
            self._phase("alone_B", {"B": shared["B"]}, o.alone_s, 0.0)
        with self.step("stop_workers"):
            if self.load is None or not self.workers:
                raise Skipped("no workers")
            self.load.stop()
        with self.step("split"):
            self._need_workers()
            self._split()
        with self.step("replay_check"):
            if self.source is None or self.sampler is None or self.source.lines < 2:
                raise Skipped("no trace was recorded")
            self._replay_check()

    # ------------------------------------------------------------------ steps

    def _environment(self) -> None:
        env: dict[str, Any] = {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "kernel_release": platform.release(),
            "exporter_version": getattr(exporter, "__version__", ""),
            "pynvml": getattr(self.nvml, "__file__", type(self.nvml).__name__),
        }
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            env["nvidia_ml_py_version"] = version("nvidia-ml-py")
        self.report["environment"] = env

    def _nvml_start(self) -> None:
        nvml = self.nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise RuntimeError(f"nvmlInit: {probe.error_name(nvml, exc)}") from None
        self.nvml_up = True
        gpu: dict[str, Any] = {"index": self.o.gpu}
        for key, fn, convert in (
            ("driver_version", "nvmlSystemGetDriverVersion", probe.text),
            ("nvml_version", "nvmlSystemGetNVMLVersion", probe.text),
            ("cuda_driver_version", "nvmlSystemGetCudaDriverVersion", int),
            ("device_count", "nvmlDeviceGetCount", int),
        ):
            ok, value = probe.try_call(nvml, fn)
            gpu[key] = convert(value) if ok else {"error": value}
        ok, handle = probe.try_call(nvml, "nvmlDeviceGetHandleByIndex", self.o.gpu)
        if not ok:
            self.report["gpu"] = gpu
            self.nvml_up = False
            raise RuntimeError(f"nvmlDeviceGetHandleByIndex({self.o.gpu}): {handle}")
        self.handle = handle
        gpu.update(probe.device_facts(nvml, handle))
        self.uuid = gpu["uuid"] if isinstance(gpu.get("uuid"), str) else ""
        self.report["gpu"] = gpu
        self.say(
            f"GPU {self.o.gpu}: {gpu.get('name')} driver {gpu.get('driver_version')} "
            f"NVML {gpu.get('nvml_version')} MIG {gpu.get('mig_mode')}"
        )

    def _nvml_selfcheck(self) -> None:
        nvml, h = self.nvml, self.handle
        checks: dict[str, Any] = {}

        def check(name: str, *args: Any, show: Callable[[Any], Any] = lambda v: v) -> None:
            ok, value = probe.try_call(nvml, name, *args)
            try:
                checks[name] = {"ok": ok, "value": show(value)} if ok else {"ok": False, "error": value}
            except Exception as exc:  # an odd value must not hide that the call worked
                checks[name] = {"ok": ok, "value": repr(exc)}
            self.say(f"  {name}: " + (f"ok {checks[name].get('value')}" if ok else f"FAILED {value}"))

        def processes(v: Any) -> list[dict[str, Any]]:
            return [{"pid": int(p.pid), "used_memory_bytes": p.usedGpuMemory} for p in v]

        check("nvmlDeviceGetPowerUsage", h)
        check("nvmlDeviceGetTotalEnergyConsumption", h)
        check("nvmlDeviceGetUtilizationRates", h, show=lambda v: {"gpu": int(v.gpu), "memory": int(v.memory)})
        check("nvmlDeviceGetMemoryInfo", h, show=lambda v: {"used": int(v.used), "total": int(v.total)})
        check("nvmlDeviceGetTemperature", h, getattr(nvml, "NVML_TEMPERATURE_GPU", 0))
        check("nvmlDeviceGetEnforcedPowerLimit", h)
        check("nvmlDeviceGetComputeRunningProcesses", h, show=processes)
        check("nvmlDeviceGetGraphicsRunningProcesses", h, show=processes)
        check("nvmlDeviceGetMPSComputeRunningProcesses", h, show=processes)
        check(
            "nvmlDeviceGetProcessUtilization",
            h,
            0,
            show=lambda v: {
                "samples_in_buffer": len(v),
                "span_s": (max(int(s.timeStamp) for s in v) - min(int(s.timeStamp) for s in v)) / 1e6
                if v
                else 0,
            },
        )
        check("nvmlDeviceGetProcessesUtilizationInfo", h, 0, show=len)
        signals = probe.SignalPoller(nvml, h)
        first = signals.poll()
        for name in (probe.POWER_INSTANT, probe.POWER_AVERAGE):
            short = "pi_mw" if name == probe.POWER_INSTANT else "pa_mw"
            if short in first:
                checks[name] = {"ok": True, "value": first[short]}
            else:
                errors = signals.errors.get(name) or {signals.unsupported.get(name, "no value"): 1}
                checks[name] = {"ok": False, "error": next(iter(errors))}
            self.say(
                f"  {name}: "
                + (f"ok {first[short]} mW" if short in first else f"FAILED {checks[name]['error']}")
            )
        self.report["selfcheck"]["nvml"] = checks

    def _cuda_selfcheck(self) -> None:
        pci = self.report["gpu"].get("pci_bus_id")
        load = self.e.load_factory(pci if isinstance(pci, str) else "", self.o.gpu, self.o.launch_ms)
        # CUDA initialisation and the JIT take seconds; a hang must not eat the whole time budget.
        result = load.selfcheck(max(10.0, min(90.0, self._left())))
        self.report["selfcheck"]["cuda"] = result
        for s in result.get("steps", []):
            self.say(
                f"  {s.get('step')}: "
                + (f"ok {s.get('detail', '')}" if s.get("ok") else f"FAILED {s.get('error')}")
            )
        if not result.get("ok"):
            failed = [s for s in result.get("steps", []) if not s.get("ok")]
            raise RuntimeError(failed[-1].get("error") if failed else "CUDA self-check failed")
        self.load = load

    def _exporter_source(self) -> None:
        from exporter.sources.nvml import NvmlGpuSource

        inner = NvmlGpuSource(nvml=self.nvml, procfs_root=self.e.procfs_root)
        self.source = _TraceSource(inner, self._files["trace"], self.e.procfs_root)
        self.sampler = Sampler(
            self.source,
            None,
            attribution=new_attribution(self.e.procfs_root),
            interval_s=self.o.tick_s,
            clock=self.e.clock,
            wall_clock=self.e.wall,
        )
        self.signals = probe.SignalPoller(self.nvml, self.handle)
        self.fast = probe.ProcessSamplePoller(self.nvml, self.handle, "fast")
        self.slow = probe.ProcessSamplePoller(self.nvml, self.handle, "exporter_cadence")
        for poller in (self.fast, self.slow):
            record = poller.prime()
            record.update({"t": round(self.elapsed(), 6), "wall": self.e.wall(), "phase": "prime"})
            self._write("samples", record)

    # ------------------------------------------------------------------ phases

    def _tick(self) -> Snapshot:
        assert self.sampler is not None
        return self.sampler.tick()

    def _totals(self, snap: Snapshot) -> dict[str, Any]:
        gpu_j = unattributed = 0.0
        for g in snap.gpus:
            if g.reading.uuid == self.uuid or (not self.uuid and g.reading.index == self.o.gpu):
                gpu_j, unattributed = g.energy_j_total, g.unattributed_energy_j_total
        pids: dict[str, float] = {}
        for p in snap.gpu_processes:
            if not self.uuid or p.gpu_uuid == self.uuid:
                pids[p.pid] = pids.get(p.pid, 0.0) + p.energy_j_total
        return {"gpu_j": gpu_j, "unattributed_j": unattributed, "pids": pids}

    def _phase(self, name: str, plan: dict[str, Duty], duration: float, fast_window: float) -> None:
        if self.sampler is None:
            raise Skipped("the exporter's NVML source did not start")
        o, clock = self.o, self.e.clock
        lead = 0.3 if plan else 0.0
        start = clock() + lead
        if plan:
            assert self.load is not None
            self.load.run(plan, start - clock(), duration, o.period_s)
        end = start + duration
        phase: dict[str, Any] = {
            "name": name,
            "plan": {k: v.to_json() for k, v in plan.items()},
            "period_s": o.period_s,
            "start_s": round(start - self.t0, 3),
            "duration_s": duration,
        }
        self.report["phases"].append(phase)
        self.say(f"  phase {name}: {duration:.0f} s" + (f", plan {phase['plan']}" if plan else ", no load"))
        delay = start - clock()
        if delay > 0:
            self.e.sleep(delay)
        before = self._totals(self._tick())
        polls, fast_calls, slow_calls = self._monitor(name, start, end, fast_window)
        after = self._totals(self._tick())
        phase["energy"] = _energy(polls, o.tick_s)
        if fast_window > 0:
            window = [(t, v) for t, v in polls if t < start + fast_window]
            phase["update_periods"] = _update_periods(window, o.fast_poll_s)
            self.report["update_periods"][name] = phase["update_periods"]
        phase["process_samples"] = {
            "fast": stats.process_sample_stats(fast_calls),
            "exporter_cadence": stats.process_sample_stats(slow_calls),
        }
        by_pid = {
            pid: after["pids"].get(pid, 0.0) - before["pids"].get(pid, 0.0)
            for pid in set(after["pids"]) | set(before["pids"])
        }
        phase["attribution"] = {
            "gpu_j": after["gpu_j"] - before["gpu_j"],
            "unattributed_j": after["unattributed_j"] - before["unattributed_j"],
            "by_pid": by_pid,
        }
        if plan:
            assert self.load is not None
            phase["workers"] = self.load.collect(max(30.0, 5 * o.period_s))
        self._name_workers()
        self.save()

    def _monitor(
        self, phase: str, start: float, end: float, fast_window: float
    ) -> tuple[list[tuple[float, dict[str, Any]]], list[dict[str, Any]], list[dict[str, Any]]]:
        """Poll power and energy (every fast_poll_s for the first ``fast_window`` seconds, then every
        poll_s), per-process samples every proc_poll_s, and tick the exporter's sampler every tick_s."""
        assert self.signals is not None and self.fast is not None and self.slow is not None
        o, clock = self.o, self.e.clock
        polls: list[tuple[float, dict[str, Any]]] = []
        fast_calls: list[dict[str, Any]] = []
        slow_calls: list[dict[str, Any]] = []
        next_poll = next_proc = start
        next_tick = start + o.tick_s
        fast_until = start + fast_window
        while True:
            now = clock()
            if now >= end:
                break
            if now >= next_tick:
                self._tick()
                slow_calls.append(self._proc_poll(self.slow, phase, now))
                next_tick += o.tick_s
                while next_tick <= now:
                    next_tick += o.tick_s
            if now >= next_poll:
                values = self.signals.poll()
                polls.append((now, values))
                self._write("polls", {"t": round(now - self.t0, 6), "phase": phase, **values})
                step = o.fast_poll_s if now < fast_until else o.poll_s
                next_poll += step
                if next_poll <= now:
                    next_poll = now + step
            if now >= next_proc:
                fast_calls.append(self._proc_poll(self.fast, phase, now))
                next_proc += o.proc_poll_s
                if next_proc <= now:
                    next_proc = now + o.proc_poll_s
            delay = min(next_poll, next_proc, next_tick, end) - clock()
            if delay > 0:
                self.e.sleep(delay)
        return polls, fast_calls, slow_calls

    def _proc_poll(self, poller: probe.ProcessSamplePoller, phase: str, now: float) -> dict[str, Any]:
        record = poller.poll()
        record.update({"t": round(now - self.t0, 6), "wall": self.e.wall(), "phase": phase})
        self._write("samples", record)
        return record

    # ------------------------------------------------------------------ which NVML pid is which worker

    def _map_pids(self) -> None:
        nvml, h = self.nvml, self.handle
        listed: dict[int, int | None] = {}
        for fn in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetMPSComputeRunningProcesses"):
            ok, infos = probe.try_call(nvml, fn, h)
            if ok:
                for info in infos:
                    used = getattr(info, "usedGpuMemory", None)
                    listed.setdefault(int(info.pid), None if used is None else int(used))
        own = {info.pid: name for name, info in self.workers.items()}
        mapping: dict[str, str] = {}
        if own and all(pid in listed for pid in own):
            method = "pid"
            mapping = {str(pid): name for pid, name in own.items()}
        else:
            unknown = [pid for pid in listed if pid not in own]
            memory = [listed[pid] for pid in unknown]
            if (
                len(unknown) == len(self.workers)
                and all(m is not None for m in memory)
                and len(set(memory)) == len(memory)
            ):
                # Our workers hold different amounts of extra memory: the larger user is the larger tag.
                method = "memory"
                by_mem = sorted(unknown, key=lambda pid: listed[pid] or 0, reverse=True)
                by_tag = sorted(self.workers, key=lambda n: self.workers[n].tag_bytes, reverse=True)
                mapping = {str(pid): name for pid, name in zip(by_mem, by_tag, strict=True)}
            else:
                method = "none"
        self.pid_names = mapping
        self.report["pid_mapping"] = {
            "method": method,
            "nvml_processes": [
                {
                    "pid": pid,
                    "used_memory_bytes": mem,
                    "in_our_proc": os.path.exists(os.path.join(self.e.procfs_root, str(pid))),
                }
                for pid, mem in sorted(listed.items())
            ],
            "worker_pids": {name: info.pid for name, info in self.workers.items()},
            "map": dict(mapping),
            "note": {
                "pid": "NVML lists the workers under the PIDs they see themselves: same PID namespace",
                "memory": "NVML's PIDs are not the workers' own (another PID namespace, e.g. a container); "
                "matched by the extra memory each worker holds",
                "none": "the workers could not be found in NVML's process list by PID or memory; after the "
                "shared phase the PID with more attributed energy is taken as A",
            }[method],
        }

    def _name_workers(self) -> None:
        """by_worker for every phase from the current PID map; falls back to the energy rank."""
        mapping = self.report["pid_mapping"]
        if mapping.get("method") == "none" and not self.pid_names:
            shared = next((p for p in self.report["phases"] if p["name"] == "shared"), None)
            if shared is not None:
                ranked = sorted(shared["attribution"]["by_pid"].items(), key=lambda kv: kv[1], reverse=True)
                if len(ranked) >= 2:
                    self.pid_names = {ranked[0][0]: "A", ranked[1][0]: "B"}
                    mapping["method"] = "energy_rank"
                    mapping["map"] = dict(self.pid_names)
                    mapping["note"] += " (so the split's direction is assumed, only its size is measured)"
        for phase in self.report["phases"]:
            att = phase.get("attribution")
            if not att:
                continue
            by_worker: dict[str, float] = {"A": 0.0, "B": 0.0, "other": 0.0}
            for pid, joules in att["by_pid"].items():
                key = self.pid_names.get(pid, "other")
                by_worker[key] = by_worker.get(key, 0.0) + joules
            att["by_worker"] = by_worker
            att["share_of_attributed"] = stats.shares({k: by_worker[k] for k in ("A", "B")})
            att["share_of_gpu"] = {k: stats.ratio(v, att["gpu_j"]) for k, v in by_worker.items()}
            att["unattributed_share"] = stats.ratio(att["unattributed_j"], att["gpu_j"])

    # ------------------------------------------------------------------ costs

    def _costs(self, plan: dict[str, Duty]) -> None:
        from exporter.sources.nvml import NvmlGpuSource

        o, timer = self.o, self.e.timer
        run_end = self.e.clock()
        if plan:
            assert self.load is not None
            self.load.run(plan, 0.3, o.costs_s, o.period_s)
            run_end += 0.3 + o.costs_s
            self.e.sleep(0.8)  # the workers are computing before the first timed call
        budget_end = timer() + max(1.0, o.costs_s - 1.5)
        costs: dict[str, Any] = {"under_load": bool(plan), "calls_per_function": o.cost_calls}
        recorder = probe.CallRecorder(self.nvml, timer)
        recorded = NvmlGpuSource(nvml=recorder, procfs_root=self.e.procfs_root)
        plain = NvmlGpuSource(nvml=self.nvml, procfs_root=self.e.procfs_root)
        try:
            startup = recorder.take()
            recorded.read(self.e.clock())  # a first read may refresh handles; the steady state is next
            recorder.take()
            recorded.read(self.e.clock())
            per_read = recorder.take()
            counts: dict[str, int] = {}
            first_args: dict[str, tuple[Any, ...]] = {}
            for name, args in per_read:
                counts[name] = counts.get(name, 0) + 1
                first_args.setdefault(name, args)
            extra: dict[str, tuple[Any, ...]] = {}
            for name, args in startup:
                if name not in first_args and name not in ("nvmlInit", "nvmlInitWithFlags", "nvmlShutdown"):
                    extra.setdefault(name, args)
            fids = [
                getattr(self.nvml, n)
                for n in (probe.POWER_INSTANT, probe.POWER_AVERAGE)
                if hasattr(self.nvml, n)
            ]
            for name, args in (
                ("nvmlDeviceGetFieldValues", (self.handle, fids)),
                ("nvmlDeviceGetProcessUtilization", (self.handle, 0)),
                ("nvmlDeviceGetProcessesUtilizationInfo", (self.handle, 0)),
                ("nvmlDeviceGetMPSComputeRunningProcesses", (self.handle,)),
            ):
                if name not in first_args and hasattr(self.nvml, name):
                    extra.setdefault(name, args)
            sections = len(first_args) + len(extra) + 3
            share = max(0.05, (budget_end - timer()) / sections)

            def timed(fn: Callable[[], Any]) -> dict[str, Any]:
                return probe.time_calls(fn, self.nvml, o.cost_calls, timer() + share, timer)

            per_call: dict[str, Any] = {}
            for name, args in first_args.items():
                per_call[name] = {"calls_per_read": counts[name], **timed(_bind(self.nvml, name, args))}
            other: dict[str, Any] = {}
            for name, args in extra.items():
                other[name] = timed(_bind(self.nvml, name, args))
            costs["nvml_calls_per_read"] = per_call
            costs["other_nvml_calls"] = other
            floor_us = sum(v["calls_per_read"] * (v["median"] or 0.0) for v in per_call.values())
            costs["nvml_floor_us"] = floor_us
            costs["source_read"] = timed(lambda: plain.read(self.e.clock()))
            sampler = Sampler(
                plain, None, attribution=new_attribution(self.e.procfs_root), clock=self.e.clock
            )
            sampler.tick()
            costs["sampler_tick"] = timed(sampler.tick)
            # The same tick with every NVML call timed from inside: how much of a tick NVML itself is.
            rec_sampler = Sampler(
                recorded, None, attribution=new_attribution(self.e.procfs_root), clock=self.e.clock
            )
            rec_sampler.tick()
            fractions: list[float] = []
            deadline = timer() + share
            for _ in range(o.cost_calls):
                if timer() > deadline and fractions:
                    break
                recorder.nvml_s = 0.0
                started = timer()
                rec_sampler.tick()
                took = timer() - started
                if took > 0:
                    fractions.append(recorder.nvml_s / took)
                recorder.take()
            costs["nvml_share_of_tick"] = stats.summary(fractions)
            tick_median = costs["sampler_tick"]["median"]
            costs["tick_over_floor"] = stats.ratio(tick_median, floor_us)
            costs["read_over_floor"] = stats.ratio(costs["source_read"]["median"], floor_us)
            costs["bar"] = 1.2
            costs["bar_holds"] = None if costs["tick_over_floor"] is None else costs["tick_over_floor"] <= 1.2
        finally:
            recorded.close()
            plain.close()
            self.report["costs"] = costs
        if plan:
            assert self.load is not None
            # A worker takes its next command only after this run: the next phase must not overlap it.
            delay = run_end - self.e.clock()
            if delay > 0:
                self.e.sleep(delay)
            costs["workers"] = self.load.collect(max(30.0, o.costs_s + 10))

    # ------------------------------------------------------------------ results

    def _split(self) -> None:
        phases = {p["name"]: p for p in self.report["phases"]}
        shared = phases.get("shared")
        if shared is None or "attribution" not in shared:
            raise Skipped("the shared phase did not run")
        o = self.o
        att = shared["attribution"]
        measured = att.get("share_of_attributed", {}).get("A")
        split: dict[str, Any] = {
            "pid_mapping": self.report["pid_mapping"].get("method"),
            "measured_share_A": measured,
            "nominal_share_A": o.duty_a / (o.duty_a + o.duty_b),
            "unattributed_share": att.get("unattributed_share"),
        }
        workers = shared.get("workers", {})
        launches = {k: float(v.get("launches") or 0) for k, v in workers.items()}
        busy = {k: float(v.get("busy_s") or 0.0) for k, v in workers.items()}
        if launches.get("A", 0) + launches.get("B", 0) > 0:
            split["work_share_A"] = launches.get("A", 0) / (launches.get("A", 0) + launches.get("B", 0))
        if busy.get("A", 0) + busy.get("B", 0) > 0:
            split["busy_share_A"] = busy.get("A", 0) / (busy.get("A", 0) + busy.get("B", 0))
        idle_w = _mean_power(phases.get("idle"))
        alone_a, alone_b = _mean_power(phases.get("alone_A")), _mean_power(phases.get("alone_B"))
        if idle_w is not None and alone_a is not None and alone_b is not None:
            above_a, above_b = alone_a - idle_w, alone_b - idle_w
            split["alone_A_power_above_idle_w"] = above_a
            split["alone_B_power_above_idle_w"] = above_b
            if above_a + above_b > 0:
                split["energy_share_A_from_alone_phases"] = above_a / (above_a + above_b)
        for key, label in (
            ("nominal_share_A", "error_pp_vs_nominal"),
            ("work_share_A", "error_pp_vs_work"),
            ("energy_share_A_from_alone_phases", "error_pp_vs_alone_phases"),
        ):
            if measured is not None and split.get(key) is not None:
                split[label] = 100.0 * (measured - split[key])
        for name, holder in (("alone_A", "B"), ("alone_B", "A")):
            p = phases.get(name)
            if p and "attribution" in p:
                split[f"idle_holder_{holder}_share_in_{name}"] = (
                    p["attribution"].get("share_of_gpu", {}).get(holder)
                )
        self.report["split"] = split
        shared_samples = shared.get("process_samples", {})
        self.report["process_samples"] = {
            "phase": "shared",
            "pid_names": dict(self.pid_names),
            **shared_samples,
        }

    def _replay_check(self) -> None:
        from exporter.sources.replay import ReplayGpuSource

        assert self.source is not None and self.sampler is not None
        self._files["trace"].flush()
        path = self.dir / TRACE
        times = [
            json.loads(line)["t"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
        ]
        replay = ReplayGpuSource(str(path))
        now = [0.0]
        sampler = Sampler(replay, None, attribution=new_attribution(self.e.procfs_root), clock=lambda: now[0])
        for t in times:
            now[0] = float(t)
            sampler.tick()
        live = self._totals(self.sampler.snapshot)
        replayed = self._totals(sampler.snapshot)
        track = next((tr for tr in replay.tracks if tr.uuid == self.uuid), replay.tracks[0])
        pid_diffs = {
            pid: replayed["pids"].get(pid, 0.0) - live["pids"].get(pid, 0.0)
            for pid in set(live["pids"]) | set(replayed["pids"])
        }
        self.report["replay_check"] = {
            "trace_lines": len(times),
            "trace_span_s": times[-1] - times[0],
            "trace_energy_j": track.energy[-1],
            "live_gpu_j": live["gpu_j"],
            "replay_gpu_j": replayed["gpu_j"],
            "replay_vs_live_relative": stats.ratio(replayed["gpu_j"] - live["gpu_j"], live["gpu_j"]),
            "live_by_pid_j": live["pids"],
            "replay_by_pid_j": replayed["pids"],
            "max_abs_pid_diff_j": max((abs(v) for v in pid_diffs.values()), default=0.0),
        }


def _bind(nvml: Any, name: str, args: tuple[Any, ...]) -> Callable[[], Any]:
    fn = getattr(nvml, name)
    return lambda: fn(*args)


def _iso(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


def _series(polls: list[tuple[float, dict[str, Any]]], key: str) -> tuple[list[float], list[float | None]]:
    return [t for t, _ in polls], [v.get(key) for _, v in polls]


def _energy(polls: list[tuple[float, dict[str, Any]]], tick_s: float) -> dict[str, Any]:
    """The counter's energy over the phase against power integrated over the same span.

    The span runs from the first to the last poll that read the counter; each power signal is
    integrated (trapezoid) over its polls inside that span, at the poll rate and, as a 1 s poller would,
    at ``tick_s``.
    """
    times, energy = _series(polls, "e_mj")
    valid = [(t, e) for t, e in zip(times, energy, strict=True) if e is not None]
    out: dict[str, Any] = {"polls": len(polls)}
    if len(valid) < 2:
        out["counter_j"] = None
        span = (times[0], times[-1]) if len(times) >= 2 else None
    else:
        (t_first, e_first), (t_last, e_last) = valid[0], valid[-1]
        out["counter_j"] = (e_last - e_first) / 1000.0
        span = (t_first, t_last)
    if span is None:
        return out
    inside = [(t, v) for t, v in polls if span[0] - 1e-9 <= t <= span[1] + 1e-9]
    out["span_s"] = span[1] - span[0]
    if out["counter_j"] is not None and out["span_s"] > 0:
        out["counter_mean_w"] = out["counter_j"] / out["span_s"]
    for key, label in (("p_mw", "power_usage"), ("pi_mw", "power_instant"), ("pa_mw", "power_average")):
        t_in, v_in = _series(inside, key)
        watts: list[float | None] = [None if v is None else v / 1000.0 for v in v_in]
        integral = stats.trapezoid(t_in, watts)
        if integral is None:
            out[label] = None
            continue
        t_slow, v_slow = stats.every(t_in, watts, tick_s)
        slow: list[float | None] = list(v_slow)
        slow_integral = stats.trapezoid(t_slow, slow)
        out[label] = {
            "integral_j": integral,
            "over_counter": stats.ratio(integral, out["counter_j"]),
            "integral_at_tick_j": slow_integral,
            "at_tick_over_counter": stats.ratio(slow_integral, out["counter_j"]),
            "tick_s": tick_s,
        }
    return out


def _update_periods(window: list[tuple[float, dict[str, Any]]], poll_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, label in (
        ("e_mj", "energy_counter"),
        ("p_mw", "power_usage"),
        ("pi_mw", "power_instant"),
        ("pa_mw", "power_average"),
    ):
        times, values = _series(window, key)
        out[label] = stats.update_period(times, values, poll_s)
    for key, label in (("pi_ts", "power_instant_timestamp"), ("pa_ts", "power_average_timestamp")):
        stamps = sorted({int(v[key]) for _, v in window if v.get(key) is not None})
        gaps = [(b - a) / 1e6 for a, b in itertools.pairwise(stamps)]
        out[label] = stats.summary(gaps, 1000.0)
    return out


def _mean_power(phase: dict[str, Any] | None) -> float | None:
    if not phase:
        return None
    value = phase.get("energy", {}).get("counter_mean_w")
    return float(value) if value is not None else None
