"""Which pod holds which GPU: the kubelet's pod-resources gRPC API on a unix socket (as dcgm-exporter).

The service is ``v1.PodResourcesLister`` (Kubernetes ``k8s.io/kubelet/pkg/apis/podresources/v1``,
GA since 1.28); ``List`` takes an empty ``ListPodResourcesRequest`` and answers with
``ListPodResourcesResponse``::

    ListPodResourcesResponse { repeated PodResources pod_resources = 1; }
    PodResources            { string name = 1; string namespace = 2;
                              repeated ContainerResources containers = 3; }
    ContainerResources      { string name = 1; repeated ContainerDevices devices = 2;
                              cpu_ids = 3; memory = 4; dynamic_resources = 5; }
    ContainerDevices        { string resource_name = 1; repeated string device_ids = 2; topology = 3; }

For ``nvidia.com/gpu`` the NVIDIA device plugin's device ids are GPU UUIDs (``deviceIDStrategy: uuid``,
its default) or NVML indices (``index``); with time-slicing or MPS sharing they carry a replica
suffix (``GPU-...::3``), and such a GPU is shared, never owned. The API answers names and
namespaces, not pod UIDs: those come from the API server lookup when it runs.

MIG devices (k8s-device-plugin ``internal/rm/device_map.go`` and ``devices.go``): with MIG strategy
``mixed`` each profile is its own resource, ``nvidia.com/mig-<profile>`` (``nvidia.com/mig-1g.10gb``);
with ``single`` they are ``nvidia.com/gpu``. Either way the device id is the MIG device's UUID as NVML
answers it (``BuildDevice`` sets the id from ``GetUUID``): ``MIG-<uuid>`` from driver R470 on,
``MIG-GPU-<gpu uuid>/<gi>/<ci>`` before (NVML change log); replicas carry ``::N`` as GPUs do.

The transport is HTTP/2 (the ``h2`` library) with gRPC's framing done here: a five-byte prefix per
message, the status in the trailers. grpcio would do the same for about 27 MB more resident memory,
half the exporter's budget.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from exporter.podlookup import LookupHealth, PodRef

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
LIST_METHOD = "/v1.PodResourcesLister/List"
GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
MAX_RESPONSE_BYTES = 16 << 20
# gRPC status codes (https://grpc.github.io/grpc/core/md_doc_statuscodes.html) as error kinds. The
# kubelet answers ResourceExhausted when its pod-resources rate limit is hit.
_GRPC_KINDS = {4: "timeout", 7: "permission", 8: "rate_limited", 12: "unimplemented", 14: "unavailable"}


class PodResourcesError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class ContainerDevices:
    pod: str
    namespace: str
    container: str
    resource_name: str
    device_ids: tuple[str, ...]


# -- protobuf wire format (https://protobuf.dev/programming-guides/encoding/) ------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of each field: an int for varints, bytes for length-delimited ones."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, value
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("length-delimited field runs past the message")
            yield number, buf[pos : pos + length]
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4  # fixed64/fixed32: no field we read has these
            if pos > len(buf):
                raise ValueError("fixed-width field runs past the message")
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _text(value: int | bytes) -> str:
    if not isinstance(value, bytes):
        raise ValueError("expected a string field")
    return value.decode("utf-8")


def _message(value: int | bytes) -> bytes:
    if not isinstance(value, bytes):
        raise ValueError("expected an embedded message")
    return value


def _by_number(buf: bytes) -> dict[int, list[int | bytes]]:
    """A message's field values by field number, in wire order."""
    fields: dict[int, list[int | bytes]] = {}
    for number, value in _fields(buf):
        fields.setdefault(number, []).append(value)
    return fields


def _last_text(fields: dict[int, list[int | bytes]], number: int) -> str:
    """A string field: the last value on the wire wins, as protobuf parsers do; "" when absent."""
    texts = [_text(v) for v in fields.get(number, ())]
    return texts[-1] if texts else ""


def decode_list_response(buf: bytes) -> list[ContainerDevices]:
    """Every container's device groups from a serialised ``ListPodResourcesResponse``."""
    out: list[ContainerDevices] = []
    for pod_value in _by_number(buf).get(1, ()):
        pod = _by_number(_message(pod_value))  # PodResources: name 1, namespace 2, containers 3
        pod_name, namespace = _last_text(pod, 1), _last_text(pod, 2)
        for container_value in pod.get(3, ()):
            container = _by_number(_message(container_value))  # ContainerResources: name 1, devices 2
            container_name = _last_text(container, 1)
            for group_value in container.get(2, ()):
                group = _by_number(_message(group_value))  # ContainerDevices: resource_name 1, device_ids 2
                ids = tuple(_text(v) for v in group.get(2, ()))
                out.append(ContainerDevices(pod_name, namespace, container_name, _last_text(group, 1), ids))
    return out


