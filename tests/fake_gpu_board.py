"""A GPU board that evolves on a virtual clock, behind the fake pynvml, and a simulated load for it.

The validation kit (exporter/validate_gpu) polls NVML for minutes and loads the GPU from worker
processes; on CI there is neither a GPU nor time. ``Board`` wraps a ``FakeNvml`` (tests/fake_pynvml.py)
and, before every NVML call, sets the fake's counters from a power model driven by ``SimulatedLoad``
and a ``VirtualClock`` that the kit's ``sleep`` advances. What it models, and where that comes from:

- ``nvmlDeviceGetTotalEnergyConsumption``: millijoules since the driver loaded (NVML API reference).
  The value moves in steps every ``energy_period_s`` (the ML.ENERGY/Zeus project reports about
  100 ms on recent GPUs); between steps NVML returns the same number.
- ``nvmlDeviceGetPowerUsage``: "On Ampere (except GA100) or newer GPUs, the API returns power averaged
  over 1 sec interval" (NVML API reference): the mean power over the last ``power_window_s``,
  refreshed every ``power_period_s``. Real sensors are noisy, so each refresh differs from the
  previous one by ``noise_mw`` (alternating sign); without it a flat average would hide its updates.
- ``nvmlDeviceGetFieldValues`` with ``NVML_FI_DEV_POWER_INSTANT`` / ``_AVERAGE``: each value with its
  own ``timestamp`` ("CPU Timestamp of this value in microseconds since 1970") and a per-field
  ``nvmlReturn``; ``fields_supported=False`` answers NOT_SUPPORTED per field, as a GPU without them does.
- per-process utilisation: every ``sample_period_s`` the driver records one sample for each process
  that was busy during that period (SM percent of the period), none for idle ones; the fake pynvml
  answers ``nvmlDeviceGetProcessUtilization`` from those (newer than lastSeenTimeStamp, NOT_FOUND
  when none).

The power model: ``idle_w`` plus ``busy_w`` while any worker computes. Workers compute during their
duty-cycle windows exactly (a real worker fills its window to within half a kernel launch), so the
true energy over any interval is known in closed form: ``Board.true_energy_j(a, b)``.
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass
from typing import Any

import pynvml as _real
from fake_pynvml import FakeNvml, FakeProcess

from exporter.validate_gpu.load import Duty, LoadError, WorkerInfo

EPOCH_S = 1_700_000_000.0  # wall clock = EPOCH_S + virtual clock


class VirtualClock:
    """Monotonic seconds that move only when the code under test sleeps."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.now += seconds

    def wall(self) -> float:
        return EPOCH_S + self.now


@dataclass(frozen=True)
class _Run:
    """One worker computing on its duty cycle from ``start`` to ``end``."""

    pid: int
    start: float
    end: float
    period: float
    duty: Duty

    def busy_until(self, t: float) -> float:
        """Seconds of computing between ``start`` and ``t``."""
        if t <= self.start:
            return 0.0
        x = min(t, self.end) - self.start
        k = math.floor(x / self.period)
        rest = x - k * self.period
        w0 = self.duty.offset * self.period
        w1 = min((self.duty.offset + self.duty.busy) * self.period, self.period)
        return k * (w1 - w0) + min(max(rest - w0, 0.0), w1 - w0)

    def busy(self, a: float, b: float) -> float:
        return self.busy_until(b) - self.busy_until(a)


