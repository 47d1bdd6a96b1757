"""Who a process belongs to: container, Kubernetes pod, Slurm job and user, from /proc and the kubelet."""

from __future__ import annotations

import logging
import math
import os
import pwd
import re
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import requests

from exporter.model import Workload
from exporter.podlookup import LookupHealth, PodRef, http_error_kind
from exporter.secrets import bearer_header

log = logging.getLogger(__name__)

# A container id is 64 hex digits, bare (cgroupfs driver: /docker/<id>, /kubepods/.../<id>) or wrapped
# in a runtime's systemd scope (docker-<id>.scope, cri-containerd-<id>.scope, crio-<id>.scope, ...).
# crio-conmon-<id>.scope is CRI-O's monitor process, not the container, so it is left out on purpose.
_CONTAINER_SEGMENT = re.compile(
    r"(?:(?:docker|cri-containerd|containerd|crio|libpod|nerdctl)-)?(?P<id>[0-9a-f]{64})(?:\.scope)?"
)
# Pod UIDs: a UUID (dashes with cgroupfs, underscores inside systemd slice names) or, for static pods,
# the kubelet's 32-hex hash of the manifest.
_POD_UID = re.compile(
    r"(?:^|[/-])pod(?P<uid>[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32})"
    r"(?:\.slice)?(?=/|$)"
)
# Slurm: v1 /slurm/uid_<u>/job_<id>/step_<s>/..., v2 .../slurmstepd.scope/job_<id>/step_<s>/...
_SLURM_JOB = re.compile(r"/job_(?P<job>\d+)(?=/|$)")
_CGROUP_LINE = re.compile(r"^\d+:[^:]*:(?P<path>.*)$")


@dataclass(frozen=True, slots=True)
class CgroupIdentity:
    """What a cgroup path says about a process; empty strings where it says nothing."""

    container_id: str = ""
    pod_uid: str = ""
    slurm_job_id: str = ""


def _paths(text: str) -> list[str]:
    """The cgroup paths in /proc/<pid>/cgroup content (v1 and v2 lines), or a bare path as given."""
    paths = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        match = _CGROUP_LINE.match(line)
        paths.append(match.group("path") if match else line)
    return paths


def parse_cgroup(text: str) -> CgroupIdentity:
    """Container id, Kubernetes pod UID and Slurm job id from /proc/<pid>/cgroup content or one path.

    Every hierarchy is looked at (cgroup v1 lists one per controller, v2 has the single ``0::`` line,
    hybrid systems both); the first hierarchy that names a field wins. Within one path, the deepest
    container id wins, so a Kubernetes node running inside Docker (kind) reports the pod's container.
    """
    container_id = pod_uid = slurm_job_id = ""
    for path in _paths(text):
        if not container_id:
            for segment in reversed(path.split("/")):
                match = _CONTAINER_SEGMENT.fullmatch(segment)
                if match:
                    container_id = match.group("id")
                    break
        if not pod_uid:
            pods = list(_POD_UID.finditer(path))
            if pods:
                pod_uid = pods[-1].group("uid").replace("_", "-")
        if not slurm_job_id and "slurm" in path:
            job = _SLURM_JOB.search(path)
            if job:
                slurm_job_id = job.group("job")
    return CgroupIdentity(container_id=container_id, pod_uid=pod_uid, slurm_job_id=slurm_job_id)


PodLister = Callable[[], dict[str, tuple[str, str]]]


class PodDirectory(Protocol):
    """Pod names kept current by a lookup's own thread (the API server watch); ``get`` does no I/O."""

    def get(self, uid: str) -> PodRef | None: ...


