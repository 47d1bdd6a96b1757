"""Hardware sources: each reads one kind of device (or a simulation or trace) and returns plain data."""

from __future__ import annotations

from typing import Protocol

from exporter.model import CpuReading, GpuReading, NodeReading


class SourceUnavailable(Exception):
    """The source cannot work on this machine at all (no driver, no powercap, no permission)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class SourceReadError(Exception):
    """One read of a source failed; ``kind`` is the short reason counted in footprint_source_errors_total."""

    def __init__(self, kind: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        # A service that said when to come back (HTTP 503 with Retry-After): the poller waits that long.
        self.retry_after_s = retry_after_s


class GpuSource(Protocol):
    """Reads every GPU once per call.

    ``read`` returns one reading per known GPU; a GPU that fails comes back with ``up=False`` and an
    ``error`` while the others are read normally. An exception from ``read`` means the whole source
    failed this time (the sampler counts it and drops all GPU series for that sample).
    ``now`` is the sampler's monotonic clock; simulated and replay sources use it as their time base.
    """

    name: str

    def read(self, now: float) -> list[GpuReading]: ...

    def close(self) -> None: ...


class CpuSource(Protocol):
    """Reads CPU energy domains once per call; cumulative energy is unwrapped by the source."""

    name: str  # "rapl" or "estimated"

    def read(self, now: float) -> list[CpuReading]: ...

    def close(self) -> None: ...


class NodeSource(Protocol):
    """Reads whole-node input power from the BMC once per call (slow: called from the node poller only).

    ``read`` raises an exception with a ``kind`` attribute (timeout, auth, http_5xx, malformed, ...)
    when the BMC gives no usable reading; the poller counts it and the node series go stale.
    """

    name: str  # "redfish" or "ipmi": the method label

    def read(self) -> NodeReading: ...

    def close(self) -> None: ...
