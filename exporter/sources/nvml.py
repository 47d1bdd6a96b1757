"""GPU power, energy, utilisation and running processes from NVIDIA's NVML (the only pynvml importer)."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import types
from dataclasses import dataclass, field
from typing import Any

import psutil

from exporter.attribution import UtilisationWindow
from exporter.model import GpuProcessSample, GpuReading, MigInstance
from exporter.sources import SourceUnavailable

log = logging.getLogger(__name__)

# NVML return codes (nvml.h; stable across driver versions). Spelled out here so that the module
# needs no pynvml at import time; the values are checked against pynvml in the tests.
_SUCCESS = 0
_UNINITIALIZED = 1
_INVALID_ARGUMENT = 2
_NOT_SUPPORTED = 3
_NO_PERMISSION = 4
_NOT_FOUND = 6
_INSUFFICIENT_SIZE = 7
_DRIVER_NOT_LOADED = 9
_TIMEOUT = 10
_LIBRARY_NOT_FOUND = 12
_FUNCTION_NOT_FOUND = 13
_GPU_IS_LOST = 15
_RESET_REQUIRED = 16
_LIB_RM_VERSION_MISMATCH = 18
_UNKNOWN = 999

_TEMPERATURE_GPU = 0
_MIG_ENABLE = 1
# gpuInstanceId of a process on a GPU without MIG (0xFFFFFFFF, "no instance").
_NO_INSTANCE = 0xFFFFFFFF
_GPU_INSTANCE_PROFILE_COUNT = 0x12
# How long a MIG listing stands when no unknown instance shows in a process (instances a pod holds
# idle show in none): a minute, like the pod-resources answer it is matched with.
_MIG_RELIST_S = 60.0
# /proc/<pid>/comm of nvidia-cuda-mps-server (comm is cut at 15 characters).
_MPS_SERVER_COMM = "nvidia-cuda-mps"

# A field failing with one of these is left out (None) and the GPU stays up: the device or driver
# cannot give it, which is not a fault of the GPU.
_FIELD_ABSENT = frozenset({_NOT_SUPPORTED, _FUNCTION_NOT_FOUND, _NO_PERMISSION})
# Of those, these will not change while the driver stays loaded, so they are not asked again.
_NEVER_THERE = frozenset({_NOT_SUPPORTED, _FUNCTION_NOT_FOUND})

_ERROR_KINDS = {
    _GPU_IS_LOST: "lost",
    _NO_PERMISSION: "permission",
    _NOT_SUPPORTED: "not_supported",
    _TIMEOUT: "timeout",
    _RESET_REQUIRED: "reset_required",
    _UNINITIALIZED: "uninitialized",
    _DRIVER_NOT_LOADED: "driver",
    _LIBRARY_NOT_FOUND: "library",
    _LIB_RM_VERSION_MISMATCH: "driver",
    _NOT_FOUND: "not_found",
}


def error_kind(code: int) -> str:
    """Short machine-readable reason for an NVML return code, as used in errors and readings."""
    return _ERROR_KINDS.get(code, "unknown")


class _GpuFailed(Exception):
    """A call on this GPU failed in a way that makes the whole reading unusable (lost, unknown...)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class _Gpu:
    """What the source knows and remembers about one GPU between reads."""

    index: int
    handle: Any = None
    uuid: str = ""
    name: str = ""
    pci_bus_id: str = ""
    # Set after any failure: the next read fetches a new handle and the static facts again.
    stale: bool = True
    has_energy_counter: bool = True
    # Hardware counters restart from zero when the driver reloads or the GPU is reset (typically
    # after it was lost); the offset keeps the energy this source reports from ever going down.
    energy_offset_j: float = 0.0
    last_energy_j: float | None = None
    process_util_supported: bool = True
    mps_listing_supported: bool = True
    # The newest NVML sample timestamp seen: the next query asks only for samples newer than it.
    last_util_timestamp_us: int = 0
    util_window: UtilisationWindow = field(default_factory=UtilisationWindow)
    mig_enabled: bool = False
    # GPU instance id -> that instance's share of the board's SMs (None when unknown).
    mig_shares: dict[int, float | None] = field(default_factory=dict)
    # The MIG devices as last listed (None: not listed yet, or the listing failed), and when.
    mig_instances: tuple[MigInstance, ...] | None = None
    mig_listed_at: float | None = None


