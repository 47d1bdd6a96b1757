"""A GPU load from plain Python: the CUDA driver API via ctypes on libcuda.so.1 and a hand-written PTX kernel.

No CUDA toolkit and no PyTorch: every NVIDIA driver ships libcuda, and the driver JIT-compiles PTX
for the GPU it finds (PTX for sm_70 runs on Volta and every newer GPU). Standard library only, so a
worker process starts fast and runs wherever the kit does.

Signatures follow cuda.h (CUDA 12.x, unchanged in the symbols used here since CUDA 11): CUresult is
an enum (int), CUdevice an int, CUcontext/CUmodule/CUfunction/CUstream opaque pointers, CUdeviceptr
an unsigned 64-bit integer. The versioned symbols (cuMemAlloc_v2, cuMemFree_v2, cuMemcpyDtoH_v2,
cuDevicePrimaryCtxRelease_v2) are what cuda.h maps the plain names to.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

LIBRARY_NAMES = ("libcuda.so.1", "libcuda.so")
# A libcuda elsewhere than the loader's search path (or the tests' fake): its path in this variable.
LIBRARY_ENV = "FOOTPRINT_LIBCUDA"
KERNEL_NAME = "footprint_spin"
# FMA chains per loop iteration in the kernel, and its constants (float32 bit patterns): each chain
# runs a <- a * MULTIPLIER + ADDEND, which stays finite however long it runs.
CHAINS = 8
MULTIPLIER_BITS = 0x3F7FFFEF
ADDEND_BITS = 0x3F000000

# Every thread runs CHAINS independent FMA chains (enough independent work per warp to keep the FP32
# pipes busy, so power rises clearly) for `iters` rounds and stores their sum, so that the loop is
# live code. Checked with ptxas for sm_70, sm_80 and sm_90 (24 registers: full occupancy).
PTX = f"""//
// Spin kernel of the footprint exporter's GPU validation kit.
//
.version 7.0
.target sm_70
.address_size 64

