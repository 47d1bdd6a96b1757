"""A fake ``pynvml`` module for tests: GPUs in memory, answered at the pynvml call boundary.

Usage::

    from tests.fake_pynvml import FakeGpu, FakeNvml, FakeProcess

    nvml = FakeNvml(gpus=[
        FakeGpu(uuid="GPU-a", power_w=300.0, energy_j=1000.0,
                processes=[FakeProcess(pid=4242, used_memory_bytes=2 << 30)]),
        FakeGpu(uuid="GPU-b", energy_j=None),          # no energy counter (pre-Volta)
        FakeGpu(uuid="GPU-c", unsupported={"nvmlDeviceGetTemperature"}),
    ])
    source = NvmlGpuSource(nvml=nvml)
    nvml.gpus[0].processes[0].sm_util = 80  # the process's kernels run 80% of the time from now on
    nvml.advance(2.0)            # 2 s pass: counters grow by power x 2 s, the driver takes its samples
    nvml.add_sample(0, 4242, 80) # or put one sample (SM busy percent) into the driver's buffer directly
    nvml.lose(1); nvml.recover(1, reset_energy=True)

What it mimics, checked against the installed nvidia-ml-py:

- the same function names and signatures the exporter uses, returning the same types: ints in mW
  and mJ, the real ctypes structures (``c_nvmlMemory_t``, ``c_nvmlUtilization_t``, ``nvmlPciInfo_t``
  with ``busId`` as bytes, ``c_nvmlProcessUtilizationSample_t``, ``c_nvmlDeviceAttributes``) and the
  same "friendly objects" for running processes (``pid``, ``usedGpuMemory`` None when NVML says
  "not available", ``gpuInstanceId`` 0xFFFFFFFF without MIG, ``computeInstanceId``);
- the real exceptions: every ``NVML_*`` constant and ``NVMLError*`` class is pynvml's own, so
  ``pynvml.NVMLError(code)`` maps to ``NVMLError_NotSupported`` etc. exactly as on a real machine;
- per-process utilisation as NVML's API reference documents ``nvmlDeviceGetProcessUtilization``
  (docs.nvidia.com/deploy/nvml-api, "Device Queries"; the same text is in nvml.h): the driver
  samples each process at its own period (``FakeGpu.sample_period_s``, which can be longer than the
  exporter's interval) and records a sample only for a process "that had some non-zero utilization
  during the last sample period", so idle processes are simply absent; a call returns "one
  utilization sample structure ... per process", only from samples with a timestamp (CPU time, us)
  greater than ``lastSeenTimeStamp`` ("0 to read utilization based on all the samples maintained by
  the driver's internal sample buffer", which is bounded: ``FakeGpu.sample_buffer``), and raises
  NVML_ERROR_NOT_FOUND "if no valid sample entries are found since the lastSeenTimeStamp". The docs
  do not say which value the one structure carries when a process has several samples newer than
  the timestamp; the fake averages them, as nvitop's maintainers observed (nvitop PR #85) and as
  "read utilization since the previous query" suggests. Processes are sampled at staggered moments,
  each with its own timestamp, as seen on real drivers (go-nvml issue #51);
- the size-query convention, as pynvml's wrapper runs it: one call without a buffer to learn the
  count, then one with a buffer of that size; when more samples arrive in between
  (``FakeGpu.on_size_query`` runs there) the second call fails with INSUFFICIENT_SIZE, which pynvml
  raises as ``NVMLError_InsufficientSize``;
- "On MIG-enabled GPUs, querying process utilization is not currently supported" and neither is
  querying device utilization rates (both notes in nvml.h): NOT_SUPPORTED;
- compute and graphics process lists (a process can be in both), and MPS clients in
  ``nvmlDeviceGetMPSComputeRunningProcesses`` ("processes with a Multi-Process Service (MPS)
  compute context", Volta and newer). Which PID MPS activity is sampled under is not documented:
  ``FakeGpu.mps_samples`` is ``clients`` (each client's own) or ``server`` (all of it under the
  MPS server process, ``FakeProcess.mps_server``);
- a lost GPU raises GPU_IS_LOST from every call on it, including getting its handle.

``calls`` counts the calls per function name (e.g. to check that a missing counter is not asked for
again); ``FakeGpu.failures`` makes a named function raise any NVML error code, ``unsupported`` makes
it raise NOT_SUPPORTED.
"""

from __future__ import annotations

import types
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pynvml as _real

