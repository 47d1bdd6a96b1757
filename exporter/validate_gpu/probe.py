"""NVML measurements of the validation kit: device facts, fast polls, per-process samples, call costs.

Everything here takes the pynvml module as an argument (the tests pass a fake), and every NVML call
that fails is reported by its NVML_ERROR_* name instead of stopping the measurement.
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable
from typing import Any

from exporter.validate_gpu.stats import summary

Nvml = Any  # the pynvml module, or a fake of it

# NVML's counters and readings the kit polls (names as in pynvml).
POWER_INSTANT = "NVML_FI_DEV_POWER_INSTANT"
POWER_AVERAGE = "NVML_FI_DEV_POWER_AVERAGE"

# nvmlReturn_t codes 1, 2, 3, ... in nvml.h order (stable across drivers); 999 is UNKNOWN.
_ERROR_NAMES = [
    "UNINITIALIZED",
    "INVALID_ARGUMENT",
    "NOT_SUPPORTED",
    "NO_PERMISSION",
    "ALREADY_INITIALIZED",
    "NOT_FOUND",
    "INSUFFICIENT_SIZE",
    "INSUFFICIENT_POWER",
    "DRIVER_NOT_LOADED",
    "TIMEOUT",
    "IRQ_ISSUE",
    "LIBRARY_NOT_FOUND",
    "FUNCTION_NOT_FOUND",
    "CORRUPTED_INFOROM",
    "GPU_IS_LOST",
    "RESET_REQUIRED",
    "OPERATING_SYSTEM",
    "LIB_RM_VERSION_MISMATCH",
    "IN_USE",
    "MEMORY",
    "NO_DATA",
    "VGPU_ECC_NOT_SUPPORTED",
    "INSUFFICIENT_RESOURCES",
    "FREQ_NOT_SUPPORTED",
    "ARGUMENT_VERSION_MISMATCH",
    "DEPRECATED",
    "NOT_READY",
    "GPU_NOT_FOUND",
    "INVALID_STATE",
    "RESET_TYPE_NOT_SUPPORTED",
]


def error_name(nvml: Nvml, exc: BaseException) -> str:
    """NVML_ERROR_NOT_SUPPORTED and the like for an NVMLError; the exception's class otherwise."""
    code = getattr(exc, "value", None)
    if isinstance(code, int):
        if code == 0:
            # pynvml raises NVMLError(SUCCESS) when a size query finds nothing: "no data", in effect.
            return "NVML_SUCCESS_EMPTY"
        if code == 999:
            return "NVML_ERROR_UNKNOWN"
        if 1 <= code <= len(_ERROR_NAMES):
            return f"NVML_ERROR_{_ERROR_NAMES[code - 1]}"
        return f"NVML_ERROR_{code}"
    return f"{type(exc).__name__}: {exc}"


def text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.split(b"\0", 1)[0].decode("utf-8", "replace")
    return str(value)


def try_call(nvml: Nvml, name: str, *args: Any) -> tuple[bool, Any]:
    """(True, result) or (False, error name); a function this pynvml lacks is an error too."""
    fn = getattr(nvml, name, None)
    if fn is None:
        return False, "MISSING_IN_PYNVML"
    try:
        return True, fn(*args)
    except nvml.NVMLError as exc:
        return False, error_name(nvml, exc)


def field_value(nvml: Nvml, raw: Any) -> float | None:
    """The number in an nvmlFieldValue_t, by its value type; None when NVML says it failed."""
    if int(raw.nvmlReturn) != 0:
        return None
    kind = int(raw.valueType)
    member = {
        0: "dVal",
        1: "uiVal",
        2: "ulVal",
        3: "ullVal",
        4: "sllVal",
        5: "siVal",
        6: "usVal",
    }.get(kind)
    if member is None:
        return None
    return float(getattr(raw.value, member))


def device_facts(nvml: Nvml, handle: Any) -> dict[str, Any]:
    """Static facts of the GPU, each either its value or its error name (read-only calls only)."""
    facts: dict[str, Any] = {}
    for key, fn, convert in (
        ("name", "nvmlDeviceGetName", text),
        ("uuid", "nvmlDeviceGetUUID", text),
        ("pci_bus_id", "nvmlDeviceGetPciInfo", lambda v: text(v.busId)),
        ("power_limit_w", "nvmlDeviceGetEnforcedPowerLimit", lambda v: v / 1000.0),
        ("mig_mode", "nvmlDeviceGetMigMode", lambda v: list(v)),
        ("persistence_mode", "nvmlDeviceGetPersistenceMode", int),
        ("compute_mode", "nvmlDeviceGetComputeMode", int),
        ("memory_total_bytes", "nvmlDeviceGetMemoryInfo", lambda v: int(v.total)),
    ):
        ok, value = try_call(nvml, fn, handle)
        facts[key] = convert(value) if ok else {"error": value}
    return facts