.visible .entry {KERNEL_NAME}(
	.param .u64 {KERNEL_NAME}_out,
	.param .u32 {KERNEL_NAME}_iters
)
{{
	.reg .pred 	%p<2>;
	.reg .b32 	%r<8>;
	.reg .f32 	%f<12>;
	.reg .b64 	%rd<5>;

	ld.param.u64 	%rd1, [{KERNEL_NAME}_out];
	ld.param.u32 	%r1, [{KERNEL_NAME}_iters];
	mov.u32 	%r2, %ctaid.x;
	mov.u32 	%r3, %ntid.x;
	mov.u32 	%r4, %tid.x;
	mad.lo.s32 	%r5, %r2, %r3, %r4;
	cvt.rn.f32.u32 	%f9, %r5;
	mul.f32 	%f9, %f9, 0f33800000;
	add.f32 	%f1, %f9, 0f3F800000;
	add.f32 	%f2, %f9, 0f40000000;
	add.f32 	%f3, %f9, 0f40400000;
	add.f32 	%f4, %f9, 0f40800000;
	add.f32 	%f5, %f9, 0f40A00000;
	add.f32 	%f6, %f9, 0f40C00000;
	add.f32 	%f7, %f9, 0f40E00000;
	add.f32 	%f8, %f9, 0f41000000;
	mov.f32 	%f10, 0f{MULTIPLIER_BITS:08X};
	mov.f32 	%f11, 0f{ADDEND_BITS:08X};
	mov.u32 	%r6, 0;
SPIN_LOOP:
	fma.rn.f32 	%f1, %f1, %f10, %f11;
	fma.rn.f32 	%f2, %f2, %f10, %f11;
	fma.rn.f32 	%f3, %f3, %f10, %f11;
	fma.rn.f32 	%f4, %f4, %f10, %f11;
	fma.rn.f32 	%f5, %f5, %f10, %f11;
	fma.rn.f32 	%f6, %f6, %f10, %f11;
	fma.rn.f32 	%f7, %f7, %f10, %f11;
	fma.rn.f32 	%f8, %f8, %f10, %f11;
	add.u32 	%r6, %r6, 1;
	setp.lt.u32 	%p1, %r6, %r1;
	@%p1 bra 	SPIN_LOOP;
	add.f32 	%f1, %f1, %f2;
	add.f32 	%f3, %f3, %f4;
	add.f32 	%f5, %f5, %f6;
	add.f32 	%f7, %f7, %f8;
	add.f32 	%f1, %f1, %f3;
	add.f32 	%f5, %f5, %f7;
	add.f32 	%f1, %f1, %f5;
	cvta.to.global.u64 	%rd2, %rd1;
	mul.wide.u32 	%rd3, %r5, 4;
	add.s64 	%rd4, %rd2, %rd3;
	st.global.f32 	[%rd4], %f1;
	ret;
}}
"""

# The kernel's parameters in declaration order, as ctypes types: cuLaunchKernel reads each one
# through a pointer, so the size of each must match the PTX declaration.
KERNEL_PARAM_TYPES: tuple[type[ctypes.c_uint64] | type[ctypes.c_uint32], ...] = (
    ctypes.c_uint64,
    ctypes.c_uint32,
)

CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16
CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR = 39
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76
CU_JIT_ERROR_LOG_BUFFER = 5
CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6
BLOCK_THREADS = 256
MAX_ITERS = 2**31 - 1

# Names of the codes most likely here, for when cuGetErrorName itself is not there (cuda.h values).
_ERROR_NAMES = {
    1: "CUDA_ERROR_INVALID_VALUE",
    2: "CUDA_ERROR_OUT_OF_MEMORY",
    3: "CUDA_ERROR_NOT_INITIALIZED",
    4: "CUDA_ERROR_DEINITIALIZED",
    34: "CUDA_ERROR_STUB_LIBRARY",
    35: "CUDA_ERROR_INSUFFICIENT_DRIVER",
    46: "CUDA_ERROR_DEVICES_UNAVAILABLE",
    100: "CUDA_ERROR_NO_DEVICE",
    101: "CUDA_ERROR_INVALID_DEVICE",
    200: "CUDA_ERROR_INVALID_IMAGE",
    201: "CUDA_ERROR_INVALID_CONTEXT",
    209: "CUDA_ERROR_NO_BINARY_FOR_GPU",
    218: "CUDA_ERROR_INVALID_PTX",
    221: "CUDA_ERROR_JIT_COMPILER_NOT_FOUND",
    222: "CUDA_ERROR_UNSUPPORTED_PTX_VERSION",
    223: "CUDA_ERROR_JIT_COMPILATION_DISABLED",
    304: "CUDA_ERROR_OPERATING_SYSTEM",
    400: "CUDA_ERROR_INVALID_HANDLE",
    500: "CUDA_ERROR_NOT_FOUND",
    700: "CUDA_ERROR_ILLEGAL_ADDRESS",
    701: "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES",
    702: "CUDA_ERROR_LAUNCH_TIMEOUT",
    719: "CUDA_ERROR_LAUNCH_FAILED",
    800: "CUDA_ERROR_NOT_PERMITTED",
    801: "CUDA_ERROR_NOT_SUPPORTED",
    802: "CUDA_ERROR_SYSTEM_NOT_READY",
    803: "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
    804: "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE",
    999: "CUDA_ERROR_UNKNOWN",
}

_c = ctypes
_P = ctypes.POINTER
# name -> (restype, argtypes), from cuda.h.
PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "cuGetErrorName": (_c.c_int, [_c.c_int, _P(_c.c_char_p)]),
    "cuInit": (_c.c_int, [_c.c_uint]),
    "cuDriverGetVersion": (_c.c_int, [_P(_c.c_int)]),
    "cuDeviceGetCount": (_c.c_int, [_P(_c.c_int)]),
    "cuDeviceGet": (_c.c_int, [_P(_c.c_int), _c.c_int]),
    "cuDeviceGetName": (_c.c_int, [_P(_c.c_char), _c.c_int, _c.c_int]),
    "cuDeviceGetPCIBusId": (_c.c_int, [_P(_c.c_char), _c.c_int, _c.c_int]),
    "cuDeviceGetAttribute": (_c.c_int, [_P(_c.c_int), _c.c_int, _c.c_int]),
    "cuDevicePrimaryCtxRetain": (_c.c_int, [_P(_c.c_void_p), _c.c_int]),
    "cuDevicePrimaryCtxRelease_v2": (_c.c_int, [_c.c_int]),
    "cuCtxSetCurrent": (_c.c_int, [_c.c_void_p]),
    "cuCtxSynchronize": (_c.c_int, []),
    "cuModuleLoadDataEx": (
        _c.c_int,
        [_P(_c.c_void_p), _c.c_void_p, _c.c_uint, _P(_c.c_int), _P(_c.c_void_p)],
    ),
    "cuModuleGetFunction": (_c.c_int, [_P(_c.c_void_p), _c.c_void_p, _c.c_char_p]),
    "cuModuleUnload": (_c.c_int, [_c.c_void_p]),
    "cuMemAlloc_v2": (_c.c_int, [_P(_c.c_uint64), _c.c_size_t]),
    "cuMemFree_v2": (_c.c_int, [_c.c_uint64]),
    "cuMemcpyDtoH_v2": (_c.c_int, [_c.c_void_p, _c.c_uint64, _c.c_size_t]),
    "cuLaunchKernel": (
        _c.c_int,
        [
            _c.c_void_p,  # CUfunction
            _c.c_uint,  # gridDimX
            _c.c_uint,  # gridDimY
            _c.c_uint,  # gridDimZ
            _c.c_uint,  # blockDimX
            _c.c_uint,  # blockDimY
            _c.c_uint,  # blockDimZ
            _c.c_uint,  # sharedMemBytes
            _c.c_void_p,  # CUstream (NULL: the context's default stream)
            _P(_c.c_void_p),  # void **kernelParams
            _P(_c.c_void_p),  # void **extra
        ],
    ),
}


class CudaError(Exception):
    """A CUDA driver call failed: names the call, the CUresult and its CUDA_ERROR_* name."""

    def __init__(self, call: str, code: int | None, name: str, detail: str = "") -> None:
        text = (
            f"{call}: {name}" + (f" ({code})" if code is not None else "") + (f": {detail}" if detail else "")
        )
        super().__init__(text)
        self.call = call
        self.code = code
        self.name = name


class CudaDriver:
    """libcuda with prototypes set; ``call`` checks every CUresult."""

    def __init__(self, lib: Any) -> None:
        self.lib = lib
        for name, (restype, argtypes) in PROTOTYPES.items():
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = restype
                fn.argtypes = argtypes

    @classmethod
    def open(cls, names: tuple[str, ...] | None = None) -> CudaDriver:
        if names is None:
            override = os.environ.get(LIBRARY_ENV, "")
            names = (override,) if override else LIBRARY_NAMES
        errors = []
        for name in names:
            try:
                return cls(ctypes.CDLL(name))
            except OSError as exc:
                errors.append(f"{name}: {exc}")
        raise CudaError("dlopen", None, "LIBRARY_NOT_FOUND", "; ".join(errors))

    def error_name(self, code: int) -> str:
        fn = getattr(self.lib, "cuGetErrorName", None)
        if fn is not None:
            text = ctypes.c_char_p()
            try:
                if fn(code, ctypes.pointer(text)) == 0 and text.value:
                    return text.value.decode("ascii", "replace")
            except (ctypes.ArgumentError, OSError):
                pass
        return _ERROR_NAMES.get(code, f"CUDA_ERROR_{code}")

    def call(self, name: str, *args: Any, detail: Callable[[], str] | None = None) -> None:
        fn = getattr(self.lib, name, None)
        if fn is None:
            raise CudaError(name, None, "SYMBOL_NOT_FOUND", "this libcuda does not export it")
        code = int(fn(*args))
        if code != 0:
            raise CudaError(name, code, self.error_name(code), detail() if detail is not None else "")


@dataclass(frozen=True)
class KernelParams:
    """cuLaunchKernel's ``void **kernelParams``: one pointer per parameter, to a value of its exact type.

    ``values`` keeps the pointed-to ctypes objects alive for as long as the array is used.
    """

    values: tuple[Any, ...]
    array: Any


def kernel_params(out_ptr: int, iters: int) -> KernelParams:
    if not 1 <= iters <= MAX_ITERS:
        raise ValueError(f"iterations must be 1..{MAX_ITERS}, got {iters}")
    values = tuple(kind(v) for kind, v in zip(KERNEL_PARAM_TYPES, (out_ptr, iters), strict=True))
    array = (ctypes.c_void_p * len(values))(*(ctypes.addressof(v) for v in values))
    return KernelParams(values, array)


def _f32(bits: int) -> float:
    value: float = struct.unpack("<f", struct.pack("<I", bits))[0]
    return value


def expected_output(thread: int, iters: int) -> float:
    """What thread ``thread`` stores after ``iters`` rounds, in exact arithmetic (float32 rounding aside).

    Each chain is a_n = L + (a_0 - L) m^n with L = c / (1 - m): the sum over the chains.
    """
    m, c = _f32(MULTIPLIER_BITS), _f32(ADDEND_BITS)
    limit = c / (1.0 - m)
    seed = thread * 2.0**-24
    decay = math.exp(iters * math.log(m))
    return sum(limit + (seed + k - limit) * decay for k in range(1, CHAINS + 1))


def normalise_pci_bus_id(bus_id: str) -> str:
    """'00000000:3B:00.0' (NVML) and '0000:3b:00.0' (CUDA) name the same device: compare them so."""
    text = bus_id.strip().lower()
    head, sep, tail = text.rpartition(":")
    domain_and_bus = head.split(":")
    if not sep or len(domain_and_bus) != 2:
        return text
    domain, bus = domain_and_bus
    try:
        return f"{int(domain or '0', 16):04x}:{int(bus, 16):02x}:{tail}"
    except ValueError:
        return text


@dataclass(frozen=True)
class DeviceInfo:
    ordinal: int
    name: str
    pci_bus_id: str
    sm_count: int
    max_threads_per_sm: int
    compute_capability: str
    # Whether the device was picked by its PCI bus id (False: by ordinal, the id was not found).
    matched_pci: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "ordinal": self.ordinal,
            "name": self.name,
            "pci_bus_id": self.pci_bus_id,
            "sm_count": self.sm_count,
            "max_threads_per_sm": self.max_threads_per_sm,
            "compute_capability": self.compute_capability,
            "matched_pci": self.matched_pci,
        }


StepCallback = Callable[[str, str], None]


@dataclass
class SpinKernel:
    """One process' CUDA context, the loaded kernel and its output buffer; ``launch`` runs it once.

    The context is the device's primary context (what the CUDA runtime uses too). ``tag_bytes`` of
    extra device memory make this process recognisable by its memory in NVML's process list, for
    containers whose PIDs NVML does not show as this process sees them.
    """

    driver: CudaDriver
    device: DeviceInfo
    context: Any
    module: Any
    function: Any
    grid: int
    block: int
    out_ptr: int
    tag_ptr: int = 0
    _params: dict[int, KernelParams] = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        driver: CudaDriver,
        pci_bus_id: str = "",
        ordinal: int = 0,
        tag_bytes: int = 0,
        on_step: StepCallback = lambda step, detail: None,
    ) -> SpinKernel:
        d = driver
        d.call("cuInit", 0)
        version = ctypes.c_int()
        d.call("cuDriverGetVersion", ctypes.pointer(version))
        on_step("cuInit", f"CUDA driver API {version.value // 1000}.{version.value % 1000 // 10}")
        device = select_device(d, pci_bus_id, ordinal)
        on_step(
            "device",
            f"{device.name} (ordinal {device.ordinal}, {device.pci_bus_id}, sm_{device.compute_capability}, "
            f"{device.sm_count} SMs)",
        )
        context = ctypes.c_void_p()
        d.call("cuDevicePrimaryCtxRetain", ctypes.pointer(context), device.ordinal)
        d.call("cuCtxSetCurrent", context)
        on_step("context", "primary context retained and current")
        started = time.perf_counter()
        module = load_module(d, PTX)
        on_step("module", f"PTX JIT-compiled in {1000 * (time.perf_counter() - started):.0f} ms")
        function = ctypes.c_void_p()
        d.call("cuModuleGetFunction", ctypes.pointer(function), module, KERNEL_NAME.encode())
        block = BLOCK_THREADS
        grid = device.sm_count * max(1, device.max_threads_per_sm // block)
        out = ctypes.c_uint64()
        d.call("cuMemAlloc_v2", ctypes.pointer(out), grid * block * 4)
        tag = ctypes.c_uint64()
        if tag_bytes > 0:
            d.call("cuMemAlloc_v2", ctypes.pointer(tag), tag_bytes)
        on_step("memory", f"{grid} blocks x {block} threads; output {grid * block * 4} B, tag {tag_bytes} B")
        return cls(d, device, context, module, function, grid, block, int(out.value), int(tag.value))

    def launch(self, iters: int) -> None:
        """Run the kernel once over the whole GPU and wait for it."""
        params = self._params.get(iters)
        if params is None:
            params = self._params[iters] = kernel_params(self.out_ptr, iters)
        self.driver.call(
            "cuLaunchKernel",
            self.function,
            self.grid,
            1,
            1,
            self.block,
            1,
            1,
            0,
            None,
            params.array,
            None,
        )
        self.driver.call("cuCtxSynchronize")

    def first_output(self) -> float:
        value = ctypes.c_float()
        self.driver.call("cuMemcpyDtoH_v2", ctypes.byref(value), self.out_ptr, 4)
        return float(value.value)

    def close(self) -> None:
        """Free what ``open`` took; best effort (the process exits next anyway)."""
        for name, args in (
            ("cuMemFree_v2", (self.tag_ptr,)),
            ("cuMemFree_v2", (self.out_ptr,)),
            ("cuModuleUnload", (self.module,)),
            ("cuDevicePrimaryCtxRelease_v2", (self.device.ordinal,)),
        ):
            if name == "cuMemFree_v2" and not args[0]:
                continue
            with contextlib.suppress(CudaError):
                self.driver.call(name, *args)


def select_device(driver: CudaDriver, pci_bus_id: str, ordinal: int) -> DeviceInfo:
    """The CUDA device with NVML's PCI bus id (CUDA's and NVML's numbering can differ), else ``ordinal``."""
    count = ctypes.c_int()
    driver.call("cuDeviceGetCount", ctypes.pointer(count))
    if count.value < 1:
        raise CudaError("cuDeviceGetCount", 100, "CUDA_ERROR_NO_DEVICE", "no CUDA device visible")
    wanted = normalise_pci_bus_id(pci_bus_id) if pci_bus_id else ""
    chosen, matched = None, False
    for candidate in range(count.value):
        dev = ctypes.c_int()
        driver.call("cuDeviceGet", ctypes.pointer(dev), candidate)
        if wanted and normalise_pci_bus_id(_pci_bus_id(driver, dev.value)) == wanted:
            chosen, matched = dev.value, True
            break
    if chosen is None:
        if not 0 <= ordinal < count.value:
            raise CudaError(
                "cuDeviceGet", 101, "CUDA_ERROR_INVALID_DEVICE", f"ordinal {ordinal} of {count.value}"
            )
        dev = ctypes.c_int()
        driver.call("cuDeviceGet", ctypes.pointer(dev), ordinal)
        chosen = dev.value
    name = ctypes.create_string_buffer(256)
    driver.call("cuDeviceGetName", name, len(name), chosen)

    def attribute(attr: int) -> int:
        value = ctypes.c_int()
        driver.call("cuDeviceGetAttribute", ctypes.pointer(value), attr, chosen)
        return int(value.value)

    return DeviceInfo(
        ordinal=chosen,
        name=name.value.decode("utf-8", "replace"),
        pci_bus_id=_pci_bus_id(driver, chosen),
        sm_count=attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
        max_threads_per_sm=attribute(CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR),
        compute_capability=f"{attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)}"
        f"{attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)}",
        matched_pci=matched,
    )


