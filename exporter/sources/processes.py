"""Per-process CPU time deltas and the machine's busy CPU time from procfs, for CPU energy attribution."""

from __future__ import annotations

import os
import pwd

# Clock ticks per second of the times in /proc/<pid>/stat and /proc/stat (USER_HZ, 100 on Linux).
CLK_TCK = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0

ProcessKey = tuple[int, float]


def _read_bytes(path: str) -> bytes | None:
    # os.open/os.read: no buffered file object per call, which matters at a thousand processes a tick.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None  # the process ended between listing and reading, or we may not look
    try:
        chunks = [os.read(fd, 8192)]
        # procfs files this small come back whole in one read; a short read means the end.
        while len(chunks[-1]) == 8192:
            chunks.append(os.read(fd, 8192))
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _parse_stat(data: bytes) -> tuple[str, int, int] | None:
    """comm, utime + stime ticks and start ticks from /proc/<pid>/stat content."""
    # comm is in parentheses and may itself contain spaces and ')': split at the last ')'.
    open_paren = data.find(b"(")
    close_paren = data.rfind(b")")
    if open_paren < 0 or close_paren < open_paren:
        return None
    fields = data[close_paren + 2 :].split()
    if len(fields) < 20:
        return None
    try:
        # After the comm: state(0) ppid(1) ... utime(11) stime(12) ... starttime(19).
        cpu_ticks = int(fields[11]) + int(fields[12])
        start_ticks = int(fields[19])
    except ValueError:
        return None
    comm = data[open_paren + 1 : close_paren].decode("utf-8", "replace")
    return comm, cpu_ticks, start_ticks


def _boot_time(procfs_root: str) -> float:
    data = _read_bytes(os.path.join(procfs_root, "stat")) or b""
    for line in data.splitlines():
        if line.startswith(b"btime "):
            return float(line.split()[1])
    return 0.0


def process_start_time(pid: int, procfs_root: str = "/proc", boot_time: float | None = None) -> float | None:
    """A process' start time, seconds since the epoch, as ProcessCpuTimes keys it (None if it is gone).

    GPU sources should use this too, so a process has the same (pid, start_time) key everywhere.
    """
    data = _read_bytes(os.path.join(procfs_root, str(pid), "stat"))
    parsed = _parse_stat(data) if data else None
    if parsed is None:
        return None
    btime = _boot_time(procfs_root) if boot_time is None else boot_time
    return btime + parsed[2] / CLK_TCK


class ProcessCpuTimes:
    """Reads every process' CPU time (user + system, all threads) and the machine's busy CPU time.

    ``read`` returns what changed since the previous call: ``{(pid, start_time): (cpu_seconds, comm,
    user)}`` for the processes that used CPU in between, and the machine's busy CPU seconds (all CPUs:
    user, nice, system, irq, softirq, steal; not idle or iowait). A process that started since the
    previous call is charged all of its CPU time. The first call only sets the baseline and returns
    ``({}, 0.0)``. CPU time of a process that ended between two reads is lost (it stays unattributed).
    Command lines and environments are never read.
    """

    name = "processes"

    def __init__(self, procfs_root: str = "/proc") -> None:
        self._root = procfs_root
        self._boot_time = _boot_time(procfs_root)
        self._previous: dict[ProcessKey, int] | None = None
        self._previous_busy = 0
        self._users: dict[ProcessKey, str] = {}
        self._names: dict[int, str] = {}
        # Online CPUs in the last read of /proc/stat (0 when it lists none): busy seconds / (interval x
        # this) is the machine's utilisation.
        self.cpu_count = 0

    def _busy_ticks(self) -> int:
        data = _read_bytes(os.path.join(self._root, "stat")) or b""
        busy = cpus = 0
        for line in data.splitlines():
            if line.startswith(b"cpu "):
                values = [int(v) for v in line.split()[1:]]
                values += [0] * (8 - len(values))
                # user nice system idle iowait irq softirq steal (guest time is already in user).
                busy = values[0] + values[1] + values[2] + values[5] + values[6] + values[7]
            elif line.startswith(b"cpu"):
                cpus += 1  # one line per online CPU
            elif cpus or busy:
                break  # the cpu lines come first
        self.cpu_count = cpus
        return busy

    def _user(self, key: ProcessKey) -> str:
        user = self._users.get(key)
        if user is not None:
            return user
        user = ""
        status = _read_bytes(os.path.join(self._root, str(key[0]), "status")) or b""
        for line in status.splitlines():
            if line.startswith(b"Uid:"):
                fields = line.split()
                if len(fields) > 1 and fields[1].isdigit():
                    uid = int(fields[1])
                    name = self._names.get(uid)
                    if name is None:
                        try:
                            name = pwd.getpwuid(uid).pw_name
                        except KeyError:
                            name = str(uid)
                        self._names[uid] = name
                    user = name
                break
        self._users[key] = user
        return user

    def read(self) -> tuple[dict[ProcessKey, tuple[float, str, str]], float]:
        busy = self._busy_ticks()
        current: dict[ProcessKey, int] = {}
        used: dict[ProcessKey, tuple[float, str, str]] = {}
        previous = self._previous
        try:
            entries = [e.name for e in os.scandir(self._root) if e.name.isdigit()]
        except OSError:
            entries = []
        for name in entries:
            data = _read_bytes(os.path.join(self._root, name, "stat"))
            parsed = _parse_stat(data) if data else None
            if parsed is None:
                continue
            comm, ticks, start_ticks = parsed
            key = (int(name), self._boot_time + start_ticks / CLK_TCK)
            current[key] = ticks
            if previous is None:
                continue
            delta = ticks - previous.get(key, 0)
            if delta > 0:
                used[key] = (delta / CLK_TCK, comm, self._user(key))
        busy_delta = max(0, busy - self._previous_busy) / CLK_TCK if previous is not None else 0.0
        self._previous = current
        self._previous_busy = busy
        if len(self._users) > 2 * len(current) + 64:
            self._users = {k: v for k, v in self._users.items() if k in current}
        return used, busy_delta

    def close(self) -> None:
        pass
