"""This node's pods from the Kubernetes API server: list, then watch, with the pod's service account.

The API follows "Efficient detection of changes" in the Kubernetes API concepts
(https://kubernetes.io/docs/reference/using-api/api-concepts/): a list returns the collection's
``metadata.resourceVersion``; a watch from that version streams one JSON event per line (ADDED,
MODIFIED, DELETED, BOOKMARK, ERROR); a watch whose version has left the server's history fails with
410 Gone, as an HTTP status or as an ERROR event holding a Status with ``code: 410``, and the client
must list again. Only metadata is asked for (``as=PartialObjectMetadata``): the exporter never
receives pod specs, so no environment value of any workload reaches it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import requests

from exporter.podlookup import LookupHealth, PodRef, http_error_kind
from exporter.secrets import bearer_header

log = logging.getLogger(__name__)

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
LIST_ACCEPT = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
WATCH_ACCEPT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"


def in_cluster_url(environ: dict[str, str] | None = None) -> str:
    """The API server as a pod reaches it: the env vars every pod gets (what client-go uses), else DNS."""
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if host and port:
        return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    return "https://kubernetes.default.svc"


class _Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class ApiServerPods:
    """Pod UID -> (name, namespace) for the pods on one node, kept current by a list-and-watch thread.

    Deleted pods (and pods missing from a new list) stay known for ``keep_deleted_s``: a finished
    process' series keep their pod label while they are retained. The service account token is read
    again for every request (kubelet-mounted tokens are rotated), and the API server's certificate is
    checked against ``ca_file``.
    """

    def __init__(
        self,
        node_name: str,
        url: str,
        token_file: str | None = f"{SERVICE_ACCOUNT}/token",
        ca_file: str | None = f"{SERVICE_ACCOUNT}/ca.crt",
        *,
        request_timeout_s: float = 10.0,
        watch_timeout_s: int = 300,
        retry_s: float = 5.0,
        max_retry_s: float = 60.0,
        keep_deleted_s: float = 900.0,
        max_pods: int = 20000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not node_name:
            raise ValueError("node name is required")
        self.node_name = node_name
        self.url = url.rstrip("/")
        self.token_file = token_file
        self.ca_file = ca_file
        self.request_timeout_s = request_timeout_s
        self.watch_timeout_s = watch_timeout_s
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        self.keep_deleted_s = keep_deleted_s
        self.max_pods = max_pods
        self.clock = clock
        self.health = LookupHealth("apiserver")
        self._pods: dict[str, PodRef] = {}
        self._gone: dict[str, float] = {}  # uid -> when it was deleted or last missing from a list
        self._lock = threading.Lock()
        self._session = requests.Session()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._response: requests.Response | None = None
        self.resource_version: str | None = None

    # -- what the resolver asks ---------------------------------------------------------------------

    def get(self, uid: str) -> PodRef | None:
        with self._lock:
            return self._pods.get(uid)

    def uid_of(self, namespace: str, name: str) -> str:
        """The UID of a live pod by name ("" if unknown): pod-resources names pods without UIDs."""
        with self._lock:
            for uid, ref in self._pods.items():
                if ref.name == name and ref.namespace == namespace and uid not in self._gone:
                    return uid
        return ""

    # -- the thread -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="apiserver-pods", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            _shutdown(response)
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        delay = self.retry_s
        while not self._stop.is_set():
            try:
                if self.resource_version is None:
                    self.resource_version = self.list_pods()
                self.watch_once(self.resource_version)
                delay = self.retry_s
            except _Expired:
                self.health.note("expired")
                log.info("pod watch expired (410 Gone): listing again")
                self.resource_version = None
            except Exception as exc:  # every failure is counted and retried; attribution goes on
                if self._stop.is_set():
                    return
                kind = http_error_kind(exc)
                self.health.fail(kind)
                log.warning("pod lookup from the API server failed (%s): %s", kind, _brief(exc))
                if kind in ("malformed",):
                    self.resource_version = None
                self._stop.wait(delay)
                delay = min(delay * 2, self.max_retry_s)

    # -- one list, one watch ------------------------------------------------------------------------

    def _headers(self, accept: str) -> dict[str, str]:
        return {"Accept": accept, **bearer_header(self.token_file)}

    def _verify(self) -> bool | str:
        return self.ca_file if self.ca_file and os.path.exists(self.ca_file) else True

    def _selector(self) -> str:
        return urllib.parse.quote(f"spec.nodeName={self.node_name}", safe="")

    def list_pods(self) -> str:
        """List this node's pods (every page); returns the collection's resourceVersion."""
        pods: dict[str, PodRef] = {}
        resource_version = ""
        token = ""
        while True:
            query = f"fieldSelector={self._selector()}&limit=500"
            if token:
                query += "&continue=" + urllib.parse.quote(token, safe="")
            response = self._session.get(
                f"{self.url}/api/v1/pods?{query}",
                headers=self._headers(LIST_ACCEPT),
                verify=self._verify(),
                timeout=self.request_timeout_s,
            )
            if response.status_code == 410:
                # The continue token expired between pages: start the list from scratch.
                raise _Expired()
            response.raise_for_status()
            body = response.json()
            if not isinstance(body, dict) or not isinstance(body.get("items"), list):
                raise ValueError("list response is not a pod list")
            for item in body["items"]:
                ref = _pod_ref(item)
                if ref is not None:
                    pods[ref.uid] = ref
            meta = body.get("metadata") or {}
            resource_version = str(meta.get("resourceVersion") or "")
            token = str(meta.get("continue") or "")
            if not token:
                break
        if not resource_version:
            raise ValueError("list response has no metadata.resourceVersion")
        now = self.clock()
        with self._lock:
            for uid in self._pods:
                if uid not in pods:
                    self._gone.setdefault(uid, now)
            for uid in pods:
                self._gone.pop(uid, None)
            self._pods.update(pods)
            self._purge(now)
            live = len(self._pods) - len(self._gone)
        self.health.ok(live)
        return resource_version

    def watch_once(self, resource_version: str) -> None:
        """Follow one watch from ``resource_version`` until the server ends it; raises _Expired on 410."""
        query = (
            f"fieldSelector={self._selector()}&watch=1&allowWatchBookmarks=true"
            f"&resourceVersion={urllib.parse.quote(resource_version, safe='')}"
            f"&timeoutSeconds={self.watch_timeout_s}"
        )
        response = self._session.get(
            f"{self.url}/api/v1/pods?{query}",
            headers=self._headers(WATCH_ACCEPT),
            verify=self._verify(),
            # The read timeout bounds silence on the stream; the server closes it after timeoutSeconds.
            timeout=(self.request_timeout_s, self.watch_timeout_s + 30),
            stream=True,
        )
        self._response = response
        try:
            if response.status_code == 410:
                raise _Expired()
            response.raise_for_status()
            with self._lock:
                live = len(self._pods) - len(self._gone)
            self.health.ok(live)
            for line in _lines(response):
                if self._stop.is_set():
                    return
                self._apply(json.loads(line))
        finally:
            self._response = None
            response.close()

    def _apply(self, event: Any) -> None:
        if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
            raise ValueError("watch event without an object")
        kind, obj = event.get("type"), event["object"]
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Expired()
            raise ValueError(f"watch error event: {obj.get('reason') or obj.get('code')}")
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "BOOKMARK":
            if version:
                self.resource_version = str(version)
            return
        ref = _pod_ref(obj)
        if kind not in ("ADDED", "MODIFIED", "DELETED") or ref is None:
            raise ValueError(f"unexpected watch event {kind!r}")
        now = self.clock()
        with self._lock:
            if kind == "DELETED":
                if ref.uid in self._pods:
                    self._gone[ref.uid] = now
            else:
                self._pods[ref.uid] = ref
                self._gone.pop(ref.uid, None)
            self._purge(now)
            live = len(self._pods) - len(self._gone)
        if version:
            self.resource_version = str(version)
        self.health.count_pods(live)

    def _purge(self, now: float) -> None:
        for uid, since in list(self._gone.items()):
            if now - since >= self.keep_deleted_s:
                del self._gone[uid]
                self._pods.pop(uid, None)
        # A bound on memory whatever the server sends: forget the oldest deleted pods first.
        excess = len(self._pods) - self.max_pods
        if excess > 0:
            for uid, _ in sorted(self._gone.items(), key=lambda item: item[1])[:excess]:
                del self._gone[uid]
                self._pods.pop(uid, None)


def _pod_ref(item: Any) -> PodRef | None:
    meta = item.get("metadata") if isinstance(item, dict) else None
    if not isinstance(meta, dict):
        return None
    uid, name, namespace = meta.get("uid"), meta.get("name"), meta.get("namespace", "")
    if isinstance(uid, str) and uid and isinstance(name, str) and isinstance(namespace, str):
        return PodRef(name, namespace, uid)
    return None


MAX_EVENT_BYTES = 8 << 20


def _lines(response: requests.Response) -> Iterator[bytes]:
    """The stream's lines as they arrive; a line longer than any pod's metadata is refused, not buffered."""
    pending = b""
    for chunk in response.iter_content(chunk_size=None):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield line
        if len(pending) > MAX_EVENT_BYTES:
            raise ValueError("watch event larger than 8 MiB")
    if pending.strip():
        yield pending


def _shutdown(response: requests.Response) -> None:
    """Unblock a watch waiting for its next event, from another thread.

    Closing the response there can wait on the reading thread's TLS lock; shutting the socket down
    makes the blocked read return at once, and the watch thread then ends by itself.
    """
    connection = getattr(response.raw, "connection", None) or getattr(response.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _brief(exc: BaseException) -> str:
    # Never the URL's query or a header: only the kind of failure and the status.
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__
