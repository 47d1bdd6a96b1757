"""Accumulates attributed energy and emissions per process series, with bounded cardinality and retention."""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

from exporter.model import ProcessState, Workload

GROUP_BY = ("pid", "container", "pod", "slurm_job", "user")
OTHER_COMM = "other"

# Label values of a series, in catalogue order after gpu/uuid: pid, comm, user, container_id, pod,
# namespace, slurm_job_id. Prometheus identifies a series by these, so two live keys with the same
# labels must share one series.
Labels = tuple[str, str, str, str, str, str, str]
Key = tuple[Hashable, ...]


class _Series:
    __slots__ = (
        "device",
        "device_index",
        "embodied_g",
        "emissions_g",
        "energy_j",
        "interval_j",
        "interval_s",
        "labels",
        "last_seen",
        "marginal_g",
        "market_g",
        "pod_uid",
        "power_w",
        "seen",
        "state",
        "workload",
    )

    def __init__(self, device: str, device_index: str, labels: Labels, pod_uid: str, now: float) -> None:
        self.device = device
        self.device_index = device_index
        self.labels = labels
        self.pod_uid = pod_uid
        self.energy_j = 0.0
        self.emissions_g = 0.0
        self.marginal_g: float | None = None
        self.market_g: float | None = None
        self.embodied_g = 0.0
        self.interval_j = 0.0
        self.interval_s = 0.0
        self.power_w = 0.0
        self.seen = False
        self.last_seen = now
        self.state: ProcessState | None = None
        _, comm, user, container_id, pod, namespace, slurm = labels
        self.workload = Workload(comm, user, container_id, pod_uid, pod, namespace, slurm)

    def charge(
        self,
        joules: float,
        interval_s: float,
        now: float,
        grams: float,
        marginal: float | None,
        embodied: float,
        market: float | None = None,
    ) -> None:
        self.energy_j += joules
        self.emissions_g += grams
        if marginal is not None:
            self.marginal_g = (self.marginal_g or 0.0) + marginal
        if market is not None:
            self.market_g = (self.market_g or 0.0) + market
        self.embodied_g += embodied
        self.interval_j += joules
        self.interval_s = max(self.interval_s, interval_s)
        self.seen = True
        self.last_seen = now
        self.state = None

    def build(self) -> ProcessState:
        if self.state is None:
            # Positional: this runs for every active series on every tick.
            self.state = ProcessState(
                self.device,
                self.device_index,
                self.labels[0],
                self.workload,
                self.energy_j,
                self.power_w,
                self.emissions_g,
                self.marginal_g,
                self.embodied_g,
                self.market_g,
            )
        return self.state


