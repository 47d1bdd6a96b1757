"""Chooses and runs the pod lookups the configuration asks for: API server, kubelet, pod-resources."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from exporter.apiserver import ApiServerPods, in_cluster_url
from exporter.config import Config
from exporter.podlookup import LookupCollector, LookupHealth
from exporter.podresources import GpuAllocations
from exporter.workload import PodLister, WorkloadResolver, kubelet_pod_lister

log = logging.getLogger(__name__)


@dataclass
class PodIdentity:
    """The lookups of one exporter; each runs on its own thread (or on demand for the kubelet list)."""

    lister: PodLister | None = None
    lister_health: LookupHealth | None = None
    directory: ApiServerPods | None = None
    allocations: GpuAllocations | None = None
    healths: list[LookupHealth] = field(default_factory=list)

    def resolver(self, procfs_root: str) -> WorkloadResolver:
        return WorkloadResolver(
            procfs_root, self.lister, pod_directory=self.directory, lister_health=self.lister_health
        )

    def collector(self, resolver: WorkloadResolver) -> LookupCollector:
        return LookupCollector(self.healths, lambda: resolver.pods_unresolved_total)

    def start(self) -> None:
        if self.directory is not None:
            self.directory.start()
        if self.allocations is not None:
            self.allocations.start()

    def stop(self) -> None:
        if self.directory is not None:
            self.directory.stop()
        if self.allocations is not None:
            self.allocations.stop()


def build_pod_identity(cfg: Config, simulated_pods: PodLister | None = None) -> PodIdentity:
    """The lookups for this configuration; nothing starts until ``start()``.

    Without ``kubernetes.node-name`` there is no lookup (a simulated fleet lists its own pods, as a
    kubelet would). With it: the pod-name lookup of ``kubernetes.pod-lookup``, and pod-resources
    unless its socket is set to "".
    """
    identity = PodIdentity()
    if simulated_pods is not None:
        identity.lister = simulated_pods
        return identity
    node = cfg["kubernetes.node-name"]
    if not node:
        return identity
    mode = cfg["kubernetes.pod-lookup"]
    if mode == "auto":
        # Naming a kubelet is asking for it; otherwise the API server, which needs no kubelet authz.
        mode = "kubelet" if cfg["kubernetes.kubelet-url"] else "apiserver"
    token, ca = cfg["kubernetes.token-file"], cfg["kubernetes.ca-file"]
    if mode == "apiserver":
        url = cfg["kubernetes.apiserver-url"] or in_cluster_url()
        identity.directory = ApiServerPods(node, url, token, ca)
        identity.healths.append(identity.directory.health)
        log.info("pod names: watching the pods of node %s on %s", node, url)
    elif mode == "kubelet":
        url = cfg["kubernetes.kubelet-url"] or f"https://{node}:10250"
        identity.lister = kubelet_pod_lister(url, token, ca)
        identity.lister_health = LookupHealth("kubelet")
        identity.healths.append(identity.lister_health)
        log.info("pod names: from the kubelet at %s", url)
    socket_path = cfg["kubernetes.pod-resources-socket"]
    if socket_path:
        uid_of = identity.directory.uid_of if identity.directory is not None else None
        identity.allocations = GpuAllocations(socket_path, uid_of=uid_of)
        identity.healths.append(identity.allocations.health)
        log.info("GPU allocations: from the kubelet's pod-resources socket %s", socket_path)
    return identity