@dataclass(frozen=True, slots=True)
class _ProcInfo:
    start_time: float | None
    comm: str
    user: str


def _text(value: Any) -> str:
    """pynvml returns str from newer releases and bytes from older ones (and in raw structs)."""
    if isinstance(value, bytes):
        return value.split(b"\0", 1)[0].decode("utf-8", "replace")
    return str(value)


class NvmlGpuSource:
    """Reads every NVIDIA GPU through NVML once per ``read``.

    Units are converted to the exporter's base units (W, J, ratios 0-1, bytes, °C). A field the GPU
    does not support, or that the exporter may not read, is None; a GPU that fails (fallen off the
    bus, unknown error) comes back with ``up=False`` and an error kind, and is tried again on the
    next read while the other GPUs are read normally.

    ``procfs_root`` other than ``/proc`` (a host's /proc mounted into a container) makes the
    process' name, user and start time come from that tree instead of psutil.
    ``nvml_sample_period_s``: NVML's per-process sampling period, how long one sample stands for a
    process (None: learned from NVML's timestamps, see UtilisationWindow).
    """

    name = "nvml"

    def __init__(
        self,
        nvml: types.ModuleType | None = None,
        procfs_root: str = "/proc",
        nvml_sample_period_s: float | None = None,
    ) -> None:
        if nvml is None:
            try:
                import pynvml

                nvml = pynvml
            except ImportError as exc:
                raise SourceUnavailable(
                    "missing",
                    f"NVML is not available: the nvidia-ml-py package (module pynvml) is not "
                    f"installed ({exc})",
                ) from None
        self._nvml: Any = nvml
        self._procfs_root = procfs_root
        self._nvml_sample_period_s = nvml_sample_period_s
        self._errors: dict[str, int] = {}
        self._warned: set[tuple[int, str]] = set()
        self._closed = False
        self._procs: dict[int, _ProcInfo] = {}
        try:
            self._nvml.nvmlInit()
        except self._nvml.NVMLError as exc:
            raise SourceUnavailable(
                _init_kind(exc.value), f"NVML did not start: {_init_message(exc)}"
            ) from None
        try:
            count = int(self._nvml.nvmlDeviceGetCount())
            self.driver_version = self._optional_system(self._nvml.nvmlSystemGetDriverVersion)
        except self._nvml.NVMLError as exc:
            self._shutdown()
            raise SourceUnavailable(_init_kind(exc.value), f"NVML cannot list GPUs: {exc}") from None
        if count == 0:
            self._shutdown()
            raise SourceUnavailable("no_device", "NVML started but found no GPU")
        self._gpus = [
            _Gpu(index=i, util_window=UtilisationWindow(nvml_sample_period_s)) for i in range(count)
        ]
        for gpu in self._gpus:
            try:
                self._refresh(gpu)
            except _GpuFailed as failed:
                # The GPU shows as down in the first read, and is tried again there.
                log.warning("GPU %d cannot be read at start: %s", gpu.index, failed)
        log.info("NVML started: %d GPU(s), driver %s", count, self.driver_version or "unknown")

    # ------------------------------------------------------------------ public

    def read(self, now: float) -> list[GpuReading]:
        readings = [self._read_gpu(gpu, now) for gpu in self._gpus]
        seen = {p.pid for r in readings for p in (r.processes or ())}
        for pid in list(self._procs):
            if pid not in seen:
                del self._procs[pid]
        return readings

    def errors(self) -> dict[str, int]:
        """Failed reads since start by kind ("lost", "permission", "unknown", ...): one per GPU per read
        that came back down, and one per field or process list the exporter was not allowed to read."""
        return dict(self._errors)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._shutdown()

    # ------------------------------------------------------------------ NVML calls

    def _shutdown(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError as exc:
            log.debug("nvmlShutdown failed: %s", exc)

    def _optional_system(self, fn: Any) -> str:
        try:
            return _text(fn())
        except self._nvml.NVMLError:
            return ""

    def _count(self, kind: str) -> None:
        self._errors[kind] = self._errors.get(kind, 0) + 1

    def _denied(self, gpu: _Gpu, fn_name: str) -> None:
        self._count("permission")
        if (gpu.index, fn_name) not in self._warned:
            # Once: a permission problem usually lasts, and a warning every second would drown the log.
            self._warned.add((gpu.index, fn_name))
            log.warning("GPU %d: %s: no permission; that value is left out", gpu.index, fn_name)

    def _call(self, gpu: _Gpu, fn_name: str, *args: Any, absent: frozenset[int] = _FIELD_ABSENT) -> Any:
        """Call an NVML function on the GPU's handle.

        Returns None when the call fails with a code in ``absent`` (the value is simply not there);
        raises _GpuFailed for anything else, which takes the whole GPU down for this read.
        """
        try:
            return getattr(self._nvml, fn_name)(gpu.handle, *args)
        except self._nvml.NVMLError as exc:
            code = exc.value
            if code in absent:
                if code == _NO_PERMISSION:
                    self._denied(gpu, fn_name)
                return None
            raise _GpuFailed(error_kind(code), f"{fn_name}: {exc}") from None

    def _refresh(self, gpu: _Gpu) -> None:
        """Get a (new) handle and the GPU's static facts, after start or after a failure."""
        gpu.stale = True
        try:
            if gpu.uuid:
                # By UUID so a GPU that comes back is the same GPU even if the indices moved.
                gpu.handle = self._nvml.nvmlDeviceGetHandleByUUID(gpu.uuid)
            else:
                gpu.handle = self._nvml.nvmlDeviceGetHandleByIndex(gpu.index)
        except self._nvml.NVMLError as exc:
            raise _GpuFailed(error_kind(exc.value), f"no handle for GPU {gpu.index}: {exc}") from None
        uuid = self._call(gpu, "nvmlDeviceGetUUID")
        if uuid is not None and not gpu.uuid:
            gpu.uuid = _text(uuid)
        name = self._call(gpu, "nvmlDeviceGetName")
        if name is not None:
            gpu.name = _text(name)
        pci = self._call(gpu, "nvmlDeviceGetPciInfo")
        if pci is not None:
            gpu.pci_bus_id = _text(pci.busId)
        mode = self._call(gpu, "nvmlDeviceGetMigMode", absent=_FIELD_ABSENT | {_INVALID_ARGUMENT})
        gpu.mig_enabled = mode is not None and int(mode[0]) == _MIG_ENABLE
        gpu.mig_shares = {}
        gpu.mig_instances = None
        gpu.mig_listed_at = None
        gpu.stale = False

    # ------------------------------------------------------------------ one GPU

    def _read_gpu(self, gpu: _Gpu, now: float) -> GpuReading:
        try:
            if gpu.stale:
                self._refresh(gpu)
            return self._measure(gpu, now)
        except _GpuFailed as failed:
            gpu.stale = True
            self._count(failed.kind)
            log.debug("GPU %d (%s) down: %s", gpu.index, gpu.uuid, failed)
            return GpuReading(
                index=gpu.index,
                uuid=gpu.uuid,
                name=gpu.name,
                driver_version=self.driver_version,
                pci_bus_id=gpu.pci_bus_id,
                up=False,
                error=failed.kind,
            )

    def _measure(self, gpu: _Gpu, now: float) -> GpuReading:
        power_mw = self._call(gpu, "nvmlDeviceGetPowerUsage")
        energy_j = self._energy(gpu)
        util = self._call(gpu, "nvmlDeviceGetUtilizationRates")
        memory = self._call(gpu, "nvmlDeviceGetMemoryInfo")
        temp = self._call(gpu, "nvmlDeviceGetTemperature", _TEMPERATURE_GPU)
        limit_mw = self._call(gpu, "nvmlDeviceGetEnforcedPowerLimit")
        listed = gpu.mig_listed_at
        if gpu.mig_enabled and (listed is None or not 0 <= now - listed < _MIG_RELIST_S):
            # Listed even when no process shows: an instance a pod holds idle has none (see sampler).
            self._list_mig(gpu, now)
        processes = self._processes(gpu, now)
        return GpuReading(
            index=gpu.index,
            uuid=gpu.uuid,
            name=gpu.name,
            driver_version=self.driver_version,
            pci_bus_id=gpu.pci_bus_id,
            up=True,
            power_w=None if power_mw is None else power_mw / 1000.0,
            energy_j=energy_j,
            util=None if util is None else min(1.0, max(0.0, util.gpu / 100.0)),
            mem_used_bytes=None if memory is None else int(memory.used),
            mem_total_bytes=None if memory is None else int(memory.total),
            temp_c=None if temp is None else float(temp),
            power_limit_w=None if limit_mw is None else limit_mw / 1000.0,
            processes=processes,
            mig_instances=gpu.mig_instances if gpu.mig_enabled else None,
        )

    def _energy(self, gpu: _Gpu) -> float | None:
        if not gpu.has_energy_counter:
            return None
        try:
            raw_mj = self._nvml.nvmlDeviceGetTotalEnergyConsumption(gpu.handle)
        except self._nvml.NVMLError as exc:
            if exc.value in _NEVER_THERE:
                # Pre-Volta GPUs: the sampler integrates power instead; asking every second is waste.
                gpu.has_energy_counter = False
                log.info("GPU %d has no energy counter; its energy is integrated from power", gpu.index)
                return None
            if exc.value == _NO_PERMISSION:
                self._denied(gpu, "nvmlDeviceGetTotalEnergyConsumption")
                return None
            raise _GpuFailed(error_kind(exc.value), f"nvmlDeviceGetTotalEnergyConsumption: {exc}") from None
        raw_j = float(raw_mj) / 1000.0
        if gpu.last_energy_j is not None and raw_j + gpu.energy_offset_j < gpu.last_energy_j:
            # Counter restarted (GPU reset, driver reload): carry on from where we were.
            gpu.energy_offset_j = gpu.last_energy_j
        total = raw_j + gpu.energy_offset_j
        gpu.last_energy_j = total
        return total

    # ------------------------------------------------------------------ processes

    def _processes(self, gpu: _Gpu, now: float) -> tuple[GpuProcessSample, ...] | None:
        listed: dict[int, Any] = {}
        memory: dict[int, int | None] = {}
        mps_clients: set[int] = set()
        could_list = False
        for fn_name in (
            "nvmlDeviceGetComputeRunningProcesses",
            "nvmlDeviceGetGraphicsRunningProcesses",
            "nvmlDeviceGetMPSComputeRunningProcesses",
        ):
            mps = fn_name == "nvmlDeviceGetMPSComputeRunningProcesses"
            infos = self._mps_clients(gpu) if mps else self._call(gpu, fn_name)
            if infos is None:
                continue
            # MPS clients alone are not the GPU's process list: other processes may hold it too.
            could_list = could_list or not mps
            for info in infos:
                pid = int(info.pid)
                listed.setdefault(pid, info)
                if mps:
                    mps_clients.add(pid)
                # A process in several lists (compute and graphics, MPS) shows with the same memory.
                used = getattr(info, "usedGpuMemory", None)
                known = memory.get(pid)
                memory[pid] = known if used is None else max(int(used), known or 0)
        if not could_list:
            return None
        pids = list(listed)
        utils = self._sm_utils(gpu, now, pids)
        if mps_clients:
            pids, utils = self._mps_split(pids, utils, mps_clients)
        samples = []
        for pid, sm_util in zip(pids, utils, strict=True):
            info = listed[pid]
            proc = self._proc_info(pid)
            gi_id: int | None = None
            share: float | None = None
            if gpu.mig_enabled:
                raw_gi = getattr(info, "gpuInstanceId", None)
                if raw_gi is not None and int(raw_gi) != _NO_INSTANCE:
                    gi_id = int(raw_gi)
                    share = self._mig_share(gpu, gi_id, now)
            samples.append(
                GpuProcessSample(
                    pid=pid,
                    comm=proc.comm,
                    user=proc.user,
                    sm_util=sm_util,
                    used_memory_bytes=memory.get(pid),
                    start_time=proc.start_time,
                    gpu_instance_id=gi_id,
                    mig_sm_share=share,
                )
            )
        return tuple(samples)

    def _mps_clients(self, gpu: _Gpu) -> list[Any] | None:
        """MPS clients (Volta and newer); None where the driver or pynvml cannot list them."""
        if not gpu.mps_listing_supported or not hasattr(
            self._nvml, "nvmlDeviceGetMPSComputeRunningProcesses"
        ):
            return None
        try:
            return list(self._nvml.nvmlDeviceGetMPSComputeRunningProcesses(gpu.handle))
        except self._nvml.NVMLError as exc:
            if exc.value in _NEVER_THERE:
                gpu.mps_listing_supported = False  # pre-Volta or an old driver: not worth asking again
                return None
            if exc.value == _NO_PERMISSION:
                self._denied(gpu, "nvmlDeviceGetMPSComputeRunningProcesses")
                return None
            raise _GpuFailed(
                error_kind(exc.value), f"nvmlDeviceGetMPSComputeRunningProcesses: {exc}"
            ) from None

    def _mps_split(
        self, pids: list[int], utils: list[float | None], clients: set[int]
    ) -> tuple[list[int], list[float | None]]:
        """The MPS server does the clients' work: it is not charged itself while clients are listed.

        Which PID NVML samples MPS work under is not documented. Where the clients have samples of
        their own, those split the energy; where only the server has, its utilisation is shared
        equally among the clients (nothing tells them apart).
        """
        servers = [
            i
            for i, pid in enumerate(pids)
            if pid not in clients and self._proc_info(pid).comm == _MPS_SERVER_COMM
        ]
        if not servers:
            return pids, utils
        server_util = max((utils[i] or 0.0 for i in servers), default=0.0)
        keep = [i for i in range(len(pids)) if i not in servers]
        kept_pids = [pids[i] for i in keep]
        kept = [utils[i] for i in keep]
        members = [k for k, i in enumerate(keep) if pids[i] in clients]
        if server_util > 0 and members and not any(kept[k] for k in members):
            for k in members:
                kept[k] = server_util / len(members)
        return kept_pids, kept

    def _sm_utils(self, gpu: _Gpu, now: float, pids: list[int]) -> list[float | None]:
        """Each listed process's SM utilisation (0-1) for attribution, in ``pids`` order.

        Brings in what NVML sampled since the previous read (at most one sample per process, none for
        idle processes, NOT_FOUND when nothing is new) and lets UtilisationWindow turn the samples into
        each process's utilisation over one stretch of time, the same for all of them; None
        everywhere means no process ever had a sample, and attribution then splits equally. No
        per-process utilisation at all on MIG.
        """
        if gpu.mig_enabled or not gpu.process_util_supported:
            return [None] * len(pids)
        if pids:
            gpu.util_window.update(now, self._new_util_samples(gpu))
        gpu.util_window.forget(pids)
        return gpu.util_window.utilisation(now, pids)

    def _new_util_samples(self, gpu: _Gpu) -> dict[int, tuple[float, int]]:
        """pid -> (utilisation 0-1, NVML timestamp in us) for the samples newer than the last read."""
        raw: Any = ()
        for attempt in (1, 2):
            try:
                raw = self._nvml.nvmlDeviceGetProcessUtilization(gpu.handle, gpu.last_util_timestamp_us)
                break
            except self._nvml.NVMLError as exc:
                # NOT_FOUND: no sample newer than the timestamp. pynvml raises NVMLError(SUCCESS) when
                # the driver reports zero samples without asking for a buffer: the same thing.
                if exc.value in (_NOT_FOUND, _SUCCESS):
                    return {}
                if exc.value == _INSUFFICIENT_SIZE and attempt == 1:
                    continue  # sampled between pynvml's size query and its read: ask once more
                if exc.value == _INSUFFICIENT_SIZE:
                    # Still moving: the timestamp stays, so the next read gets these samples.
                    log.debug("GPU %d: process utilisation changed size twice in one read", gpu.index)
                    return {}
                if exc.value in _NEVER_THERE:
                    gpu.process_util_supported = False
                    return {}
                if exc.value == _NO_PERMISSION:
                    self._denied(gpu, "nvmlDeviceGetProcessUtilization")
                    return {}
                raise _GpuFailed(error_kind(exc.value), f"nvmlDeviceGetProcessUtilization: {exc}") from None
        sums: dict[int, float] = {}
        counts: dict[int, int] = {}
        newest: dict[int, int] = {}
        for sample in raw:
            ts = int(sample.timeStamp)
            # NVML returns only newer samples; the check keeps an old one from counting twice anyway.
            if ts <= gpu.last_util_timestamp_us:
                continue
            pid = int(sample.pid)
            # Documented as one per process; should a driver send several, their mean is the interval's.
            sums[pid] = sums.get(pid, 0.0) + min(100.0, max(0.0, float(sample.smUtil)))
            counts[pid] = counts.get(pid, 0) + 1
            newest[pid] = max(newest.get(pid, 0), ts)
        if newest:
            gpu.last_util_timestamp_us = max(gpu.last_util_timestamp_us, *newest.values())
        return {pid: (sums[pid] / counts[pid] / 100.0, newest[pid]) for pid in sums}

    def _mig_share(self, gpu: _Gpu, gi_id: int, now: float) -> float | None:
        if gi_id not in gpu.mig_shares:
            # Instances can be created and destroyed while we run: look again when an unknown one shows.
            self._list_mig(gpu, now)
            gpu.mig_shares.setdefault(gi_id, None)
        return gpu.mig_shares[gi_id]

    def _list_mig(self, gpu: _Gpu, now: float) -> None:
        gpu.mig_instances = self._mig_layout(gpu)
        gpu.mig_shares = {i.gpu_instance_id: i.sm_share for i in gpu.mig_instances or ()}
        gpu.mig_listed_at = now

    def _mig_layout(self, gpu: _Gpu) -> tuple[MigInstance, ...] | None:
        try:
            return self._mig_layout_or_fail(gpu)
        except _GpuFailed as failed:
            if failed.kind == "lost":
                raise
            # The share is a refinement; not knowing it must not take the GPU's reading down.
            log.debug("GPU %d: MIG layout unknown: %s", gpu.index, failed)
            return None

    def _mig_layout_or_fail(self, gpu: _Gpu) -> tuple[MigInstance, ...]:
        absent = _FIELD_ABSENT | {_NOT_FOUND, _INVALID_ARGUMENT}
        # Shares are of what MIG can hand out: the largest GPU-instance profile's SMs (7 x 14 = 98 on an
        # A100, whose board has 108). Against the board's count, seven busy 1g instances would leave
        # the SMs MIG never uses "unattributed" for good. The board's count is the fallback.
        board_sms = 0
        for profile in range(_GPU_INSTANCE_PROFILE_COUNT):
            info = self._call(gpu, "nvmlDeviceGetGpuInstanceProfileInfo", profile, absent=absent)
            if info is not None:
                board_sms = max(board_sms, int(info.multiprocessorCount))
        if board_sms <= 0:
            board = self._call(gpu, "nvmlDeviceGetAttributes", absent=absent)
            board_sms = int(board.multiprocessorCount) if board is not None else 0
        slots = self._call(gpu, "nvmlDeviceGetMaxMigDeviceCount", absent=absent)
        shares: dict[int, float | None] = {}
        uuids: list[tuple[int, str]] = []
        for slot in range(int(slots or 0)):
            mig = self._call(gpu, "nvmlDeviceGetMigDeviceHandleByIndex", slot, absent=absent)
            if mig is None:
                continue
            try:
                gi_id = int(self._nvml.nvmlDeviceGetGpuInstanceId(mig))
                sms = int(self._nvml.nvmlDeviceGetAttributes(mig).multiprocessorCount)
            except self._nvml.NVMLError as exc:
                if exc.value == _GPU_IS_LOST:
                    raise _GpuFailed("lost", f"MIG device {slot}: {exc}") from None
                continue
            shares[gi_id] = sms / board_sms if board_sms > 0 else None
            # The MIG device's UUID, as the NVIDIA device plugin names it to the kubelet (its device id).
            try:
                uuids.append((gi_id, _text(self._nvml.nvmlDeviceGetUUID(mig))))
            except self._nvml.NVMLError as exc:
                if exc.value == _GPU_IS_LOST:
                    raise _GpuFailed("lost", f"MIG device {slot}: {exc}") from None
                uuids.append((gi_id, ""))
        # Each MIG device carries its GPU instance's share, the same one the instance's processes get.
        return tuple(MigInstance(gi_id, uuid, shares[gi_id]) for gi_id, uuid in uuids)

    def _proc_info(self, pid: int) -> _ProcInfo:
        # Looked up once while the PID stays on a GPU (read() forgets PIDs that leave): a PID reused
        # between two reads by another GPU process is all but impossible, and /proc lookups for
        # hundreds of processes every second are not free.
        cached = self._procs.get(pid)
        if cached is None:
            if self._procfs_root == "/proc":
                cached = self._proc_info_psutil(pid)
            else:
                cached = self._proc_info_procfs(pid)
            self._procs[pid] = cached
        return cached

    def _proc_info_psutil(self, pid: int) -> _ProcInfo:
        try:
            proc = psutil.Process(pid)
            start = proc.create_time()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return _ProcInfo(None, "", "")
        comm = user = ""
        with proc.oneshot():
            with contextlib.suppress(psutil.Error):
                comm = proc.name()
            with contextlib.suppress(psutil.Error, KeyError):
                user = proc.username()
        return _ProcInfo(start, comm, user)

    def _proc_info_procfs(self, pid: int) -> _ProcInfo:
        base = os.path.join(self._procfs_root, str(pid))
        try:
            with open(os.path.join(base, "stat"), encoding="utf-8", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            return _ProcInfo(None, "", "")
        # comm is in parentheses and may itself contain spaces and ')'.
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2 :].split()
        start: float | None = None
        if len(fields) > 19 and fields[19].isdigit():
            # Field 22 of stat (start time in clock ticks since boot): a per-process constant.
            start = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        user = ""
        try:
            with open(os.path.join(base, "status"), encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if line.startswith("Uid:"):
                        uid = int(line.split()[1])
                        try:
                            user = pwd.getpwuid(uid).pw_name
                        except KeyError:
                            user = str(uid)
                        break
        except (OSError, ValueError, IndexError):
            pass
        return _ProcInfo(start, comm, user)


def _init_kind(code: int) -> str:
    if code in (_LIBRARY_NOT_FOUND, _FUNCTION_NOT_FOUND):
        return "missing"
    return error_kind(code)


def _init_message(exc: Any) -> str:
    code = exc.value
    if code == _LIBRARY_NOT_FOUND:
        return f"{exc} (libnvidia-ml.so.1 not found: is the NVIDIA driver installed and visible here?)"
    if code == _DRIVER_NOT_LOADED:
        return f"{exc} (the NVIDIA kernel driver is not loaded)"
    if code == _NO_PERMISSION:
        return f"{exc} (the exporter's user may not open /dev/nvidia*)"
    return str(exc)