NVMLError = _real.NVMLError


@dataclass
class FakeProcess:
    """A process holding a GPU. ``used_memory_bytes=None``: NVML reports it as not available."""

    pid: int
    used_memory_bytes: int | None = 1 << 30
    compute: bool = True
    graphics: bool = False  # also (or only, with compute=False) in the graphics process list
    gpu_instance_id: int | None = None  # MIG: the GPU instance it runs in
    compute_instance_id: int | None = None
    # Percent of the time its kernels run, from now on: what the driver's sampling measures.
    sm_util: float = 0.0
    mps: bool = False  # an MPS client: listed by nvmlDeviceGetMPSComputeRunningProcesses
    mps_server: bool = False  # the MPS server (nvidia-cuda-mps-server), a compute process
    # Where in each sample period the driver samples this process (None: staggered by pid).
    sample_phase_s: float | None = None


@dataclass
class FakeMigInstance:
    """A MIG GPU instance (slot order = MIG device index)."""

    gpu_instance_id: int
    multiprocessor_count: int


@dataclass
class FakeSample:
    """One per-process utilisation sample as NVML keeps them (percentages, microseconds)."""

    pid: int
    timestamp_us: int
    sm_util: int
    mem_util: int = 0


@dataclass
class FakeGpu:
    """One GPU. Numbers are in the exporter's units; the fake converts to NVML's (mW, mJ, %)."""

    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    pci_bus_id: str = "00000000:18:00.0"
    power_w: float = 300.0
    energy_j: float | None = 0.0  # cumulative counter; None: no counter (NOT_SUPPORTED)
    util_percent: int = 50
    mem_used_bytes: int = 40_000_000_000
    mem_total_bytes: int = 85_899_345_920
    temp_c: int = 60
    power_limit_w: float = 700.0
    processes: list[FakeProcess] = field(default_factory=list)
    samples: list[FakeSample] = field(default_factory=list)
    unsupported: set[str] = field(default_factory=set)  # function names raising NOT_SUPPORTED
    failures: dict[str, int] = field(default_factory=dict)  # function name -> NVML error code
    lost: bool = False
    # None: not MIG capable (GetMigMode raises NOT_SUPPORTED); a list: MIG enabled with these instances.
    mig: list[FakeMigInstance] | None = None
    board_sm_count: int = 132
    board_attributes: bool = True  # False: GetAttributes on the full GPU raises NOT_SUPPORTED
    profile_sm_counts: dict[int, int] = field(default_factory=dict)  # GPU-instance profile -> SMs
    # The driver's per-process utilisation sampling: its period, how many samples its buffer keeps,
    # and which PID MPS clients' activity is sampled under ("clients" or "server").
    sample_period_s: float = 1.0
    sample_buffer: int = 256
    mps_samples: str = "clients"
    # Runs between pynvml's size query and its second call of nvmlDeviceGetProcessUtilization.
    on_size_query: Callable[[], None] | None = None


@dataclass(frozen=True)
class FakeHandle:
    gpu: int
    mig_slot: int | None = None