class SimulatedLoad:
    """The kit's ``Load`` without a GPU: workers appear in the fake NVML's process list and compute
    on the virtual clock. ``nvml_pids`` differ from ``os_pids`` for a kit in another PID namespace."""

    def __init__(
        self,
        nvml: FakeNvml,
        clock: VirtualClock,
        *,
        gpu: int = 0,
        os_pids: dict[str, int] | None = None,
        nvml_pids: dict[str, int] | None = None,
        launch_s: float = 0.005,
        context_bytes: int | None = 500 << 20,
        selfcheck_error: str = "",
        start_error: str = "",
    ) -> None:
        self.nvml = nvml
        self.clock = clock
        self.gpu = gpu
        self.nvml_pids = nvml_pids or {"A": 4242, "B": 4343}
        self.os_pids = os_pids or dict(self.nvml_pids)
        self.launch_s = launch_s
        self.context_bytes = context_bytes
        self.selfcheck_error = selfcheck_error
        self.start_error = start_error
        self.runs: list[_Run] = []
        self._pending: dict[str, _Run] = {}
        self.started: dict[str, int] = {}
        self.stopped = False

    def selfcheck(self, timeout_s: float) -> dict[str, Any]:
        if self.selfcheck_error:
            return {
                "ok": False,
                "steps": [{"step": "cuModuleLoadDataEx", "ok": False, "error": self.selfcheck_error}],
            }
        return {
            "ok": True,
            "steps": [{"step": "launch", "ok": True, "detail": "simulated"}],
            "iters": 1000,
            "launch_ms": self.launch_s * 1000,
        }

    def start(self, tags_mib: dict[str, int], timeout_s: float) -> dict[str, WorkerInfo]:
        if self.start_error:
            raise LoadError(self.start_error)
        infos = {}
        for name, tag in tags_mib.items():
            used = None if self.context_bytes is None else self.context_bytes + (tag << 20)
            self.nvml.gpus[self.gpu].processes.append(
                FakeProcess(pid=self.nvml_pids[name], used_memory_bytes=used)
            )
            self.started[name] = tag
            infos[name] = WorkerInfo(
                name, self.os_pids[name], 1000, self.launch_s * 1000, tag << 20, {"name": "sim"}
            )
        return infos

    def run(self, plan: dict[str, Duty], delay_s: float, duration_s: float, period_s: float) -> None:
        start = self.clock() + delay_s
        for name, duty in plan.items():
            run = _Run(self.nvml_pids[name], start, start + duration_s, period_s, duty)
            self.runs.append(run)
            self._pending[name] = run

    def collect(self, timeout_s: float) -> dict[str, dict[str, Any]]:
        out = {}
        for name, run in self._pending.items():
            if self.clock() < run.end:
                raise LoadError(f"worker {name} still running at collect")
            busy = run.busy(run.start, run.end)
            out[name] = {
                "launches": round(busy / self.launch_s),
                "busy_s": busy,
                "periods": math.ceil((run.end - run.start) / run.period - 1e-9),
                "launch_ms_median": self.launch_s * 1000,
                "error": "",
            }
        self._pending = {}
        return out

    def stop(self) -> None:
        pids = {self.nvml_pids[n] for n in self.started}
        gpu = self.nvml.gpus[self.gpu]
        gpu.processes = [p for p in gpu.processes if p.pid not in pids]
        self.started = {}
        self.stopped = True

    # ------------------------------------------------------------------ truth

    def busy(self, pid: int, a: float, b: float) -> float:
        return sum(r.busy(a, b) for r in self.runs if r.pid == pid)

    def any_busy(self, a: float, b: float) -> float:
        # Duty windows of different workers never overlap in the kit's plans, so busy times add up.
        return sum(r.busy(a, b) for r in self.runs)