class WorkloadResolver:
    """Resolves a process to its Workload, reading /proc/<pid>/{comm,status,cgroup} under ``procfs_root``.

    Results are cached by (pid, start time), so a reused PID is resolved afresh. Processes without a
    start time are cached for ``unkeyed_ttl_s`` only. Command lines and environments are never read.
    Pod names and namespaces come from ``kubelet_pods`` (``{pod_uid: (name, namespace)}``), refreshed
    at most every ``pods_ttl_s``, or sooner (at most every ``pods_retry_s``) when a pod is unknown;
    a failing lister is logged, counted in ``lister_health`` and the last good list is kept. Or they
    come from ``pod_directory``, which a watch keeps current. A pod that neither knows gets its UID as
    the ``pod`` label, is counted in ``pods_unresolved_total``, and is looked up again after
    ``pods_retry_s`` rather than cached for the process' life.
    """

    def __init__(
        self,
        procfs_root: str = "/proc",
        kubelet_pods: PodLister | None = None,
        *,
        pods_ttl_s: float = 60.0,
        pods_retry_s: float = 10.0,
        unkeyed_ttl_s: float = 30.0,
        max_cached: int = 8192,
        clock: Callable[[], float] = time.monotonic,
        pod_directory: PodDirectory | None = None,
        lister_health: LookupHealth | None = None,
    ) -> None:
        self._root = procfs_root
        self._lister = kubelet_pods
        self._directory = pod_directory
        self.lister_health = lister_health
        self.pods_unresolved_total = 0
        self._pods_ttl_s = pods_ttl_s
        self._pods_retry_s = pods_retry_s
        self._unkeyed_ttl_s = unkeyed_ttl_s
        self._max_cached = max_cached
        self._clock = clock
        self._cache: OrderedDict[tuple[int, float | None], tuple[float, Workload]] = OrderedDict()
        self._pods: dict[str, tuple[str, str]] = {}
        self._pods_fetched_at = -math.inf
        self._pods_tried_at = -math.inf
        self._users: dict[int, str] = {}
        self.pod_list_errors_total = 0

    def resolve(
        self, pid: int, start_time: float | None, comm: str = "", user: str = "", cgroup: str | None = None
    ) -> Workload:
        now = self._clock()
        key = (pid, start_time)
        cached = self._cache.get(key)
        if cached is not None and self._fresh(cached, start_time, now):
            self._cache.move_to_end(key)
            return cached[1]
        workload = self._build(pid, comm, user, cgroup, now)
        self._cache[key] = (now, workload)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
        return workload

    def _fresh(self, cached: tuple[float, Workload], start_time: float | None, now: float) -> bool:
        at, workload = cached
        looked_up = self._lister is not None or self._directory is not None
        if looked_up and workload.pod_uid and workload.pod == workload.pod_uid:
            # No name yet (a pod seconds old, or a lookup down): ask again rather than keep the UID.
            return now - at < self._pods_retry_s
        return start_time is not None or now - at < self._unkeyed_ttl_s

    def _build(self, pid: int, comm: str, user: str, cgroup: str | None, now: float) -> Workload:
        proc = os.path.join(self._root, str(pid))
        if not comm:
            comm = _read(os.path.join(proc, "comm")).strip()
        if not user:
            user = self._user_of(_read(os.path.join(proc, "status")))
        if cgroup is None:
            cgroup = _read(os.path.join(proc, "cgroup"))
        identity = parse_cgroup(cgroup)
        pod = namespace = ""
        if identity.pod_uid:
            pod, namespace = self._pod(identity.pod_uid, now)
        return Workload(
            comm=comm,
            user=user,
            container_id=identity.container_id,
            pod_uid=identity.pod_uid,
            pod=pod,
            namespace=namespace,
            slurm_job_id=identity.slurm_job_id,
        )

    def _user_of(self, status: str) -> str:
        for line in status.splitlines():
            if line.startswith("Uid:"):
                fields = line.split()
                if len(fields) < 2 or not fields[1].isdigit():
                    return ""
                uid = int(fields[1])  # the real uid: who started the process
                name = self._users.get(uid)
                if name is None:
                    try:
                        name = pwd.getpwuid(uid).pw_name
                    except KeyError:
                        name = str(uid)  # a uid with no passwd entry (common inside containers)
                    self._users[uid] = name
                return name
        return ""

    def _pod(self, uid: str, now: float) -> tuple[str, str]:
        if self._directory is not None:
            ref = self._directory.get(uid)
            if ref is not None:
                return ref.name, ref.namespace
            if self._lister is None:
                self.pods_unresolved_total += 1
                return uid, ""
        if self._lister is None:
            return uid, ""
        stale = now - self._pods_fetched_at >= self._pods_ttl_s
        unknown = uid not in self._pods
        if (stale or unknown) and now - self._pods_tried_at >= self._pods_retry_s:
            self._pods_tried_at = now
            try:
                self._pods = dict(self._lister())
                self._pods_fetched_at = now
                if self.lister_health is not None:
                    self.lister_health.ok(len(self._pods))
            except Exception as exc:  # any failure of the lister must not stop attribution
                self.pod_list_errors_total += 1
                kind = http_error_kind(exc)
                if self.lister_health is not None:
                    self.lister_health.fail(kind)
                log.warning(
                    "kubelet pod list failed (%s), keeping the last one: %s", kind, type(exc).__name__
                )
        found = self._pods.get(uid)
        if found is None:
            self.pods_unresolved_total += 1
            return uid, ""
        return found


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""  # the process ended or we may not look; the workload fields stay empty