# -- gRPC unary call over HTTP/2 ---------------------------------------------------------------------


def call_list(socket_path: str, timeout_s: float = 2.0) -> bytes:
    """One ``List`` call on the kubelet's socket; the serialised response, or PodResourcesError."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        try:
            sock.connect(socket_path)
            return _unary(sock, LIST_METHOD, b"", timeout_s)
        except FileNotFoundError:
            raise PodResourcesError("no_socket", f"{socket_path} does not exist") from None
        except PermissionError:
            raise PodResourcesError("permission", f"no permission to use {socket_path}") from None
        except ConnectionRefusedError:
            raise PodResourcesError("unavailable", "the kubelet does not listen on the socket") from None
        except TimeoutError:
            raise PodResourcesError("timeout", f"no answer within {timeout_s:g}s") from None
        except OSError as exc:
            raise PodResourcesError("connection", f"{type(exc).__name__}: {exc}") from None
        except h2.exceptions.ProtocolError as exc:
            raise PodResourcesError("malformed", f"HTTP/2 protocol error: {type(exc).__name__}") from None
    finally:
        sock.close()


def _unary(sock: socket.socket, method: str, request: bytes, timeout_s: float) -> bytes:
    conn = h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    conn.initiate_connection()
    stream = conn.get_next_available_stream_id()
    conn.send_headers(
        stream,
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", method),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("grpc-timeout", f"{max(1, int(timeout_s * 1000))}m"),
        ],
    )
    conn.send_data(stream, b"\x00" + len(request).to_bytes(4, "big") + request, end_stream=True)
    sock.sendall(conn.data_to_send())
    body = bytearray()
    headers: dict[str, str] = {}
    ended = False
    while not ended:
        data = sock.recv(65536)
        if not data:
            raise PodResourcesError("connection", "the kubelet closed the connection mid-answer")
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                headers.update((str(k), str(v)) for k, v in event.headers)
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
                if len(body) > MAX_RESPONSE_BYTES:
                    raise PodResourcesError("malformed", "answer larger than 16 MiB")
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                ended = True
            elif isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
                raise PodResourcesError("unavailable", f"the kubelet ended the call ({type(event).__name__})")
        pending = conn.data_to_send()
        if pending:
            sock.sendall(pending)
    if headers.get(":status") != "200":
        raise PodResourcesError("malformed", f"HTTP status {headers.get(':status')} (not a gRPC server?)")
    status = headers.get("grpc-status")
    if status != "0":
        code = int(status) if status and status.isdigit() else -1
        kind = _GRPC_KINDS.get(code, "rpc")
        raise PodResourcesError(kind, f"gRPC status {status}: {headers.get('grpc-message', '')[:200]}")
    if len(body) < 5 or body[0] != 0:
        raise PodResourcesError("malformed", "no uncompressed gRPC message in the answer")
    length = int.from_bytes(body[1:5], "big")
    if len(body) != 5 + length:
        raise PodResourcesError("malformed", "gRPC message length does not match the data")
    return bytes(body[5:])


# -- the allocation map -----------------------------------------------------------------------------


def exclusive_owners(groups: list[ContainerDevices], resource: str = GPU_RESOURCE) -> dict[str, PodRef]:
    """GPU id -> the one pod it is allocated to, for GPUs that exactly one pod holds unshared.

    Keys are GPU UUIDs, or ``index:<n>`` where the device plugin names GPUs by index.
    """
    holders: dict[str, set[tuple[str, str]]] = {}
    shared: set[str] = set()
    for group in groups:
        if group.resource_name != resource:
            continue
        for device in group.device_ids:
            base, replica, _ = device.partition("::")
            key = f"index:{base}" if base.isdigit() else base
            if replica:
                shared.add(key)
            holders.setdefault(key, set()).add((group.namespace, group.pod))
    return _sole_holders(holders, shared)


def _sole_holders(holders: dict[str, set[tuple[str, str]]], shared: set[str]) -> dict[str, PodRef]:
    """Device key -> its pod, for keys that exactly one pod holds and no replica (``::N``) shares."""
    owners: dict[str, PodRef] = {}
    for key, pods in holders.items():
        if key not in shared and len(pods) == 1:
            namespace, pod = next(iter(pods))
            owners[key] = PodRef(pod, namespace)
    return owners


def _old_mig_key(device: str) -> str | None:
    """``<gpu uuid>/<gi>`` for a pre-R470 MIG id ``MIG-GPU-<gpu uuid>/<gi>/<ci>``, else None."""
    if not device.startswith("MIG-GPU-"):
        return None
    parts = device[len("MIG-") :].split("/")
    if len(parts) != 3 or not all(p.isdigit() for p in parts[1:]):
        return None
    return f"{parts[0]}/{int(parts[1])}"


def exclusive_mig_owners(groups: list[ContainerDevices]) -> dict[str, PodRef]:
    """MIG device id -> the one pod it is allocated to, for MIG devices exactly one pod holds unshared.

    Ids come from ``nvidia.com/mig-*`` (strategy mixed) and ``nvidia.com/gpu`` (strategy single)
    and start with ``MIG-``. A pre-R470 id ``MIG-GPU-<gpu uuid>/<gi>/<ci>`` also gives its GPU
    instance a key ``<gpu uuid>/<gi>``, owned only where every such id of that instance is the same
    pod's: it matches a driver that names the same device ``MIG-<uuid>``.
    """
    holders: dict[str, set[tuple[str, str]]] = {}
    shared: set[str] = set()
    for group in groups:
        if group.resource_name != GPU_RESOURCE and not group.resource_name.startswith(MIG_RESOURCE_PREFIX):
            continue
        for device in group.device_ids:
            base, replica, _ = device.partition("::")
            if not base.startswith("MIG-"):
                continue
            old = _old_mig_key(base)
            for key in (base,) if old is None else (base, old):
                if replica:
                    shared.add(key)
                holders.setdefault(key, set()).add((group.namespace, group.pod))
    return _sole_holders(holders, shared)


class GpuAllocations:
    """Polls pod-resources on its own thread and answers, without I/O, which pod owns a GPU.

    After a failed poll the last answer is kept for ``stale_after_s`` and then dropped: a pod that
    has ended must not go on being charged for a GPU.
    """

    def __init__(
        self,
        socket_path: str = DEFAULT_SOCKET,
        *,
        refresh_s: float = 10.0,
        timeout_s: float = 2.0,
        stale_after_s: float = 60.0,
        uid_of: Callable[[str, str], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.socket_path = socket_path
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s
        self.stale_after_s = stale_after_s
        self.uid_of = uid_of
        self.clock = clock
        self.health = LookupHealth("pod-resources")
        self._owners: dict[str, PodRef] = {}
        self._mig_owners: dict[str, PodRef] = {}
        self._fetched_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> None:
        try:
            groups = decode_list_response(call_list(self.socket_path, self.timeout_s))
        except PodResourcesError as exc:
            self.health.fail(exc.kind)
            log.warning("pod-resources lookup failed (%s): %s", exc.kind, exc)
            return
        except (ValueError, UnicodeDecodeError) as exc:
            self.health.fail("malformed")
            log.warning("pod-resources answer is not a ListPodResourcesResponse: %s", exc)
            return
        self._owners = exclusive_owners(groups)
        self._mig_owners = exclusive_mig_owners(groups)
        self._fetched_at = self.clock()
        self.health.ok(len({(g.namespace, g.pod) for g in groups if g.device_ids}))

    def owner(self, gpu_uuid: str, gpu_index: int) -> PodRef | None:
        """The pod this GPU is allocated to alone, or None (shared, free, unknown or stale)."""
        if not self._fresh():
            return None
        owners = self._owners
        return self._with_uid(owners.get(gpu_uuid) or owners.get(f"index:{gpu_index}"))

    def mig_owner(self, mig_uuid: str, gpu_uuid: str, gpu_instance_id: int) -> PodRef | None:
        """The pod a MIG device (NVML's UUID for it, its GPU and GPU instance) is allocated to alone."""
        if not self._fresh():
            return None
        owners = self._mig_owners
        ref = owners.get(mig_uuid) if mig_uuid else None
        return self._with_uid(ref or owners.get(f"{gpu_uuid}/{gpu_instance_id}"))

    def _fresh(self) -> bool:
        fetched = self._fetched_at
        return fetched is not None and self.clock() - fetched <= self.stale_after_s

    def _with_uid(self, ref: PodRef | None) -> PodRef | None:
        if ref is None:
            return None
        if self.uid_of is not None and not ref.uid:
            uid = self.uid_of(ref.namespace, ref.name)
            if uid:
                ref = PodRef(ref.name, ref.namespace, uid)
        return ref

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pod-resources", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.refresh_s)
