"""A fake kubelet pod-resources service: a real gRPC server (grpcio) on a unix socket, real protobuf encoding.

The messages are declared from the field numbers of ``k8s.io/kubelet/pkg/apis/podresources/v1/api.proto``
(package ``v1``, service ``PodResourcesLister``), including the fields the exporter does not read
(cpu_ids, memory, topology, dynamic_resources), so the exporter's decoder meets what a kubelet sends.
The google.protobuf library encodes them; the exporter decodes with its own code, so the two meet
only on the wire.

Behaviour modelled: ``List`` answers every pod with at least one container; containers without
devices have none listed; a status (UNAVAILABLE, PERMISSION_DENIED, RESOURCE_EXHAUSTED for the
kubelet's rate limit, ...) can be set to fail calls.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto


def _file() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(name="podresources_v1_fake.proto", package="v1", syntax="proto3")

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        m = fd.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = f".v1.{type_name}"

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message("ListPodResourcesRequest")
    message("ListPodResourcesResponse", ("pod_resources", 1, F.TYPE_MESSAGE, rep, "PodResources"))
    message(
        "PodResources",
        ("name", 1, F.TYPE_STRING, opt, ""),
        ("namespace", 2, F.TYPE_STRING, opt, ""),
        ("containers", 3, F.TYPE_MESSAGE, rep, "ContainerResources"),
    )
    message(
        "ContainerResources",
        ("name", 1, F.TYPE_STRING, opt, ""),
        ("devices", 2, F.TYPE_MESSAGE, rep, "ContainerDevices"),
        ("cpu_ids", 3, F.TYPE_INT64, rep, ""),
        ("memory", 4, F.TYPE_MESSAGE, rep, "ContainerMemory"),
        ("dynamic_resources", 5, F.TYPE_MESSAGE, rep, "DynamicResource"),
    )
    message(
        "ContainerMemory",
        ("memory_type", 1, F.TYPE_STRING, opt, ""),
        ("size", 2, F.TYPE_UINT64, opt, ""),
        ("topology", 3, F.TYPE_MESSAGE, opt, "TopologyInfo"),
    )
    message(
        "ContainerDevices",
        ("resource_name", 1, F.TYPE_STRING, opt, ""),
        ("device_ids", 2, F.TYPE_STRING, rep, ""),
        ("topology", 3, F.TYPE_MESSAGE, opt, "TopologyInfo"),
    )
    message("TopologyInfo", ("nodes", 1, F.TYPE_MESSAGE, rep, "NUMANode"))
    message("NUMANode", ("ID", 1, F.TYPE_INT64, opt, ""))
    message(
        "DynamicResource",
        ("claim_name", 2, F.TYPE_STRING, opt, ""),
        ("claim_namespace", 3, F.TYPE_STRING, opt, ""),
    )
    return fd


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file())


def message_class(name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"v1.{name}"))


ListResponse = message_class("ListPodResourcesResponse")
ListRequest = message_class("ListPodResourcesRequest")


@dataclass
class Container:
    name: str
    devices: dict[str, Sequence[str]] = field(default_factory=dict)  # resource name -> device ids
    cpu_ids: Sequence[int] = ()


@dataclass
class PodResources:
    name: str
    namespace: str
    containers: list[Container]


@dataclass
class FakeKubelet:
    pods: list[PodResources] = field(default_factory=list)
    fail_with: grpc.StatusCode | None = None
    calls: int = 0

    def response(self) -> Any:
        out = ListResponse()
        for pod in self.pods:
            p = out.pod_resources.add(name=pod.name, namespace=pod.namespace)
            for container in pod.containers:
                c = p.containers.add(name=container.name)
                c.cpu_ids.extend(container.cpu_ids)
                c.memory.add(memory_type="memory", size=1 << 30).topology.nodes.add(ID=0)
                for resource, ids in container.devices.items():
                    d = c.devices.add(resource_name=resource)
                    d.device_ids.extend(ids)
                    d.topology.nodes.add(ID=1)
        return out

    def List(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.calls += 1
        if self.fail_with is not None:
            context.abort(self.fail_with, f"fake kubelet: {self.fail_with.name}")
        return self.response()


@contextmanager
def serve(socket_path: Path, kubelet: FakeKubelet | None = None) -> Iterator[FakeKubelet]:
    kubelet = kubelet or FakeKubelet()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.method_handlers_generic_handler(
        "v1.PodResourcesLister",
        {
            "List": grpc.unary_unary_rpc_method_handler(
                kubelet.List,
                request_deserializer=ListRequest.FromString,
                response_serializer=lambda m: m.SerializeToString(),
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"unix://{socket_path}")
    server.start()
    try:
        yield kubelet
    finally:
        server.stop(grace=None).wait(5)