class FakeNvml(types.ModuleType):
    """The fake module. Pass it as ``NvmlGpuSource(nvml=...)``.

    ``init_error``: an NVML code that ``nvmlInit`` raises (e.g. ``NVML_ERROR_LIBRARY_NOT_FOUND``).
    ``now_us``: the fake's clock in microseconds, moved by ``advance``; new samples use it.
    """

    def __init__(
        self,
        gpus: list[FakeGpu],
        driver_version: str = "550.90.07",
        init_error: int | None = None,
        start_us: int = 1_700_000_000_000_000,
    ) -> None:
        super().__init__("pynvml")
        for key, value in vars(_real).items():
            if key.startswith(("NVML_", "NVMLError")):
                setattr(self, key, value)
        self.gpus = gpus
        self.driver_version = driver_version
        self.init_error = init_error
        self.now_us = start_us
        self.calls: Counter[str] = Counter()
        self.initialised = 0
        # The driver's sampling state per (GPU, sampled pid): busy microseconds so far in the current
        # sample period, and the time of the next sample.
        self._sampling: dict[tuple[int, int], list[float]] = {}

    # ------------------------------------------------------------------ controls

    def advance(self, seconds: float) -> None:
        """Let time pass: the clock moves, every counter that is not lost grows by power x time, and
        the driver samples each process's ``sm_util`` at its sampling moments in between."""
        start = self.now_us
        self.now_us += round(seconds * 1_000_000)
        for index, gpu in enumerate(self.gpus):
            if gpu.lost:
                continue
            if gpu.energy_j is not None:
                gpu.energy_j += gpu.power_w * seconds
            self._sample(index, gpu, start, self.now_us)

    def add_sample(self, gpu: int, pid: int, sm_util: int, at_us: int | None = None) -> None:
        """Put one sample (SM busy percent) at ``at_us`` (default: now) into the driver's buffer."""
        self._record(self.gpus[gpu], FakeSample(pid, self.now_us if at_us is None else at_us, sm_util))

    def lose(self, gpu: int) -> None:
        """The GPU falls off the bus: every call on it raises GPU_IS_LOST."""
        self.gpus[gpu].lost = True

    def recover(self, gpu: int, reset_energy: bool = False) -> None:
        """The GPU is back (after a reset its energy counter may start again at zero)."""
        self.gpus[gpu].lost = False
        if reset_energy and self.gpus[gpu].energy_j is not None:
            self.gpus[gpu].energy_j = 0.0

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _record(gpu: FakeGpu, sample: FakeSample) -> None:
        gpu.samples.append(sample)
        if len(gpu.samples) > gpu.sample_buffer:
            del gpu.samples[: len(gpu.samples) - gpu.sample_buffer]

    @staticmethod
    def _activity(gpu: FakeGpu) -> dict[int, tuple[float, FakeProcess]]:
        """What the driver measures now: sampled pid -> (SM busy percent, the process it belongs to)."""
        active: dict[int, tuple[float, FakeProcess]] = {}
        server = next((p for p in gpu.processes if p.mps_server), None)
        for proc in gpu.processes:
            if proc.mps and server is not None and gpu.mps_samples == "server":
                # All clients' work shows under the server: busy while any client's kernels run (exact
                # for the 0 or 100 per step that time-stepped simulations use).
                busy = max(active.get(server.pid, (0.0, server))[0], proc.sm_util)
                active[server.pid] = (busy, server)
            elif proc.pid not in active or proc.sm_util > active[proc.pid][0]:
                active[proc.pid] = (proc.sm_util, proc)
        return active

    def _sample(self, index: int, gpu: FakeGpu, start_us: int, end_us: int) -> None:
        period = round(gpu.sample_period_s * 1_000_000)
        for pid, (busy, proc) in self._activity(gpu).items():
            state = self._sampling.get((index, pid))
            if state is None:
                if proc.sample_phase_s is not None:
                    phase = round(proc.sample_phase_s * 1_000_000) % period
                else:
                    phase = zlib.crc32(str(pid).encode()) % period  # staggered, as real drivers do
                first = start_us - (start_us - phase) % period + period
                state = self._sampling[(index, pid)] = [0.0, float(first)]
            t = float(start_us)
            while state[1] <= end_us:
                state[0] += busy / 100.0 * (state[1] - t)
                percent = round(100.0 * state[0] / period)
                if percent > 0:  # "non-zero utilization during the last sample period" only
                    self._record(gpu, FakeSample(pid, int(state[1]), min(100, percent)))
                t, state[0] = state[1], 0.0
                state[1] += period
            state[0] += busy / 100.0 * (end_us - t)

    @staticmethod
    def _raise(code: int) -> None:
        raise _real.NVMLError(code)

    def _require_init(self, fn: str) -> None:
        self.calls[fn] += 1
        if self.initialised <= 0:
            self._raise(_real.NVML_ERROR_UNINITIALIZED)

    def _device(self, fn: str, handle: FakeHandle) -> FakeGpu:
        self._require_init(fn)
        gpu = self.gpus[handle.gpu]
        if gpu.lost:
            self._raise(_real.NVML_ERROR_GPU_IS_LOST)
        if fn in gpu.failures:
            self._raise(gpu.failures[fn])
        if fn in gpu.unsupported:
            self._raise(_real.NVML_ERROR_NOT_SUPPORTED)
        return gpu

    # ------------------------------------------------------------------ library and system

    def nvmlInit(self) -> None:
        self.calls["nvmlInit"] += 1
        if self.init_error is not None:
            self._raise(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self._require_init("nvmlShutdown")
        self.initialised -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._require_init("nvmlSystemGetDriverVersion")
        return self.driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._require_init("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:
        self._require_init("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            self._raise(_real.NVML_ERROR_INVALID_ARGUMENT)
        if self.gpus[index].lost:
            self._raise(_real.NVML_ERROR_GPU_IS_LOST)
        return FakeHandle(index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> FakeHandle:
        self._require_init("nvmlDeviceGetHandleByUUID")
        for index, gpu in enumerate(self.gpus):
            if gpu.uuid == uuid:
                if gpu.lost:
                    self._raise(_real.NVML_ERROR_GPU_IS_LOST)
                return FakeHandle(index)
        self._raise(_real.NVML_ERROR_NOT_FOUND)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ static facts

    def nvmlDeviceGetUUID(self, handle: FakeHandle) -> str:
        return self._device("nvmlDeviceGetUUID", handle).uuid

    def nvmlDeviceGetName(self, handle: FakeHandle) -> str:
        return self._device("nvmlDeviceGetName", handle).name

    def nvmlDeviceGetPciInfo(self, handle: FakeHandle) -> Any:
        gpu = self._device("nvmlDeviceGetPciInfo", handle)
        info = _real.nvmlPciInfo_t()
        info.busId = gpu.pci_bus_id.encode()
        info.busIdLegacy = gpu.pci_bus_id.encode()
        return info

    # ------------------------------------------------------------------ measurements

    def nvmlDeviceGetPowerUsage(self, handle: FakeHandle) -> int:
        return round(self._device("nvmlDeviceGetPowerUsage", handle).power_w * 1000)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeHandle) -> int:
        gpu = self._device("nvmlDeviceGetTotalEnergyConsumption", handle)
        if gpu.energy_j is None:
            self._raise(_real.NVML_ERROR_NOT_SUPPORTED)
        return round((gpu.energy_j or 0.0) * 1000)

    def nvmlDeviceGetUtilizationRates(self, handle: FakeHandle) -> Any:
        gpu = self._device("nvmlDeviceGetUtilizationRates", handle)
        if gpu.mig is not None:
            self._raise(_real.NVML_ERROR_NOT_SUPPORTED)  # "not currently supported" on MIG (nvml.h)
        return _real.c_nvmlUtilization_t(gpu=gpu.util_percent, memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: FakeHandle, version: Any = None) -> Any:
        gpu = self._device("nvmlDeviceGetMemoryInfo", handle)
        return _real.c_nvmlMemory_t(
            total=gpu.mem_total_bytes, free=gpu.mem_total_bytes - gpu.mem_used_bytes, used=gpu.mem_used_bytes
        )

    def nvmlDeviceGetTemperature(self, handle: FakeHandle, sensor: int) -> int:
        gpu = self._device("nvmlDeviceGetTemperature", handle)
        if sensor != _real.NVML_TEMPERATURE_GPU:
            self._raise(_real.NVML_ERROR_INVALID_ARGUMENT)
        return gpu.temp_c

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: FakeHandle) -> int:
        return round(self._device("nvmlDeviceGetEnforcedPowerLimit", handle).power_limit_w * 1000)

    # ------------------------------------------------------------------ processes

    def _process_list(self, fn: str, handle: FakeHandle, kind: str) -> list[Any]:
        gpu = self._device(fn, handle)
        out = []
        for proc in gpu.processes:
            if not {"compute": proc.compute, "graphics": proc.graphics, "mps": proc.mps}[kind]:
                continue
            raw = _real.c_nvmlProcessInfo_v3_t(
                pid=proc.pid,
                usedGpuMemory=_real.NVML_VALUE_NOT_AVAILABLE_ulonglong.value
                if proc.used_memory_bytes is None
                else proc.used_memory_bytes,
                gpuInstanceId=0xFFFFFFFF if proc.gpu_instance_id is None else proc.gpu_instance_id,
                computeInstanceId=0xFFFFFFFF
                if proc.compute_instance_id is None
                else proc.compute_instance_id,
            )
            obj = _real.nvmlStructToFriendlyObject(raw)
            if obj.usedGpuMemory == _real.NVML_VALUE_NOT_AVAILABLE_ulonglong.value:
                obj.usedGpuMemory = None  # as pynvml does
            out.append(obj)
        return out

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeHandle) -> list[Any]:
        return self._process_list("nvmlDeviceGetComputeRunningProcesses", handle, "compute")

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: FakeHandle) -> list[Any]:
        return self._process_list("nvmlDeviceGetGraphicsRunningProcesses", handle, "graphics")

    def nvmlDeviceGetMPSComputeRunningProcesses(self, handle: FakeHandle) -> list[Any]:
        return self._process_list("nvmlDeviceGetMPSComputeRunningProcesses", handle, "mps")

    @staticmethod
    def _newer(gpu: FakeGpu, timestamp: int) -> dict[int, list[FakeSample]]:
        newer: dict[int, list[FakeSample]] = {}
        for sample in gpu.samples:
            if sample.timestamp_us > timestamp:
                newer.setdefault(sample.pid, []).append(sample)
        return newer

    def nvmlDeviceGetProcessUtilization(self, handle: FakeHandle, timeStamp: int) -> list[Any]:
        gpu = self._device("nvmlDeviceGetProcessUtilization", handle)
        if gpu.mig is not None:
            self._raise(_real.NVML_ERROR_NOT_SUPPORTED)
        # pynvml's wrapper: first the size query (no buffer) ...
        newer = self._newer(gpu, timeStamp)
        if not newer:
            self._raise(_real.NVML_ERROR_NOT_FOUND)
        size = len(newer)
        if gpu.on_size_query is not None:
            gpu.on_size_query()
        # ... then the call with a buffer of that many entries; the driver may have sampled meanwhile.
        newer = self._newer(gpu, timeStamp)
        if not newer:
            self._raise(_real.NVML_ERROR_NOT_FOUND)
        if len(newer) > size:
            self._raise(_real.NVML_ERROR_INSUFFICIENT_SIZE)
        return [
            _real.c_nvmlProcessUtilizationSample_t(
                pid=pid,
                timeStamp=max(x.timestamp_us for x in samples),
                smUtil=round(sum(x.sm_util for x in samples) / len(samples)),
                memUtil=round(sum(x.mem_util for x in samples) / len(samples)),
                encUtil=0,
                decUtil=0,
            )
            for pid, samples in newer.items()
        ]

    # ------------------------------------------------------------------ MIG

    def nvmlDeviceGetMigMode(self, handle: FakeHandle) -> list[int]:
        gpu = self._device("nvmlDeviceGetMigMode", handle)
        if gpu.mig is None:
            self._raise(_real.NVML_ERROR_NOT_SUPPORTED)
        return [_real.NVML_DEVICE_MIG_ENABLE, _real.NVML_DEVICE_MIG_ENABLE]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: FakeHandle) -> int:
        gpu = self._device("nvmlDeviceGetMaxMigDeviceCount", handle)
        if gpu.mig is None:
            self._raise(_real.NVML_ERROR_NOT_SUPPORTED)
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: FakeHandle, index: int) -> FakeHandle:
        gpu = self._device("nvmlDeviceGetMigDeviceHandleByIndex", handle)
        if gpu.mig is None:
            self._raise(_real.NVML_ERROR_NOT_SUPPORTED)
        if not 0 <= index < len(gpu.mig or []):
            self._raise(_real.NVML_ERROR_NOT_FOUND)
        return FakeHandle(handle.gpu, index)

    def nvmlDeviceGetGpuInstanceId(self, handle: FakeHandle) -> int:
        gpu = self._device("nvmlDeviceGetGpuInstanceId", handle)
        if handle.mig_slot is None or gpu.mig is None:
            self._raise(_real.NVML_ERROR_INVALID_ARGUMENT)
            raise AssertionError("unreachable")
        return gpu.mig[handle.mig_slot].gpu_instance_id

    def nvmlDeviceGetAttributes(self, handle: FakeHandle) -> Any:
        gpu = self._device("nvmlDeviceGetAttributes", handle)
        attrs = _real.c_nvmlDeviceAttributes()
        if handle.mig_slot is None:
            if not gpu.board_attributes:
                self._raise(_real.NVML_ERROR_NOT_SUPPORTED)
            attrs.multiprocessorCount = gpu.board_sm_count
        else:
            assert gpu.mig is not None
            attrs.multiprocessorCount = gpu.mig[handle.mig_slot].multiprocessor_count
        return attrs

    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle: FakeHandle, profile: int, version: int = 2) -> Any:
        gpu = self._device("nvmlDeviceGetGpuInstanceProfileInfo", handle)
        if profile not in gpu.profile_sm_counts:
            self._raise(_real.NVML_ERROR_NOT_SUPPORTED)
        info = _real.c_nvmlGpuInstanceProfileInfo_v2_t()
        info.multiprocessorCount = gpu.profile_sm_counts[profile]
        return info