class SignalPoller:
    """Reads the energy counter, the power reading and the power field values once per ``poll``.

    A signal that answers NOT_SUPPORTED (or is missing) is not asked again; other errors are counted.
    """

    def __init__(self, nvml: Nvml, handle: Any) -> None:
        self.nvml = nvml
        self.handle = handle
        self.unsupported: dict[str, str] = {}
        self.errors: dict[str, dict[str, int]] = {}
        self.field_ids: list[int] = []
        self.field_names: list[str] = []
        for name in (POWER_INSTANT, POWER_AVERAGE):
            fid = getattr(nvml, name, None)
            if isinstance(fid, int):
                self.field_ids.append(fid)
                self.field_names.append(name)
            else:
                self.unsupported[name] = "MISSING_IN_PYNVML"

    def _fail(self, signal: str, error: str) -> None:
        if error in ("NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND", "MISSING_IN_PYNVML"):
            self.unsupported[signal] = error
        counts = self.errors.setdefault(signal, {})
        counts[error] = counts.get(error, 0) + 1

    def poll(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, fn in (("e_mj", "nvmlDeviceGetTotalEnergyConsumption"), ("p_mw", "nvmlDeviceGetPowerUsage")):
            if fn in self.unsupported:
                continue
            ok, value = try_call(self.nvml, fn, self.handle)
            if ok:
                out[key] = int(value)
            else:
                self._fail(fn, value)
        wanted = [
            (i, n) for i, n in zip(self.field_ids, self.field_names, strict=True) if n not in self.unsupported
        ]
        if wanted:
            ok, values = try_call(self.nvml, "nvmlDeviceGetFieldValues", self.handle, [i for i, _ in wanted])
            if not ok:
                for _, name in wanted:
                    self._fail(name, values)
            else:
                for (_, name), raw in zip(wanted, values, strict=False):
                    short = "pi" if name == POWER_INSTANT else "pa"
                    number = field_value(self.nvml, raw)
                    if number is None:
                        ret = int(raw.nvmlReturn)
                        self._fail(name, "NVML_ERROR_NOT_SUPPORTED" if ret == 3 else f"NVML_RETURN_{ret}")
                        continue
                    out[f"{short}_mw"] = number
                    out[f"{short}_ts"] = int(raw.timestamp)
        return out


class ProcessSamplePoller:
    """Calls nvmlDeviceGetProcessUtilization with its own lastSeenTimeStamp, as the exporter does."""

    def __init__(self, nvml: Nvml, handle: Any, name: str) -> None:
        self.nvml = nvml
        self.handle = handle
        self.name = name
        self.last_seen_us = 0
        self.unsupported = ""

    def prime(self) -> dict[str, Any]:
        """One call with lastSeenTimeStamp 0 (everything in the driver's buffer); later calls see only
        newer samples. Returns the call's record, flagged as the priming call."""
        record = self.poll()
        record["prime"] = True
        return record

    def poll(self) -> dict[str, Any]:
        record: dict[str, Any] = {"poller": self.name, "last_seen_us": self.last_seen_us}
        if self.unsupported:
            record["result"] = self.unsupported
            record["samples"] = []
            return record
        ok, value = try_call(self.nvml, "nvmlDeviceGetProcessUtilization", self.handle, self.last_seen_us)
        if not ok:
            record["result"] = value
            record["samples"] = []
            if value in ("NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND", "MISSING_IN_PYNVML"):
                self.unsupported = value
            return record
        samples = [
            {
                "pid": int(s.pid),
                "ts_us": int(s.timeStamp),
                "sm": int(s.smUtil),
                "mem": int(s.memUtil),
                "enc": int(s.encUtil),
                "dec": int(s.decUtil),
            }
            for s in value
        ]
        if samples:
            self.last_seen_us = max(self.last_seen_us, *(s["ts_us"] for s in samples))
        record["result"] = "ok"
        record["samples"] = samples
        return record


class CallRecorder(types.ModuleType):
    """Stands in for pynvml in front of an NvmlGpuSource: forwards everything, and notes each NVML call
    (name and arguments) and the time spent inside NVML."""

    def __init__(self, nvml: Nvml, timer: Callable[[], float] = time.perf_counter) -> None:
        super().__init__("pynvml")
        self._target = nvml
        self._timer = timer
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.nvml_s = 0.0

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not (name.startswith("nvml") and callable(value)):
            return value
        timer = self._timer

        def call(*args: Any) -> Any:
            self.calls.append((name, args))
            started = timer()
            try:
                return value(*args)
            finally:
                self.nvml_s += timer() - started

        return call

    def take(self) -> list[tuple[str, tuple[Any, ...]]]:
        calls, self.calls = self.calls, []
        return calls


def time_calls(
    fn: Callable[[], Any],
    nvml: Nvml,
    n: int,
    deadline: float,
    timer: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """Median and p90 (microseconds) of up to ``n`` calls of ``fn``, stopping at ``deadline`` (timer time).

    A call that raises an NVML error still counts (its cost is real: NOT_FOUND is the common answer of
    nvmlDeviceGetProcessUtilization); the errors are counted by name.
    """
    times: list[float] = []
    errors: dict[str, int] = {}
    for _ in range(n):
        if timer() > deadline and times:
            break
        started = timer()
        try:
            fn()
        except nvml.NVMLError as exc:
            name = error_name(nvml, exc)
            errors[name] = errors.get(name, 0) + 1
        times.append(timer() - started)
    out = summary(times, 1e6)
    out["errors"] = errors
    return out