class ProcessLedger:
    """Per-series totals of attributed energy and emissions for one node, GPU and CPU alike.

    A series is identified by the device (GPU uuid, "" for CPU) and the workload fields of the
    ``group_by`` level; labels outside the level are "". The sampler calls ``add`` for every process
    that held a device in the interval (with 0 J too: that keeps the series alive), then
    ``end_interval``, then ``states``.

    Cardinality: each device has at most ``max_series`` own series plus one ``comm="other"`` series.
    A key that arrives while its device is full is folded into "other" and stays folded while it
    keeps coming back (sticky), and a key with its own series keeps it: so every counter only goes up.
    A series (or folded key) not seen for more than ``retention_s`` is dropped, freeing its slot.

    Identity: at the pid level the key is (pid, start time), so a reused PID never adds to the ended
    process' counter. If the new process has exactly the labels of a retained one (same pid, comm,
    user, ...), the retained series is dropped and the new one starts from 0, which Prometheus reads as
    a counter reset; if both are live in the same interval they share the series.
    """

    def __init__(self, group_by: str = "pid", max_series: int = 500, retention_s: float = 600.0) -> None:
        if group_by not in GROUP_BY:
            raise ValueError(f"unknown group-by level {group_by!r} (use one of {', '.join(GROUP_BY)})")
        if max_series < 1:
            raise ValueError(f"max series must be >= 1, got {max_series}")
        if not (math.isfinite(retention_s) and retention_s >= 0):
            raise ValueError(f"retention must be >= 0 seconds, got {retention_s}")
        self.group_by = group_by
        self.max_series = max_series
        self.retention_s = retention_s
        self._series: dict[Key, _Series] = {}  # key (device first) -> series, "other" included
        self._by_labels: dict[tuple[str, Labels], Key] = {}
        self._own: dict[str, int] = {}  # device -> number of own series
        self._folded: dict[Key, float] = {}  # folded key -> last seen
        self._order: list[Key] | None = None
        self.folded_total = 0  # keys ever folded into "other"
        self.dropped_total = 0  # series removed after their retention ran out

    # -- keys and labels -------------------------------------------------------------------------

    def _key(self, device: str, pid: int, start_time: float | None, w: Workload) -> Key:
        level = self.group_by
        if level == "pid":
            return (device, pid, start_time)
        if level == "container":
            return (device, w.container_id)
        if level == "pod":
            return (device, w.pod_uid or w.pod, w.namespace)
        if level == "slurm_job":
            return (device, w.slurm_job_id)
        return (device, w.user)

    def _labels(self, pid: int, w: Workload) -> tuple[Labels, str]:
        """The series' labels (those outside the level left "") and the pod UID it carries."""
        level = self.group_by
        if level == "pid":
            return (str(pid), w.comm, w.user, w.container_id, w.pod, w.namespace, w.slurm_job_id), w.pod_uid
        if level == "container":
            return ("", "", "", w.container_id, w.pod, w.namespace, ""), w.pod_uid
        if level == "pod":
            return ("", "", "", "", w.pod, w.namespace, ""), w.pod_uid
        if level == "slurm_job":
            return ("", "", "", "", "", "", w.slurm_job_id), ""
        return ("", "", w.user, "", "", "", ""), ""

    @staticmethod
    def _other_key(device: str) -> Key:
        return (device, None, OTHER_COMM)  # None never appears in a real key's second place

    def _other(self, device: str, device_index: str, now: float) -> _Series:
        key = self._other_key(device)
        series = self._series.get(key)
        if series is None:
            series = _Series(device, device_index, ("", OTHER_COMM, "", "", "", "", ""), "", now)
            self._series[key] = series
            self._order = None
        return series

    # -- accumulation ----------------------------------------------------------------------------

    def add(
        self,
        device: str,
        device_index: str,
        pid: int,
        start_time: float | None,
        workload: Workload,
        joules: float,
        interval_s: float,
        now: float,
        grams: float = 0.0,
        marginal_grams: float | None = None,
        embodied_grams: float = 0.0,
        market_grams: float | None = None,
    ) -> None:
        """Charge one process' share of one interval to its series (or to "other")."""
        key = self._key(device, pid, start_time, workload)
        series = self._series.get(key)
        if series is None:
            if key in self._folded:
                self._folded[key] = now
                series = self._other(device, device_index, now)
            else:
                labels, pod_uid = self._labels(pid, workload)
                series = self._new_series(key, labels, pod_uid, device, device_index, now)
        series.charge(joules, interval_s, now, grams, marginal_grams, embodied_grams, market_grams)

    def _new_series(
        self, key: Key, labels: Labels, pod_uid: str, device: str, device_index: str, now: float
    ) -> _Series:
        clash = self._by_labels.get((device, labels))
        if clash is not None:
            old = self._series[clash]
            if old.seen:
                self._series[key] = old  # same labels live at once: one series, as Prometheus sees it
                return old
            self._remove(clash)
        if self._own.get(device, 0) >= self.max_series:
            self._folded[key] = now
            self.folded_total += 1
            return self._other(device, device_index, now)
        series = _Series(device, device_index, labels, pod_uid, now)
        self._series[key] = series
        self._by_labels[(device, labels)] = key
        self._own[device] = self._own.get(device, 0) + 1
        self._order = None
        return series

    def _remove(self, key: Key) -> None:
        series = self._series.pop(key)
        self._order = None
        # Keys aliased onto the same series (same labels live at once) go with it.
        for alias in [k for k, s in self._series.items() if s is series]:
            del self._series[alias]
        if key[1:] == self._other_key(series.device)[1:]:
            return
        if self._by_labels.get((series.device, series.labels)) is not None:
            del self._by_labels[(series.device, series.labels)]
            self._own[series.device] -= 1
            if not self._own[series.device]:
                del self._own[series.device]

    def end_interval(self, now: float) -> None:
        """Close the interval: set each series' power, zero for those not seen; drop expired ones."""
        expired: list[Key] = []
        done: set[int] = set()
        for key, series in self._series.items():
            if id(series) in done:
                continue
            done.add(id(series))
            power = series.interval_j / series.interval_s if series.seen and series.interval_s > 0 else 0.0
            if power != series.power_w:
                series.power_w = power
                series.state = None
            series.interval_j = 0.0
            series.interval_s = 0.0
            series.seen = False
            if now - series.last_seen > self.retention_s:
                expired.append(key)
        for key in expired:
            if key in self._series:
                self._remove(key)
                if key[1:] != (None, OTHER_COMM):
                    self.dropped_total += 1
        for key in [k for k, seen in self._folded.items() if now - seen > self.retention_s]:
            del self._folded[key]

    def states(self, now: float) -> tuple[ProcessState, ...]:
        """Every series as ProcessState (unchanged series reuse their last object), GPU and CPU alike."""
        if self._order is None:
            seen: set[int] = set()
            order = []
            for key, series in self._series.items():
                if id(series) not in seen:
                    seen.add(id(series))
                    order.append(key)
            self._order = order
        return tuple(self._series[k].build() for k in self._order)

    def series_count(self, device: str) -> int:
        """Own series of a device, "other" not included."""
        return self._own.get(device, 0)

    # -- state file ------------------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        """JSON-ready totals: the group-by level, every series with its key and labels, folded keys."""
        series = []
        for key in self.states_order():
            s = self._series[key]
            series.append(
                {
                    "key": list(key),
                    "device": s.device,
                    "device_index": s.device_index,
                    "labels": list(s.labels),
                    "pod_uid": s.pod_uid,
                    "energy_j": s.energy_j,
                    "emissions_g": s.emissions_g,
                    "marginal_g": s.marginal_g,
                    "embodied_g": s.embodied_g,
                    "market_g": s.market_g,
                }
            )
        return {
            "group_by": self.group_by,
            "series": series,
            "folded": [list(k) for k in self._folded],
            "folded_total": self.folded_total,
        }

    def states_order(self) -> list[Key]:
        self.states(0.0)
        assert self._order is not None
        return list(self._order)

    @staticmethod
    def check(data: Any) -> None:
        """Raise ValueError if ``data`` holds a total no series can have (negative, not finite) or a key
        that is not made of plain values, so that a damaged state file is refused whole rather than
        half taken in. Records that are merely from another version are left for ``restore`` to skip."""
        if not isinstance(data, dict):
            raise ValueError("process totals must be an object")
        records = data.get("series") or []
        folded = data.get("folded") or []
        if not isinstance(records, list) or not isinstance(folded, list):
            raise ValueError("process series and folded keys must be lists")
        for n, record in enumerate(records):
            if not isinstance(record, dict):
                raise ValueError(f"process series {n} must be an object")
            _check_key(record.get("key"), f"process series {n}")
            for name in ("energy_j", "emissions_g", "marginal_g", "embodied_g"):
                value = record.get(name)
                if value is None:
                    continue
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"process series {n}: {name} must be a number, got {value!r}")
                if not math.isfinite(value) or value < 0:
                    raise ValueError(f"process series {n}: {name} must be finite and non-negative")
        for n, key in enumerate(folded):
            _check_key(key, f"folded key {n}")

    def restore(self, data: Any, now: float) -> int:
        """Take back totals from ``dump()``; returns how many series came back.

        Nothing is restored when the group-by level changed (the keys mean something else then) or
        the data is not what ``dump`` writes. Restored series count as seen ``now``, so they live
        through one retention period and continue if the same process (same pid and start time)
        is still running. Series beyond ``max_series`` add their totals to the device's "other".
        """
        if not isinstance(data, dict) or data.get("group_by") != self.group_by:
            return 0
        restored = 0
        for record in data.get("series") or []:
            try:
                key: Key = tuple(record["key"])
                pid, comm, user, container_id, pod, namespace, slurm = (str(v) for v in record["labels"])
                labels: Labels = (pid, comm, user, container_id, pod, namespace, slurm)
                device, device_index = str(record["device"]), str(record["device_index"])
                totals = (
                    float(record["energy_j"]),
                    float(record["emissions_g"]),
                    None if record.get("marginal_g") is None else float(record["marginal_g"]),
                    float(record["embodied_g"]),
                    None if record.get("market_g") is None else float(record["market_g"]),
                )
            except (KeyError, TypeError, ValueError):  # a record from another version: skip it
                continue
            if key in self._series:
                continue
            if key[1:] == (None, OTHER_COMM):
                series = self._other(device, device_index, now)
            else:
                pod_uid = str(record.get("pod_uid", ""))
                series = self._new_series(key, labels, pod_uid, device, device_index, now)
            series.energy_j += totals[0]
            series.emissions_g += totals[1]
            if totals[2] is not None:
                series.marginal_g = (series.marginal_g or 0.0) + totals[2]
            series.embodied_g += totals[3]
            if totals[4] is not None:
                series.market_g = (series.market_g or 0.0) + totals[4]
            series.last_seen = now
            series.state = None
            restored += 1
        for raw in data.get("folded") or []:
            if isinstance(raw, list):
                self._folded.setdefault(tuple(raw), now)
        total = data.get("folded_total")
        if isinstance(total, int):
            self.folded_total = max(self.folded_total, total)
        return restored


def _check_key(key: Any, where: str) -> None:
    # A key comes back as a tuple of its JSON list; anything but plain values would not be hashable.
    if key is None:
        return  # a record without a key is from another version: restore() skips it
    if not isinstance(key, list) or not all(v is None or isinstance(v, str | int | float) for v in key):
        raise ValueError(f"{where}: key must be a list of plain values, got {key!r}")