def _pci_bus_id(driver: CudaDriver, device: int) -> str:
    buf = ctypes.create_string_buffer(64)
    driver.call("cuDeviceGetPCIBusId", buf, len(buf), device)
    return buf.value.decode("ascii", "replace")


def load_module(driver: CudaDriver, ptx: str) -> Any:
    """JIT-compile the PTX; on failure the error carries the JIT's own log."""
    image = ctypes.create_string_buffer(ptx.encode("ascii"))
    log = ctypes.create_string_buffer(8192)
    options = (ctypes.c_int * 2)(CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES)
    # The size option's value is the number itself cast to a pointer, as cuda.h describes.
    values = (ctypes.c_void_p * 2)(ctypes.addressof(log), len(log))
    module = ctypes.c_void_p()
    driver.call(
        "cuModuleLoadDataEx",
        ctypes.pointer(module),
        image,
        2,
        options,
        values,
        detail=lambda: log.value.decode("utf-8", "replace").strip()[:2000],
    )
    return module


def calibrate(
    launch_timed: Callable[[int], float], target_s: float, start_iters: int = 4096, rounds: int = 8
) -> tuple[int, float]:
    """Iterations for one launch to take about ``target_s``; returns (iterations, seconds per launch).

    Starts small so that a slow GPU is not stuck in a long first launch, and scales by at most 64x a
    round; the final time is the median of three launches.
    """
    iters = max(1, min(MAX_ITERS, start_iters))
    launch_timed(iters)  # the first launch carries one-off costs (module upload, clocks ramping up)
    for _ in range(rounds):
        took = launch_timed(iters)
        if 0.85 * target_s <= took <= 1.15 * target_s:
            break
        scale = min(64.0, max(1 / 64.0, target_s / max(took, 1e-6)))
        iters = max(1, min(MAX_ITERS, round(iters * scale)))
    times = sorted(launch_timed(iters) for _ in range(3))
    return iters, times[1]


