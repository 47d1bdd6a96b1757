"""Tests for exporter.workload: cgroup parsing, the workload resolver and the kubelet pod lister."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import requests

from exporter.model import Workload
from exporter.podlookup import http_error_kind
from exporter.secrets import SecretUnavailable
from exporter.workload import (
    CgroupIdentity,
    WorkloadResolver,
    apiserver_pod_lister,
    kubelet_pod_lister,
    parse_cgroup,
)

FIXTURES = Path(__file__).parent / "fixtures" / "cgroup"
DOCKER = "3f4b1d9c2a7e6f0851c4e9b7a2d3f6081e5c9a4b7d2f0e3a6c8b1d4e7f9a2c5b"
CONTAINERD = "8c2e0b5f7a1d4c9e3b6f2a0d8e5c1b7f4a9d2e6c0b3f8a5d1e7c4b9f2a6d0e3c"
CRIO = "b71e4d2a9c6f3e0b8d5a2c7f1e4b9d6a3c0f8e5b2d7a4c1f9e6b3d0a7c4f1e8b"
POD = "5a7c1e3b-9d2f-4b8a-a6c4-2e0f9b7d3c15"

EXPECTED = {
    "docker-v1-cgroupfs": CgroupIdentity(container_id=DOCKER),
    "docker-v1-systemd": CgroupIdentity(container_id=DOCKER),
    "docker-v2-cgroupfs": CgroupIdentity(container_id=DOCKER),
    "docker-v2-systemd": CgroupIdentity(container_id=DOCKER),
    "k8s-containerd-v1-cgroupfs": CgroupIdentity(container_id=CONTAINERD, pod_uid=POD),
    "k8s-containerd-v1-systemd": CgroupIdentity(container_id=CONTAINERD, pod_uid=POD),
    "k8s-containerd-v2-cgroupfs": CgroupIdentity(container_id=CONTAINERD, pod_uid=POD),
    "k8s-containerd-v2-systemd": CgroupIdentity(container_id=CONTAINERD, pod_uid=POD),
    "k8s-guaranteed-v2-cgroupfs": CgroupIdentity(container_id=CONTAINERD, pod_uid=POD),
    "k8s-crio-v1-systemd": CgroupIdentity(container_id=CRIO, pod_uid=POD),
    "k8s-crio-v2-systemd": CgroupIdentity(container_id=CRIO, pod_uid=POD),
    # conmon is CRI-O's monitor, not the container: it belongs to the pod only.
    "k8s-crio-conmon-v2-systemd": CgroupIdentity(pod_uid=POD),
    "k8s-dockershim-v1-systemd": CgroupIdentity(container_id=DOCKER, pod_uid=POD),
    # Kubernetes in Docker: the deepest id is the pod's container, not the node's.
    "kind-nested-v1-cgroupfs": CgroupIdentity(container_id=CONTAINERD, pod_uid=POD),
    "slurm-v1": CgroupIdentity(slurm_job_id="4242"),
    "slurm-v1-batch": CgroupIdentity(slurm_job_id="4243"),
    "slurm-v2": CgroupIdentity(slurm_job_id="4242"),
    "slurm-v2-extern": CgroupIdentity(slurm_job_id="4244"),
    "plain-v1": CgroupIdentity(),
    "plain-v2": CgroupIdentity(),
    "systemd-service-v2": CgroupIdentity(),
}


def test_every_fixture_has_an_expectation() -> None:
    assert sorted(p.stem for p in FIXTURES.glob("*.txt")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parse_cgroup_fixture(name: str) -> None:
    assert parse_cgroup((FIXTURES / f"{name}.txt").read_text()) == EXPECTED[name]


def test_parse_bare_path_as_replay_traces_carry_it() -> None:
    identity = parse_cgroup(f"/kubepods/besteffort/pod{POD}/{CONTAINERD}")
    assert identity == CgroupIdentity(container_id=CONTAINERD, pod_uid=POD)


def test_static_pod_hash_uid() -> None:
    uid = "6a3ba4c8a1e2ab4f30e06ca5a7c2d6b4"
    identity = parse_cgroup(f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice")
    assert identity == CgroupIdentity(pod_uid=uid)


def test_job_segment_outside_slurm_is_not_a_slurm_job() -> None:
    assert parse_cgroup("0::/system.slice/batch.service/job_12").slurm_job_id == ""


def test_empty_and_garbage() -> None:
    assert parse_cgroup("") == CgroupIdentity()
    assert parse_cgroup("not a cgroup file\n\n") == CgroupIdentity()


def _fake_proc(root: Path, pid: int, comm: str, uid: int, cgroup: str) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "comm").write_text(comm + "\n")
    (d / "status").write_text(
        f"Name:\t{comm}\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t{pid}\nPid:\t{pid}\n"
        f"PPid:\t1\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t{uid}\t{uid}\t{uid}\t{uid}\n"
    )
    (d / "cgroup").write_text(cgroup)
    (d / "cmdline").write_text("python\0train.py\0--api-key=SECRET\0")
    (d / "environ").write_text("TOKEN=SECRET\0")


def test_resolver_reads_comm_uid_and_cgroup(tmp_path: Path) -> None:
    _fake_proc(tmp_path, 4242, "python3", 0, (FIXTURES / "k8s-containerd-v2-systemd.txt").read_text())
    _fake_proc(tmp_path, 4343, "srun", 4000123, (FIXTURES / "slurm-v2.txt").read_text())
    pods = {POD: ("trainer-7d9f", "ml-team")}
    resolver = WorkloadResolver(str(tmp_path), kubelet_pods=lambda: pods)
    w = resolver.resolve(4242, 1000.0)
    assert (w.comm, w.user, w.container_id, w.pod_uid, w.pod, w.namespace, w.slurm_job_id) == (
        "python3",
        "root",
        CONTAINERD,
        POD,
        "trainer-7d9f",
        "ml-team",
        "",
    )
    w2 = resolver.resolve(4343, 1001.0)
    # uid 4000123 has no passwd entry: the numeric uid stands in for the name.
    assert (w2.comm, w2.user, w2.slurm_job_id, w2.pod) == ("srun", "4000123", "4242", "")
    assert not any("SECRET" in str(v) for v in (*vars_of(w), *vars_of(w2)))


def vars_of(w: Workload) -> list[str]:
    return [getattr(w, f.name) for f in fields(w)]


def test_resolver_given_values_win_over_proc(tmp_path: Path) -> None:
    _fake_proc(tmp_path, 10, "bash", 0, "0::/user.slice\n")
    resolver = WorkloadResolver(str(tmp_path))
    w = resolver.resolve(10, 5.0, comm="trainer", user="alice", cgroup=f"/docker/{DOCKER}")
    assert (w.comm, w.user, w.container_id) == ("trainer", "alice", DOCKER)
    # Without a pod lister the pod label is the UID.
    w = resolver.resolve(11, 5.0, comm="x", user="bob", cgroup=f"/kubepods/pod{POD}/{CONTAINERD}")
    assert (w.pod, w.namespace, w.pod_uid) == (POD, "", POD)


def test_resolver_caches_by_pid_and_start_time(tmp_path: Path) -> None:
    _fake_proc(tmp_path, 77, "first", 0, f"0::/docker/{DOCKER}\n")
    resolver = WorkloadResolver(str(tmp_path))
    assert resolver.resolve(77, 100.0).comm == "first"
    (tmp_path / "77" / "comm").write_text("second\n")
    (tmp_path / "77" / "cgroup").write_text("0::/user.slice\n")
    cached = resolver.resolve(77, 100.0)
    assert (cached.comm, cached.container_id) == ("first", DOCKER)
    reused = resolver.resolve(77, 200.0)  # same PID, new process
    assert (reused.comm, reused.container_id) == ("second", "")


def test_resolver_unkeyed_entries_expire(tmp_path: Path) -> None:
    _fake_proc(tmp_path, 5, "a", 0, "0::/\n")
    clock = [0.0]
    resolver = WorkloadResolver(str(tmp_path), unkeyed_ttl_s=30.0, clock=lambda: clock[0])
    assert resolver.resolve(5, None).comm == "a"
    (tmp_path / "5" / "comm").write_text("b\n")
    clock[0] = 29.0
    assert resolver.resolve(5, None).comm == "a"
    clock[0] = 31.0
    assert resolver.resolve(5, None).comm == "b"


def test_resolver_gone_process_gives_empty_fields(tmp_path: Path) -> None:
    w = WorkloadResolver(str(tmp_path)).resolve(999999, 1.0)
    assert (w.comm, w.user, w.container_id, w.pod) == ("", "", "", "")


def test_resolver_survives_failing_lister_and_retries(tmp_path: Path) -> None:
    calls: list[float] = []
    clock = [100.0]

    def lister() -> dict[str, tuple[str, str]]:
        calls.append(clock[0])
        if len(calls) == 1:
            raise requests.ConnectionError("kubelet down")
        return {POD: ("web-0", "prod")}

    resolver = WorkloadResolver(str(tmp_path), kubelet_pods=lister, pods_retry_s=10.0, clock=lambda: clock[0])
    cg = f"/kubepods/pod{POD}/{CONTAINERD}"
    assert resolver.resolve(1, 1.0, comm="a", user="u", cgroup=cg).pod == POD
    assert resolver.pod_list_errors_total == 1
    clock[0] = 105.0  # inside the retry delay: no new request
    assert resolver.resolve(2, 1.0, comm="a", user="u", cgroup=cg).pod == POD
    clock[0] = 111.0
    w = resolver.resolve(3, 1.0, comm="a", user="u", cgroup=cg)
    assert (w.pod, w.namespace) == ("web-0", "prod")
    assert calls == [100.0, 111.0]


PODLIST = {
    "kind": "PodList",
    "apiVersion": "v1",
    "metadata": {},
    "items": [
        {
            "metadata": {
                "name": "trainer-7d9f",
                "namespace": "ml-team",
                "uid": POD,
                "labels": {"app": "trainer"},
                "creationTimestamp": "2024-05-01T10:00:00Z",
            },
            "spec": {"nodeName": "gpu-node-1", "containers": [{"name": "main", "image": "pytorch:2.3"}]},
            "status": {"phase": "Running", "podIP": "10.1.2.3"},
        },
        {
            "metadata": {"name": "dcgm-exporter-x2k", "namespace": "monitoring", "uid": "0b9d-…-static"},
            "spec": {"nodeName": "gpu-node-1"},
            "status": {"phase": "Running"},
        },
        {"metadata": {"name": "broken"}},  # no uid: skipped
    ],
}


class _Kubelet(BaseHTTPRequestHandler):
    requests_seen: ClassVar[list[tuple[str, str | None]]] = []
    status: ClassVar[int] = 200

    def do_GET(self) -> None:
        type(self).requests_seen.append((self.path, self.headers.get("Authorization")))
        body = json.dumps(PODLIST).encode() if type(self).status == 200 else b"forbidden"
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def kubelet() -> Iterator[str]:
    _Kubelet.requests_seen = []
    _Kubelet.status = 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Kubelet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_kubelet_pod_lister_reads_podlist_with_token(kubelet: str, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("tok-1\n")
    lister = kubelet_pod_lister(kubelet + "/", str(token), None)
    pods = lister()
    assert pods == {POD: ("trainer-7d9f", "ml-team"), "0b9d-…-static": ("dcgm-exporter-x2k", "monitoring")}
    token.write_text("tok-2\n")  # rotated: the next call sends the new token
    lister()
    assert _Kubelet.requests_seen == [("/pods", "Bearer tok-1"), ("/pods", "Bearer tok-2")]


def test_kubelet_pod_lister_without_token_file_sends_no_token(kubelet: str, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-token")
    pods = kubelet_pod_lister(kubelet, missing, str(tmp_path / "no-such-ca.crt"))()
    assert pods[POD] == ("trainer-7d9f", "ml-team")
    assert _Kubelet.requests_seen == [("/pods", None)]


@pytest.mark.parametrize("content", [b"", b"  \n", b"\xff\xfe-not-text"])
def test_kubelet_pod_lister_refuses_an_empty_or_unreadable_token_file(
    kubelet: str, tmp_path: Path, content: bytes
) -> None:
    token = tmp_path / "token"
    token.write_bytes(content)
    with pytest.raises(SecretUnavailable) as info:
        kubelet_pod_lister(kubelet, str(token), None)()
    assert http_error_kind(info.value) == "token"
    assert str(token) in str(info.value)
    # Nothing was sent: not a request with "Bearer " and no token.
    assert _Kubelet.requests_seen == []


def test_kubelet_pod_lister_raises_on_http_error(kubelet: str) -> None:
    _Kubelet.status = 403
    with pytest.raises(requests.HTTPError):
        kubelet_pod_lister(kubelet, None, None)()
    assert _Kubelet.requests_seen == [("/pods", None)]


def test_apiserver_pod_lister_selects_node(kubelet: str) -> None:
    pods = apiserver_pod_lister("gpu-node-1", url=kubelet, token_file=None, ca_file=None)()
    assert pods[POD] == ("trainer-7d9f", "ml-team")
    assert _Kubelet.requests_seen == [("/api/v1/pods?fieldSelector=spec.nodeName%3Dgpu-node-1", None)]


def test_resolver_with_real_lister_over_http(kubelet: str, tmp_path: Path) -> None:
    resolver = WorkloadResolver(str(tmp_path), kubelet_pods=kubelet_pod_lister(kubelet, None, None))
    w = resolver.resolve(
        42, 1.0, comm="python", user="alice", cgroup=f"0::/kubepods/burstable/pod{POD}/{CRIO}"
    )
    assert (w.pod, w.namespace, w.container_id) == ("trainer-7d9f", "ml-team", CRIO)


def test_kubelet_pod_lister_over_https_with_ca_and_token(tmp_path: Path) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(context)
    ca_file = tmp_path / "kubelet-ca.crt"
    ca.cert_pem.write_to_path(str(ca_file))
    token = tmp_path / "token"
    token.write_text("sa-token\n")
    _Kubelet.requests_seen = []
    _Kubelet.status = 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Kubelet)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}"
        assert kubelet_pod_lister(url, str(token), str(ca_file))()[POD] == ("trainer-7d9f", "ml-team")
        assert _Kubelet.requests_seen == [("/pods", "Bearer sa-token")]
        # Without the kubelet's CA the certificate is refused: no silent insecure fallback.
        with pytest.raises(requests.exceptions.SSLError):
            kubelet_pod_lister(url, str(token), None)()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
