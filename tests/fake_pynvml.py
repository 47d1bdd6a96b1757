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
  (docs.nvidia.com/deploy/nvml-api, "Device Queries"; the same text is in nvml.h), with the details
  the docs leave open taken from a real NVIDIA H200 (probed for issue 12 with three processes
  time-slicing the GPU; docs/attribution.md gives the figures):
  - the driver samples on a clock of its own, every ``FakeGpu.sample_period_s`` (200 ms on the
    H200; NVML documents 1/6 s to 1 s for device utilisation; it can be longer than the exporter's
    interval), at the same moments for every process, timestamped in microseconds of CPU time;
  - at each sampling moment one time-sliced process gets a sample, carrying the GPU's busy share of
    the period (99 on the H200 while the GPU was always busy); which one is drawn in proportion to how
    long each ran in the period (``FakeGpu.sample_draw``: ``even``, the default, gives each process
    its share of the moments to within one over any run, as a time slicer whose slices do not line
    up with the sampling clock would; ``random`` draws each moment independently, the noisier
    case). The others get none: "one utilization sample structure is returned per process running,
    that had some non-zero utilization during the last sample period", and a process that was idle
    is absent. MPS clients run side by side; the fake gives each its own sample (not probed: no MPS
    on the H200);
  - a call returns one structure per process, only from samples with a timestamp greater than
    ``lastSeenTimeStamp`` ("0 to read utilization based on all the samples maintained by the
    driver's internal sample buffer", bounded here by ``FakeGpu.sample_buffer`` moments), and raises
    NVML_ERROR_NOT_FOUND "if no valid sample entries are found since the lastSeenTimeStamp". When
    several moments are newer than the timestamp, the structure carries the mean over all of them,
    moments without a sample of that process counting as 0 (as on the H200: values in steps of 20
    for five moments, of 4 for twenty-five), and the timestamp of its newest sample;
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

import bisect
import types
import uuid as uuid_module
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


@dataclass
class FakeMigInstance:
    """A MIG device: one compute instance of a GPU instance (slot order = MIG device index).

    ``uuid`` is what ``nvmlDeviceGetUUID`` answers on its handle. The NVML change log (docs.nvidia.com/
    deploy/nvml-api, "Change Log") says nvmlDeviceGetUUID returns MIG UUIDs "in the canonical format,
    'MIG-UUID'" from R470 on; earlier drivers answered ``MIG-GPU-<gpu uuid>/<gi>/<ci>`` (the form
    CUDA_VISIBLE_DEVICES still takes). Left empty, the fake makes a canonical one from the parent
    GPU's UUID and the instance ids, stable across reads as the driver's is while the instance lives.
    """

    gpu_instance_id: int
    multiprocessor_count: int
    uuid: str = ""
    compute_instance_id: int = 0


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
    # The driver's per-process utilisation sampling: its period (moments at whole multiples of it),
    # how many sampling moments its buffer keeps, which PID MPS clients' activity is sampled under
    # ("clients" or "server"), and the moments it sampled (with add_sample's too).
    sample_period_s: float = 0.2
    sample_buffer: int = 256
    mps_samples: str = "clients"
    sample_draw: str = "even"
    sample_times: list[int] = field(default_factory=list)
    # Runs between pynvml's size query and its second call of nvmlDeviceGetProcessUtilization.
    on_size_query: Callable[[], None] | None = None
    # What nvmlDeviceGetPowerUsage returns instead of power_w (raw mW, an unsigned 32-bit int as in
    # nvml.h), to model a faulty sensor; see fault_power_sensor().
    power_raw_mw: int | None = None


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
        # The driver's sampling state per GPU: busy microseconds of each sampled pid so far in the
        # current sample period, time-sliced ("sliced") or side by side ("mps").
        self._busy: dict[int, dict[tuple[int, str], float]] = {}
        # "even" draws: each sampled process's credit (its busy share of the periods so far, less one
        # for each moment it was given).
        self._credit: dict[int, dict[int, float]] = {}

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
        """Put one sample (SM busy percent) at ``at_us`` (default: now) into the driver's buffer; ``at_us``
        becomes one of the driver's sampling moments."""
        at = self.now_us if at_us is None else at_us
        self._moment(self.gpus[gpu], at)
        self._record(self.gpus[gpu], FakeSample(pid, at, sm_util))

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

    @staticmethod
    def _moment(gpu: FakeGpu, at_us: int) -> None:
        if at_us not in gpu.sample_times:
            bisect.insort(gpu.sample_times, at_us)
        if len(gpu.sample_times) > gpu.sample_buffer:
            oldest = gpu.sample_times[-gpu.sample_buffer]
            del gpu.sample_times[: len(gpu.sample_times) - gpu.sample_buffer]
            gpu.samples[:] = [x for x in gpu.samples if x.timestamp_us >= oldest]

    @staticmethod
    def _activity(gpu: FakeGpu) -> dict[tuple[int, str], float]:
        """What the driver measures now: (sampled pid, "sliced" or "mps") -> SM busy fraction."""
        active: dict[tuple[int, str], float] = {}
        server = next((p for p in gpu.processes if p.mps_server), None)
        for proc in gpu.processes:
            if proc.sm_util <= 0:
                continue
            if proc.mps and server is not None and gpu.mps_samples == "server":
                # All clients' work shows under the server: busy while any client's kernels run (exact
                # for the 0 or 100 per step that time-stepped simulations use).
                key = (server.pid, "mps")
                active[key] = max(active.get(key, 0.0), proc.sm_util / 100.0)
            else:
                key = (proc.pid, "mps" if proc.mps else "sliced")
                active[key] = max(active.get(key, 0.0), proc.sm_util / 100.0)
        return active

    def _sample(self, index: int, gpu: FakeGpu, start_us: int, end_us: int) -> None:
        period = round(gpu.sample_period_s * 1_000_000)
        busy = self._busy.setdefault(index, {})
        active = self._activity(gpu)
        t = start_us
        while t < end_us:
            moment = (t // period + 1) * period
            stop = min(moment, end_us)
            for key, fraction in active.items():
                busy[key] = busy.get(key, 0.0) + fraction * (stop - t)
            if moment <= end_us:
                self._take_samples(index, gpu, busy, moment, period)
            t = stop

    def _take_samples(
        self, index: int, gpu: FakeGpu, busy: dict[tuple[int, str], float], moment: int, period: int
    ) -> None:
        sliced = {pid: b for (pid, kind), b in busy.items() if kind == "sliced" and b > 0}
        if sliced:
            # One time-sliced process per moment, drawn in proportion to how long each ran. "even": the
            # moment goes to the process owed most (stride scheduling: over a run each one gets its
            # share of the moments to within one); "random": a hash of the moment draws it. Either way
            # the same on every run.
            total = sum(sliced.values())
            if gpu.sample_draw == "random":
                draw = zlib.crc32(f"{index}:{moment}".encode()) / 2**32 * total
                picked = 0
                for picked, b in sliced.items():  # noqa: B007 - the loop picks one
                    draw -= b
                    if draw < 0:
                        break
            else:
                credit = self._credit.setdefault(index, {})
                for pid, b in sliced.items():
                    credit[pid] = credit.get(pid, 0.0) + b / total
                picked = max(sliced, key=lambda pid: credit[pid])
                credit[picked] -= 1.0
            percent = round(100.0 * min(1.0, sum(sliced.values()) / period))
            if percent > 0:
                self._record(gpu, FakeSample(picked, moment, percent))
        for (pid, kind), b in busy.items():
            percent = round(100.0 * min(1.0, b / period))
            if kind == "mps" and percent > 0:
                self._record(gpu, FakeSample(pid, moment, percent))
        self._moment(gpu, moment)
        busy.clear()

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
        gpu = self._device("nvmlDeviceGetUUID", handle)
        if handle.mig_slot is None:
            return gpu.uuid
        assert gpu.mig is not None
        instance = gpu.mig[handle.mig_slot]
        if instance.uuid:
            return instance.uuid
        seed = f"{gpu.uuid}/{instance.gpu_instance_id}/{instance.compute_instance_id}"
        return f"MIG-{uuid_module.uuid5(uuid_module.NAMESPACE_OID, seed)}"

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
        gpu = self._device("nvmlDeviceGetPowerUsage", handle)
        if gpu.power_raw_mw is not None:
            return gpu.power_raw_mw & 0xFFFFFFFF  # `unsigned int *power` in nvml.h
        return round(gpu.power_w * 1000)

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
        newer = self._newer(gpu, timestamp=timeStamp)
        if not newer:
            self._raise(_real.NVML_ERROR_NOT_FOUND)
        size = len(newer)
        if gpu.on_size_query is not None:
            gpu.on_size_query()
        # ... then the call with a buffer of that many entries; the driver may have sampled meanwhile.
        newer = self._newer(gpu, timestamp=timeStamp)
        if not newer:
            self._raise(_real.NVML_ERROR_NOT_FOUND)
        if len(newer) > size:
            self._raise(_real.NVML_ERROR_INSUFFICIENT_SIZE)
        # The mean over every sampling moment newer than the timestamp, a moment without a sample of
        # the process counting as 0.
        moments = len(gpu.sample_times) - bisect.bisect_right(gpu.sample_times, timeStamp)
        return [
            _real.c_nvmlProcessUtilizationSample_t(
                pid=pid,
                timeStamp=max(x.timestamp_us for x in samples),
                smUtil=round(sum(x.sm_util for x in samples) / max(moments, len(samples))),
                memUtil=round(sum(x.mem_util for x in samples) / max(moments, len(samples))),
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


# ---------------------------------------------------------------------------- device-level scenarios


def vgpu_guest(uuid: str, **kwargs: Any) -> FakeGpu:
    """A vGPU as a guest VM sees it: utilisation, memory and processes, but no power and no energy.

    NVIDIA's Virtual GPU Software Management SDK user guide ("Managing vGPUs from a guest VM"): a vGPU
    is presented like a pass-through GPU, but properties of the physical GPU do not apply to it and
    are reported as not applicable; through NVML the board's power draw, energy counter and power
    limit answer NVML_ERROR_NOT_SUPPORTED. (Some bare-metal boards without a power sensor look the same.)
    """
    gpu = FakeGpu(uuid=uuid, name="GRID A100-40C", energy_j=None, **kwargs)
    gpu.unsupported |= {"nvmlDeviceGetPowerUsage", "nvmlDeviceGetEnforcedPowerLimit"}
    return gpu


def fault_power_sensor(nvml: FakeNvml, gpu: int, raw_mw: int = 0xFFFFFFFF) -> None:
    """The GPU's power reading becomes garbage: a bad sensor or driver answers the all-ones "invalid"
    value of the unsigned field (4,294,967 W), which NVML hands on as a successful reading."""
    nvml.gpus[gpu].power_raw_mw = raw_mw


def fail_reads(nvml: FakeNvml, gpu: int, code: int = _real.NVML_ERROR_TIMEOUT) -> None:
    """Every read of the GPU's power fails with CODE (default TIMEOUT: a busy or wedged driver) until
    ``heal_reads``; its hardware energy counter keeps counting meanwhile, as a real one does."""
    nvml.gpus[gpu].failures["nvmlDeviceGetPowerUsage"] = code


def heal_reads(nvml: FakeNvml, gpu: int) -> None:
    nvml.gpus[gpu].failures.pop("nvmlDeviceGetPowerUsage", None)
