"""A fake Kubernetes API server for pods: HTTPS on loopback, list and watch as the real one documents them.

What it models (Kubernetes API concepts, https://kubernetes.io/docs/reference/using-api/api-concepts/,
"Efficient detection of changes", "Watch bookmarks", "Retrieving large results sets in chunks", and the
API conventions' Status object):

- every change bumps one cluster-wide resourceVersion; a list answers the collection's version in
  ``metadata.resourceVersion``, pages with ``limit``/``continue``;
- ``watch=1&resourceVersion=RV`` streams every later change as one JSON event per line (chunked
  HTTP/1.1), each object carrying its own ``metadata.resourceVersion``; with ``allowWatchBookmarks``
  a BOOKMARK (only ``metadata.resourceVersion`` set) may come at any time, here before the server
  ends the watch after ``timeoutSeconds``;
- a version older than the server's history (``compact()``) is answered with 200 and an ERROR event
  holding a Status with ``code: 410`` and ``reason: Expired`` (what the API server sends once a watch
  has started), or, with ``gone_as_status``, with an HTTP 410 Status (what a list with an expired
  ``continue`` token gets);
- no or a wrong bearer token: 401 Status ``Unauthorized``; a token without RBAC: 403 Status
  ``Forbidden`` naming the service account;
- ``fieldSelector=spec.nodeName=<node>`` filters by node; other field selectors are refused (400);
- ``Accept: ...;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1`` (and ``as=PartialObjectMetadata``
  for watches) returns metadata only; otherwise whole pods, including their containers' env values.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme

ACCOUNT = "system:serviceaccount:ai-footprint:footprint-exporter"


@dataclass
class Pod:
    name: str
    namespace: str
    node: str
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    resource_version: int = 0

    def full(self) -> dict[str, Any]:
        return {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": self.meta(),
            "spec": {
                "nodeName": self.node,
                "containers": [{"name": "main", "env": [{"name": "API_KEY", "value": "SECRET-VALUE"}]}],
            },
            "status": {"phase": "Running"},
        }

    def partial(self) -> dict[str, Any]:
        return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": self.meta()}

    def meta(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "uid": self.uid,
            "resourceVersion": str(self.resource_version),
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "managedFields": [{"manager": "kubelet", "operation": "Update"}],
        }


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class FakeApiServer:
    """State and behaviour; ``serve()`` puts it on a loopback HTTPS port."""

    def __init__(self, token: str = "good-token") -> None:
        self.token = token
        self.rbac = True
        self.gone_as_status = False
        self.fail_lists_with: int | None = None  # e.g. 500 for every list
        self.version = 100
        self.oldest = 100  # versions older than this have left the history
        self.pods: dict[str, Pod] = {}
        self.events: list[tuple[int, str, Pod]] = []
        self.requests: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.closing = False
        self.url = ""

    # -- changes ---------------------------------------------------------------------------------

    def _bump(self, kind: str, pod: Pod) -> None:
        self.version += 1
        pod.resource_version = self.version
        self.events.append(
            (self.version, kind, Pod(pod.name, pod.namespace, pod.node, pod.uid, self.version))
        )
        self.cond.notify_all()

    def add(self, name: str, namespace: str, node: str, uid: str | None = None) -> Pod:
        with self.cond:
            pod = Pod(name, namespace, node, uid or str(uuid.uuid4()))
            self.pods[pod.uid] = pod
            self._bump("ADDED", pod)
            return pod

    def delete(self, uid: str) -> None:
        with self.cond:
            pod = self.pods.pop(uid)
            self._bump("DELETED", pod)

    def compact(self) -> None:
        """Drop the watch history: every version before now is expired."""
        with self.cond:
            self.oldest = self.version
            self.events.clear()

    # -- requests --------------------------------------------------------------------------------

    def authorise(self, header: str | None) -> tuple[int, dict[str, Any]] | None:
        if header != f"Bearer {self.token}":
            return 401, status(401, "Unauthorized", "Unauthorized")
        if not self.rbac:
            message = (
                f'pods is forbidden: User "{ACCOUNT}" cannot list resource "pods" in API group "" '
                "at the cluster scope"
            )
            return 403, status(403, "Forbidden", message)
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api: FakeApiServer

    def log_message(self, *args: object) -> None:
        pass

    def _json(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        api = self.api
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        accept = self.headers.get("Accept", "")
        api.requests.append({"path": parsed.path, "query": query, "accept": accept})
        if parsed.path != "/api/v1/pods":
            self._json(404, status(404, "NotFound", "the server could not find the requested resource"))
            return
        denied = api.authorise(self.headers.get("Authorization"))
        if denied is not None:
            self._json(*denied)
            return
        selector = query.get("fieldSelector", "")
        if selector and not selector.startswith("spec.nodeName="):
            self._json(400, status(400, "BadRequest", f'field label not supported: "{selector}"'))
            return
        node = selector.partition("=")[2] if selector else None
        if query.get("watch") in ("1", "true"):
            self._watch(query, node, "as=PartialObjectMetadata;" in accept)
        else:
            self._list(query, node, "as=PartialObjectMetadataList;" in accept)

    def _list(self, query: dict[str, str], node: str | None, partial: bool) -> None:
        api = self.api
        if api.fail_lists_with is not None:
            self._json(api.fail_lists_with, status(api.fail_lists_with, "InternalError", "etcd is unhappy"))
            return
        limit = int(query.get("limit", "0") or 0)
        with api.cond:
            pods = sorted(
                (p for p in api.pods.values() if node is None or p.node == node), key=lambda p: p.uid
            )
            version = api.version
        start = 0
        if query.get("continue"):
            token = json.loads(urllib.parse.unquote(query["continue"]))
            if token["rv"] < api.oldest:
                self._json(410, status(410, "Expired", "The provided continue parameter is too old"))
                return
            start, version = token["start"], token["rv"]
        page = pods[start : start + limit] if limit else pods[start:]
        meta: dict[str, Any] = {"resourceVersion": str(version)}
        if limit and start + limit < len(pods):
            meta["continue"] = json.dumps({"start": start + limit, "rv": version})
        kind = "PartialObjectMetadataList" if partial else "PodList"
        items = [p.partial() if partial else p.full() for p in page]
        api_version = "meta.k8s.io/v1" if partial else "v1"
        self._json(200, {"kind": kind, "apiVersion": api_version, "metadata": meta, "items": items})

    def _watch(self, query: dict[str, str], node: str | None, partial: bool) -> None:
        api = self.api
        since = int(query.get("resourceVersion", "0") or 0)
        timeout = float(query.get("timeoutSeconds", "30"))
        if since < api.oldest:
            gone = status(410, "Expired", f"too old resource version: {since} ({api.version})")
            if api.gone_as_status:
                self._json(410, gone)
                return
            self._start_stream()
            self._chunk({"type": "ERROR", "object": gone})
            self._end_stream()
            return
        self._start_stream()
        deadline = time.monotonic() + timeout
        sent = since
        while True:
            with api.cond:
                pending = [e for e in api.events if e[0] > sent]
                if not pending and not api.closing:
                    api.cond.wait(max(0.0, min(0.2, deadline - time.monotonic())))
                    pending = [e for e in api.events if e[0] > sent]
                latest = api.version
            for version, kind, pod in pending:
                sent = version
                if node is None or pod.node == node:
                    self._chunk({"type": kind, "object": pod.partial() if partial else pod.full()})
            if api.closing or time.monotonic() >= deadline:
                break
        if query.get("allowWatchBookmarks") == "true":
            kind = "PartialObjectMetadata" if partial else "Pod"
            api_version = "meta.k8s.io/v1" if partial else "v1"
            bookmark = {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": str(latest)}}
            self._chunk({"type": "BOOKMARK", "object": bookmark})
        self._end_stream()

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, event: dict[str, Any]) -> None:
        data = json.dumps(event).encode() + b"\n"
        try:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        except OSError:
            pass  # the client went away

    def _end_stream(self) -> None:
        # The connection stays open for the next request, as the API server's (Go net/http) does after
        # a complete chunked response. Closing it here without saying "Connection: close" made the
        # client reuse a connection the fake was closing at that moment: a spurious "connection" error.
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True


@dataclass
class Served:
    api: FakeApiServer
    url: str
    ca_file: Path
    token_file: Path


@contextmanager
def serve(tmp: Path, api: FakeApiServer | None = None) -> Iterator[Served]:
    """The fake on https://127.0.0.1:<port>, with its CA and a token file under ``tmp``."""
    api = api or FakeApiServer()
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp / "apiserver-ca.crt"
    ca.cert_pem.write_to_path(str(ca_file))
    token_file = tmp / "token"
    token_file.write_text(api.token + "\n")
    handler = type("Handler", (_Handler,), {"api": api})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    api.url = f"https://127.0.0.1:{server.server_address[1]}"
    try:
        yield Served(api, api.url, ca_file, token_file)
    finally:
        with api.cond:
            api.closing = True
            api.cond.notify_all()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
