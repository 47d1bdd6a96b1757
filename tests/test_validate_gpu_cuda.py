"""The kit's CUDA load: PTX, ctypes packing and the worker protocol, against a fake libcuda built with gcc.

tests/fake_libcuda.c implements the driver API functions the kit calls with cuda.h's signatures, so
these tests cross a real C ABI: a wrong argtype, a wrongly packed kernel parameter or a misread
output pointer gives a wrong number or an error here, not only on a GPU.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.validate_gpu import cuda
from exporter.validate_gpu.cuda import (
    KERNEL_NAME,
    KERNEL_PARAM_TYPES,
    PTX,
    CudaDriver,
    CudaError,
    SpinKernel,
    calibrate,
    expected_output,
    kernel_params,
    normalise_pci_bus_id,
    run_duty,
)
from exporter.validate_gpu.load import CudaLoad, Duty, LoadError

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def fake_libcuda(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed to build tests/fake_libcuda.c (Debian package gcc; .ci/run installs it)"
    out = tmp_path_factory.mktemp("libcuda") / "libfakecuda.so"
    subprocess.run(
        [
            gcc,
            "-shared",
            "-fPIC",
            "-O1",
            "-Wall",
            "-Werror",
            "-o",
            str(out),
            str(HERE / "fake_libcuda.c"),
            "-lm",
        ],
        check=True,
        timeout=120,
    )
    return out


@pytest.fixture
def driver(fake_libcuda: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CudaDriver]:
    for name in ("FAKE_CUDA_INIT_ERROR", "FAKE_CUDA_PTX_ERROR", "FAKE_CUDA_DEVICES", "FAKE_CUDA_NS_PER_ITER"):
        monkeypatch.delenv(name, raising=False)
    yield CudaDriver(ctypes.CDLL(str(fake_libcuda)))


def f32_model(iters: int) -> float:
    """Thread 0 of the kernel with float32 rounding after every operation (fma rounds once)."""

    def f32(x: float) -> float:
        value: float = struct.unpack("<f", struct.pack("<f", x))[0]
        return value

    m, c = cuda._f32(cuda.MULTIPLIER_BITS), cuda._f32(cuda.ADDEND_BITS)
    acc = [float(k) for k in range(1, 9)]
    for _ in range(iters):
        acc = [f32(a * m + c) for a in acc]
    return f32(
        f32(f32(acc[0] + acc[1]) + f32(acc[2] + acc[3])) + f32(f32(acc[4] + acc[5]) + f32(acc[6] + acc[7]))
    )


# ---------------------------------------------------------------------- PTX and packing


def test_ptx_header_entry_and_parameters_match_the_launch_packing() -> None:
    lines = [line.strip() for line in PTX.splitlines()]
    assert ".version 7.0" in lines and ".target sm_70" in lines and ".address_size 64" in lines
    entry = re.search(r"\.visible \.entry (\w+)\(([^)]*)\)", PTX)
    assert entry is not None and entry.group(1) == KERNEL_NAME
    declared = re.findall(r"\.param \.(u64|u32)", entry.group(2))
    sizes = {"u64": 8, "u32": 4}
    assert [sizes[d] for d in declared] == [ctypes.sizeof(t) for t in KERNEL_PARAM_TYPES]
    # Every declared parameter is loaded, and the loop count is the u32 one.
    assert f"ld.param.u64 \t%rd1, [{KERNEL_NAME}_out]" in PTX
    assert f"ld.param.u32 \t%r1, [{KERNEL_NAME}_iters]" in PTX
    assert PTX.count("fma.rn.f32") == cuda.CHAINS
    assert "st.global.f32" in PTX


def test_kernel_params_point_at_values_of_the_declared_types() -> None:
    params = kernel_params(0x7F00_1234_5678, 123_456)
    assert len(params.array) == 2
    out = ctypes.cast(params.array[0], ctypes.POINTER(ctypes.c_uint64)).contents.value
    iters = ctypes.cast(params.array[1], ctypes.POINTER(ctypes.c_uint32)).contents.value
    assert (out, iters) == (0x7F00_1234_5678, 123_456)
    with pytest.raises(ValueError):
        kernel_params(1, 0)
    with pytest.raises(ValueError):
        kernel_params(1, 2**32)


def test_expected_output_follows_float32_arithmetic() -> None:
    for iters in (1, 512, 4096):
        assert expected_output(0, iters) == pytest.approx(f32_model(iters), rel=1e-5)


def test_pci_bus_ids_from_nvml_and_cuda_compare_equal() -> None:
    assert normalise_pci_bus_id("00000000:3B:00.0") == normalise_pci_bus_id("0000:3b:00.0")
    assert normalise_pci_bus_id("00000001:3B:00.0") != normalise_pci_bus_id("0000:3b:00.0")
    assert normalise_pci_bus_id("garbage") == "garbage"


# ---------------------------------------------------------------------- across the C ABI


def test_kernel_runs_with_its_parameters_on_the_whole_gpu(driver: CudaDriver, fake_libcuda: Path) -> None:
    steps: list[str] = []
    kernel = SpinKernel.open(driver, "", 0, 4 << 20, lambda step, detail: steps.append(step))
    try:
        assert steps == ["cuInit", "device", "context", "module", "memory"]
        assert (kernel.device.name, kernel.device.sm_count, kernel.device.compute_capability) == (
            "Fake CUDA GPU 0",
            132,
            "90",
        )
        kernel.launch(4096)
        # The fake runs thread 0's arithmetic: right only if the out pointer and the count arrived.
        assert kernel.first_output() == pytest.approx(f32_model(4096), rel=1e-6)
        grid, block, iters = ctypes.c_uint(), ctypes.c_uint(), ctypes.c_uint()
        ctypes.CDLL(str(fake_libcuda)).fake_cuda_last_launch(
            ctypes.byref(grid), ctypes.byref(block), ctypes.byref(iters)
        )
        # Enough blocks to fill every SM: 2048 threads per SM / 256 per block x 132 SMs.
        assert (grid.value, block.value, iters.value) == (132 * 8, 256, 4096)
        assert kernel.tag_ptr != 0
    finally:
        kernel.close()


def test_device_is_chosen_by_nvmls_pci_bus_id(driver: CudaDriver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_CUDA_DEVICES", "3")
    driver.call("cuInit", 0)
    chosen = cuda.select_device(driver, "00000000:1A:00.0", 0)
    assert (chosen.ordinal, chosen.matched_pci, chosen.pci_bus_id) == (2, True, "0000:1A:00.0")
    fallback = cuda.select_device(driver, "00000000:99:00.0", 1)
    assert (fallback.ordinal, fallback.matched_pci) == (1, False)


def test_jit_error_names_the_cuda_error_and_carries_the_jit_log(
    driver: CudaDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CUDA_PTX_ERROR", "Unsupported .version 7.0; current version is '6.4'")
    with pytest.raises(CudaError) as err:
        SpinKernel.open(driver)
    assert err.value.call == "cuModuleLoadDataEx"
    assert err.value.name == "CUDA_ERROR_INVALID_PTX" and err.value.code == 218
    assert "Unsupported .version 7.0" in str(err.value)


def test_error_names_come_from_the_driver_then_from_our_table(driver: CudaDriver) -> None:
    assert driver.error_name(100) == "CUDA_ERROR_NO_DEVICE"
    assert driver.error_name(222) == "CUDA_ERROR_UNSUPPORTED_PTX_VERSION"  # the fake does not know it
    assert driver.error_name(12345) == "CUDA_ERROR_12345"
    driver.call("cuInit", 0)
    with pytest.raises(CudaError, match=r"cuDeviceGet: CUDA_ERROR_INVALID_DEVICE \(101\)"):
        driver.call("cuDeviceGet", ctypes.pointer(ctypes.c_int()), 99)
    with pytest.raises(CudaError, match="cuNoSuchCall: SYMBOL_NOT_FOUND"):
        driver.call("cuNoSuchCall")


def test_init_failure_and_missing_library(driver: CudaDriver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_CUDA_INIT_ERROR", "100")
    with pytest.raises(CudaError, match="cuInit: CUDA_ERROR_NO_DEVICE"):
        SpinKernel.open(driver)
    with pytest.raises(CudaError, match="dlopen: LIBRARY_NOT_FOUND"):
        CudaDriver.open(("/nonexistent/libcuda.so.1",))


def test_calibration_reaches_the_target_launch_time() -> None:
    # A GPU whose launch costs 20 us plus 37 ns a round (timed launches, no real clock involved).
    asked: list[int] = []

    def launch_timed(iters: int) -> float:
        asked.append(iters)
        return 20e-6 + 37e-9 * iters

    iters, launch_s = calibrate(launch_timed, 0.005)
    assert launch_s == pytest.approx(0.005, rel=0.15)
    assert iters == pytest.approx((0.005 - 20e-6) / 37e-9, rel=0.15)
    assert asked[0] == 4096 and max(asked[:2]) <= 4096  # starts small: no long first launch
    assert len(asked) <= 1 + 8 + 3
    slow_iters, slow_s = calibrate(lambda n: 1e-3 * n, 0.005)  # a very slow GPU: 1 ms a round
    assert slow_iters == 5 and slow_s == pytest.approx(0.005)


# ---------------------------------------------------------------------- the duty cycle


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += max(0.0, s)


def test_duty_cycle_fills_its_window_of_every_period() -> None:
    clock = Clock()
    launch_s = 0.005

    def launch() -> None:
        clock.now += launch_s

    result = run_duty(
        launch,
        clock=clock,
        sleep=clock.sleep,
        start=1.0,
        end=11.0,
        period_s=0.2,
        offset=0.75,
        busy=0.25,
        launch_estimate_s=launch_s,
    )
    assert result.periods == 50
    assert result.launches == 50 * 10  # a 50 ms window holds ten 5 ms launches
    assert result.busy_s == pytest.approx(0.25 * 10.0)
    assert clock.now <= 11.0 + launch_s


def test_duty_cycle_stops_at_a_cuda_error() -> None:
    clock = Clock()
    count = [0]

    def launch() -> None:
        count[0] += 1
        clock.now += 0.005
        if count[0] == 3:
            raise CudaError("cuLaunchKernel", 719, "CUDA_ERROR_LAUNCH_FAILED")

    result = run_duty(
        launch,
        clock=clock,
        sleep=clock.sleep,
        start=0.0,
        end=5.0,
        period_s=0.2,
        offset=0.0,
        busy=0.75,
        launch_estimate_s=0.005,
    )
    assert result.launches == 2 and "CUDA_ERROR_LAUNCH_FAILED" in result.error


def test_duty_cycle_ends_early_when_told_to_stop() -> None:
    clock = Clock()

    def launch() -> None:
        clock.now += 0.005

    result = run_duty(
        launch,
        clock=clock,
        sleep=clock.sleep,
        start=0.0,
        end=60.0,
        period_s=0.2,
        offset=0.0,
        busy=0.75,
        launch_estimate_s=0.005,
        should_stop=lambda: clock.now >= 0.5,  # e.g. the kit that started the worker is gone
    )
    assert result.periods == 3 and clock.now < 1.0


# ---------------------------------------------------------------------- worker processes


def test_workers_report_selfcheck_calibrate_and_run_at_3_to_1(
    fake_libcuda: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cuda.LIBRARY_ENV, str(fake_libcuda))
    load = CudaLoad("00000000:18:00.0", 0, 5.0)
    check = load.selfcheck(60.0)
    assert check["ok"], check
    assert [s["step"] for s in check["steps"]] == [
        "dlopen",
        "cuInit",
        "device",
        "context",
        "module",
        "memory",
        "launch",
        "calibrate",
    ]
    assert check["output_ok"] is True and check["device"]["matched_pci"] is True
    try:
        workers = load.start({"A": 8, "B": 4}, 60.0)
        assert workers["A"].iters == workers["B"].iters > 0  # B runs the rounds A calibrated
        assert workers["A"].tag_bytes == 8 << 20 and workers["A"].pid != workers["B"].pid
        assert workers["A"].launch_ms > 0
        load.run({"A": Duty(0.0, 0.75), "B": Duty(0.75, 0.25)}, 0.2, 2.0, 0.2)
        done = load.collect(30.0)
        # Each worker computes in its own window of every period (150 ms and 50 ms of 200 ms) for 2 s.
        # How exactly a window is filled is checked on a virtual clock above; here real processes
        # sleep through real launches on a shared machine, so only the protocol and the proportions.
        assert done["A"]["periods"] == done["B"]["periods"] == 10
        assert done["A"]["launches"] > done["B"]["launches"] > 0
        assert 1.0 < done["A"]["busy_s"] < 2.0 and 0.2 < done["B"]["busy_s"] < 0.9, done
        assert done["A"]["error"] == done["B"]["error"] == ""
        assert done["A"]["error"] == ""
    finally:
        load.stop()
    assert load.workers == {}


def test_workers_without_libcuda_report_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cuda.LIBRARY_ENV, "/nonexistent/libcuda.so.1")
    load = CudaLoad("", 0, 5.0)
    check = load.selfcheck(60.0)
    assert check["ok"] is False
    assert check["steps"][-1]["step"] == "dlopen" and "LIBRARY_NOT_FOUND" in check["steps"][-1]["error"]
    with pytest.raises(LoadError, match="dlopen: LIBRARY_NOT_FOUND"):
        load.start({"A": 1}, 60.0)
    load.stop()


def test_worker_with_a_bad_ptx_says_so_before_ready(
    fake_libcuda: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cuda.LIBRARY_ENV, str(fake_libcuda))
    monkeypatch.setenv("FAKE_CUDA_PTX_ERROR", "illegal instruction")
    load = CudaLoad("", 0, 5.0)
    with pytest.raises(LoadError, match=r"CUDA_ERROR_INVALID_PTX.*illegal instruction"):
        load.start({"A": 1}, 60.0)
    load.stop()
