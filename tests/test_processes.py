"""Tests for exporter.sources.processes: per-process CPU time deltas from procfs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from exporter.sources.processes import CLK_TCK, ProcessCpuTimes, process_start_time

BTIME = 1_700_000_000


def _write_stat(root: Path, user: int, system: int, idle: int) -> None:
    (root / "stat").write_text(
        f"cpu  {user} 0 {system} {idle} 7 3 2 0 0 0\n"
        f"cpu0 {user} 0 {system} {idle} 7 3 2 0 0 0\n"
        f"intr 12345\nctxt 999\nbtime {BTIME}\nprocesses 4000\n"
    )


def _write_proc(root: Path, pid: int, comm: str, utime: int, stime: int, start: int, uid: int = 0) -> None:
    d = root / str(pid)
    d.mkdir(exist_ok=True)
    (d / "stat").write_text(
        f"{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 1234 0 0 0 {utime} {stime} 0 0 20 0 8 0 {start} "
        "1234567 890 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0\n"
    )
    (d / "status").write_text(f"Name:\t{comm}\nPid:\t{pid}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")


def test_deltas_from_fake_procfs(tmp_path: Path) -> None:
    _write_stat(tmp_path, user=1000, system=500, idle=9000)
    _write_proc(tmp_path, 100, "python3", 200, 50, start=5000)
    _write_proc(tmp_path, 200, "idle one", 10, 0, start=6000, uid=4000123)
    (tmp_path / "self").mkdir()  # non-numeric entries are ignored
    times = ProcessCpuTimes(str(tmp_path))
    assert times.read() == ({}, 0.0)  # the baseline

    _write_stat(tmp_path, user=1300, system=600, idle=9100)  # 400 busy ticks = 4 s at 100 Hz
    _write_proc(tmp_path, 100, "python3", 350, 80, start=5000)  # +180 ticks
    _write_proc(tmp_path, 300, "a) tricky (name", 20, 5, start=7000)  # new since the last read: all 25
    used, busy = times.read()
    scale = 100.0 / CLK_TCK
    assert busy == pytest.approx(4.0 * scale)
    assert used == {
        (100, BTIME + 5000 / CLK_TCK): (pytest.approx(1.8 * scale), "python3", "root"),
        (300, BTIME + 7000 / CLK_TCK): (pytest.approx(0.25 * scale), "a) tricky (name", "root"),
    }


def test_reused_pid_is_a_new_key(tmp_path: Path) -> None:
    _write_stat(tmp_path, 0, 0, 0)
    _write_proc(tmp_path, 100, "old", 500, 0, start=5000)
    times = ProcessCpuTimes(str(tmp_path))
    times.read()
    _write_stat(tmp_path, 100, 0, 0)
    _write_proc(tmp_path, 100, "new", 30, 0, start=9000, uid=4000123)  # same pid, later start
    used, _ = times.read()
    # Not a negative delta against the old process: the new one is charged its own 30 ticks.
    assert used == {(100, BTIME + 9000 / CLK_TCK): (pytest.approx(30 / CLK_TCK), "new", "4000123")}


def test_vanished_process_and_garbage_are_skipped(tmp_path: Path) -> None:
    _write_stat(tmp_path, 0, 0, 0)
    _write_proc(tmp_path, 100, "a", 1, 0, start=1)
    (tmp_path / "101").mkdir()
    (tmp_path / "101" / "stat").write_text("101 (broken")
    times = ProcessCpuTimes(str(tmp_path))
    times.read()
    (tmp_path / "100" / "stat").unlink()
    _write_stat(tmp_path, 10, 0, 0)
    assert times.read() == ({}, pytest.approx(10 / CLK_TCK))


def test_process_start_time_matches_key(tmp_path: Path) -> None:
    _write_stat(tmp_path, 0, 0, 0)
    _write_proc(tmp_path, 55, "x", 0, 0, start=12345)
    assert process_start_time(55, str(tmp_path)) == BTIME + 12345 / CLK_TCK
    assert process_start_time(56, str(tmp_path)) is None


def test_start_time_agrees_with_psutil_on_live_machine() -> None:
    ours = process_start_time(os.getpid())
    assert ours is not None
    assert ours == pytest.approx(psutil.Process().create_time(), abs=0.05)


SPINNER = """
import sys, time
sys.stdout.write("ready\\n"); sys.stdout.flush()
sys.stdin.readline()
start = time.process_time()
while time.process_time() - start < 0.5:
    pass
sys.stdout.write("done\\n"); sys.stdout.flush()
sys.stdin.readline()
"""


@pytest.fixture
def spinner() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SPINNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=30)


@pytest.mark.integration
def test_live_busy_child_shows_its_cpu_time(spinner: subprocess.Popen[str]) -> None:
    assert spinner.stdin is not None and spinner.stdout is not None
    assert spinner.stdout.readline() == "ready\n"
    times = ProcessCpuTimes()
    times.read()
    spinner.stdin.write("go\n")
    spinner.stdin.flush()
    assert spinner.stdout.readline() == "done\n"
    used, busy = times.read()
    mine = [(cpu, comm) for (pid, _), (cpu, comm, _user) in used.items() if pid == spinner.pid]
    assert len(mine) == 1
    cpu, comm = mine[0]
    assert cpu > 0.2
    assert comm.startswith("python")
    assert busy >= cpu - 0.05  # the machine was busy at least while the child spun