class Board(types.ModuleType):
    """pynvml as the kit sees it: the fake module, with the GPU's state brought up to the clock first."""

    def __init__(
        self,
        nvml: FakeNvml,
        clock: VirtualClock,
        load: SimulatedLoad,
        *,
        gpu: int = 0,
        idle_w: float = 70.0,
        busy_w: float = 520.0,
        energy_period_s: float = 0.1,
        power_period_s: float = 0.04,
        power_window_s: float = 1.0,
        noise_mw: int = 1,
        sample_period_s: float = 0.5,
        fields_supported: bool = True,
        nvml_version: str = "12.550.90.07",
        cuda_driver_version: int = 12040,
    ) -> None:
        super().__init__("pynvml")
        self._nvml = nvml
        self.clock = clock
        self.load = load
        self.gpu = gpu
        self.idle_w = idle_w
        self.busy_w = busy_w
        self.energy_period_s = energy_period_s
        self.power_period_s = power_period_s
        self.power_window_s = power_window_s
        self.noise_mw = noise_mw
        self.sample_period_s = sample_period_s
        self.fields_supported = fields_supported
        self.nvml_version = nvml_version
        self.cuda_driver_version = cuda_driver_version
        self._sample_tick = math.floor(clock() / sample_period_s)
        self._instant_w = idle_w
        self._field_ts_us = 0

    # ------------------------------------------------------------------ truth

    def true_energy_j(self, a: float, b: float) -> float:
        """Joules the board used between clock times a and b."""
        return self.idle_w * (b - a) + self.busy_w * self.load.any_busy(a, b)

    def _mean_w(self, a: float, b: float) -> float:
        return self.true_energy_j(a, b) / (b - a)

    # ------------------------------------------------------------------ state at the clock

    def sync(self) -> None:
        t = self.clock()
        gpu = self._nvml.gpus[self.gpu]
        self._nvml.now_us = round((EPOCH_S + t) * 1e6)
        if gpu.energy_j is not None:
            step = math.floor(t / self.energy_period_s) * self.energy_period_s
            # Cumulative since "driver load" at clock 0.
            gpu.energy_j = self.true_energy_j(0.0, step)
        k = math.floor(t / self.power_period_s)
        tp = k * self.power_period_s
        noise = self.noise_mw / 1000.0 * (1 if k % 2 == 0 else -1)
        gpu.power_w = self._mean_w(tp - self.power_window_s, tp) + noise
        self._instant_w = self._mean_w(tp - self.power_period_s, tp) + noise
        self._field_ts_us = round((EPOCH_S + tp) * 1e6)
        gpu.util_percent = round(100 * self.load.any_busy(t - 1.0, t))
        last = math.floor(t / self.sample_period_s)
        for j in range(self._sample_tick + 1, last + 1):
            tj = j * self.sample_period_s
            for pid in sorted({p.pid for p in gpu.processes}):
                busy = self.load.busy(pid, tj - self.sample_period_s, tj)
                if busy > 0:
                    self._nvml.add_sample(
                        self.gpu, pid, round(100 * busy / self.sample_period_s), round((EPOCH_S + tj) * 1e6)
                    )
        self._sample_tick = max(self._sample_tick, last)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._nvml, name)
        if not (name.startswith("nvml") and callable(value)):
            return value

        def call(*args: Any) -> Any:
            self.sync()
            return value(*args)

        return call

    # ------------------------------------------------------------------ what the fake pynvml lacks

    def nvmlSystemGetNVMLVersion(self) -> str:
        return self.nvml_version

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self.cuda_driver_version

    def nvmlDeviceGetFieldValues(self, handle: Any, field_ids: list[int]) -> Any:
        self.sync()
        self._nvml.calls["nvmlDeviceGetFieldValues"] += 1
        if self._nvml.gpus[handle.gpu].lost:
            raise _real.NVMLError(_real.NVML_ERROR_GPU_IS_LOST)
        values = (_real.c_nvmlFieldValue_t * len(field_ids))()
        for i, fid in enumerate(field_ids):
            values[i].fieldId = fid
            values[i].timestamp = self._field_ts_us
            if not self.fields_supported or fid not in (
                _real.NVML_FI_DEV_POWER_INSTANT,
                _real.NVML_FI_DEV_POWER_AVERAGE,
            ):
                values[i].nvmlReturn = _real.NVML_ERROR_NOT_SUPPORTED
                continue
            values[i].nvmlReturn = _real.NVML_SUCCESS
            values[i].valueType = _real.NVML_VALUE_TYPE_UNSIGNED_INT
            watts = (
                self._instant_w
                if fid == _real.NVML_FI_DEV_POWER_INSTANT
                else self._nvml.gpus[handle.gpu].power_w
            )
            values[i].value.uiVal = round(watts * 1000)
        return values