@dataclass
class DutyResult:
    """What one worker did during a duty-cycle run."""

    launches: int = 0
    busy_s: float = 0.0
    periods: int = 0
    launch_times_s: list[float] = field(default_factory=list)
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        times = sorted(self.launch_times_s)
        return {
            "launches": self.launches,
            "busy_s": self.busy_s,
            "periods": self.periods,
            "launch_ms_median": 1000 * times[len(times) // 2] if times else None,
            "launch_ms_max": 1000 * times[-1] if times else None,
            "error": self.error,
        }


def run_duty(
    launch: Callable[[], None],
    *,
    clock: Callable[[], float],
    sleep: Callable[[float], object],
    start: float,
    end: float,
    period_s: float,
    offset: float,
    busy: float,
    launch_estimate_s: float,
    should_stop: Callable[[], bool] = lambda: False,
) -> DutyResult:
    """Compute during [offset, offset + busy) of every period from ``start`` to ``end``, idle otherwise.

    A launch starts only if it is expected to end no later than half a launch after its window, so a
    window is filled to within half a launch on average; two workers with windows side by side then
    share the GPU by time without overlapping much. ``should_stop`` is asked once a period.
    """
    result = DutyResult()
    estimate = max(launch_estimate_s, 1e-6)
    k = 0
    while True:
        period_start = start + k * period_s
        if period_start >= end - 1e-9 or should_stop():
            break
        k += 1
        window_start = period_start + offset * period_s
        window_end = min(period_start + (offset + busy) * period_s, end)
        if window_end <= window_start:
            continue
        result.periods += 1
        now = clock()
        if now < window_start:
            sleep(window_start - now)
        while True:
            now = clock()
            if now + estimate / 2 > window_end:
                break
            try:
                launch()
            except CudaError as exc:
                result.error = str(exc)
                return result
            took = clock() - now
            result.launches += 1
            result.busy_s += took
            result.launch_times_s.append(took)
            estimate = 0.8 * estimate + 0.2 * took
    return result