def _pods_from_podlist(body: Any) -> dict[str, tuple[str, str]]:
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise ValueError("response is not a PodList")
    pods: dict[str, tuple[str, str]] = {}
    for item in body["items"]:
        meta = item.get("metadata") if isinstance(item, dict) else None
        if not isinstance(meta, dict):
            continue
        uid, name, namespace = meta.get("uid"), meta.get("name"), meta.get("namespace", "")
        if isinstance(uid, str) and isinstance(name, str) and isinstance(namespace, str):
            pods[uid] = (name, namespace)
    return pods


def _pod_fetcher(url: str, token_file: str | None, ca_file: str | None, timeout_s: float) -> PodLister:
    session = requests.Session()

    def fetch() -> dict[str, tuple[str, str]]:
        # A default token or CA path that does not exist (not running in a pod) means "none": the
        # read-only kubelet port needs neither.
        headers = {"Accept": "application/json", **bearer_header(token_file)}
        verify: bool | str = ca_file if ca_file and os.path.exists(ca_file) else True
        response = session.get(url, headers=headers, timeout=timeout_s, verify=verify)
        response.raise_for_status()
        return _pods_from_podlist(response.json())

    return fetch


def kubelet_pod_lister(
    url: str, token_file: str | None, ca_file: str | None, timeout_s: float = 2.0
) -> PodLister:
    """A lister of this node's pods from the kubelet's ``/pods`` endpoint.

    ``url`` is the kubelet's base URL: ``http://127.0.0.1:10255`` (read-only port) or
    ``https://<node>:10250`` with a service-account token (``token_file``, sent as a bearer token and
    re-read on every call) and the CA that signed the kubelet's certificate (``ca_file``). The
    returned callable raises on any failure; WorkloadResolver catches and counts it.
    """
    return _pod_fetcher(url.rstrip("/") + "/pods", token_file, ca_file, timeout_s)


def apiserver_pod_lister(
    node_name: str,
    url: str = "https://kubernetes.default.svc",
    token_file: str | None = "/var/run/secrets/kubernetes.io/serviceaccount/token",
    ca_file: str | None = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
    timeout_s: float = 2.0,
) -> PodLister:
    """A lister of the pods on ``node_name`` from the Kubernetes API server (``--kubernetes.node-name``).

    Lists ``/api/v1/pods?fieldSelector=spec.nodeName=<node>`` with the in-cluster service account by
    default; the account needs ``list`` on ``pods``.
    """
    query = urllib.parse.quote(f"spec.nodeName={node_name}", safe="")
    return _pod_fetcher(
        f"{url.rstrip('/')}/api/v1/pods?fieldSelector={query}", token_file, ca_file, timeout_s
    )
