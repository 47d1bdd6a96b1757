"""Health of the pod lookups (API server, kubelet, pod-resources) and the self-metrics that show it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import requests
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.catalogue import CATALOGUE
from exporter.secrets import SecretUnavailable

LOOKUPS = ("apiserver", "kubelet", "pod-resources")


@dataclass(frozen=True, slots=True)
class PodRef:
    """A pod as a lookup names it; ``uid`` is "" where the lookup does not know it (pod-resources)."""

    name: str
    namespace: str
    uid: str = ""


class LookupHealth:
    """Whether a lookup's last attempt worked, its failures by kind and how many pods it knows.

    Written by the lookup's own thread (or the sampler), read by scrapes: a lock keeps the pair
    (up, errors) consistent, and nothing here does I/O.
    """

    def __init__(self, lookup: str) -> None:
        if lookup not in LOOKUPS:
            raise ValueError(f"unknown lookup {lookup!r}")
        self.lookup = lookup
        self._lock = threading.Lock()
        self._up = False
        self._errors: dict[str, int] = {}
        self._pods = 0

    def ok(self, pods: int) -> None:
        with self._lock:
            self._up = True
            self._pods = pods

    def count_pods(self, pods: int) -> None:
        """The number of pods known changed without a new attempt (a watch event)."""
        with self._lock:
            self._pods = pods

    def fail(self, kind: str) -> None:
        with self._lock:
            self._up = False
            self._errors[kind] = self._errors.get(kind, 0) + 1

    def note(self, kind: str) -> None:
        """Count an event that is not a failure (a watch expired and was listed again)."""
        with self._lock:
            self._errors[kind] = self._errors.get(kind, 0) + 1

    def read(self) -> tuple[bool, dict[str, int], int]:
        with self._lock:
            return self._up, dict(self._errors), self._pods


def http_error_kind(exc: BaseException) -> str:
    """A short, bounded label value for a failed HTTP request to the API server or the kubelet."""
    if isinstance(exc, SecretUnavailable):
        return "token"  # the token file exists but cannot be read or is empty
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        code = exc.response.status_code
        if code == 401:
            return "unauthorized"  # bad or expired token
        if code == 403:
            return "forbidden"  # authenticated, but RBAC does not allow it
        return f"http_{code // 100}xx"
    if isinstance(exc, requests.exceptions.SSLError):
        return "tls"
    if isinstance(exc, requests.Timeout):
        return "timeout"
    if isinstance(exc, requests.ConnectionError):
        return "connection"
    if isinstance(exc, ValueError | KeyError | TypeError):
        return "malformed"
    return "other"


class LookupCollector(Collector):
    """Serves the health of every configured pod lookup and the resolver's unnamed-pod counter."""

    def __init__(self, lookups: Iterable[LookupHealth], unresolved_total: Callable[[], int]) -> None:
        self.lookups = tuple(lookups)
        self.unresolved_total = unresolved_total

    def collect(self) -> Iterator[Metric]:
        up = _gauge("footprint_workload_lookup_up")
        errors = _counter("footprint_workload_lookup_errors_total")
        pods = _gauge("footprint_workload_lookup_pods")
        for health in self.lookups:
            ok, by_kind, known = health.read()
            up.add_metric([health.lookup], 1 if ok else 0)
            pods.add_metric([health.lookup], known)
            for kind, count in sorted(by_kind.items()):
                errors.add_metric([health.lookup, kind], count)
        unresolved = _counter("footprint_workload_pod_unresolved_total")
        unresolved.add_metric([], self.unresolved_total())
        yield from (up, errors, pods, unresolved)


def _gauge(name: str) -> GaugeMetricFamily:
    spec = CATALOGUE[name]
    return GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)


def _counter(name: str) -> CounterMetricFamily:
    spec = CATALOGUE[name]
    return CounterMetricFamily(spec.family, spec.help, labels=spec.labels)
