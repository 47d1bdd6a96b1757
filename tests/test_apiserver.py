"""exporter.apiserver against a fake API server: list, watch, bookmarks, 410 relists, 401/403, node filter."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fake_apiserver import Served, serve

from exporter.apiserver import ApiServerPods, in_cluster_url
from exporter.podlookup import PodRef

NODE = "gpu-node-1"


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Served]:
    with serve(tmp_path) as served:
        yield served


def pods_of(served: Served, **kwargs: object) -> ApiServerPods:
    options: dict[str, object] = {"watch_timeout_s": 1, "retry_s": 0.05, "max_retry_s": 0.2}
    options.update(kwargs)
    return ApiServerPods(NODE, served.url, str(served.token_file), str(served.ca_file), **options)  # type: ignore[arg-type]


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def test_list_names_only_this_nodes_pods_and_asks_for_metadata_only(fake: Served) -> None:
    api = fake.api
    mine = api.add("trainer-0", "ml", NODE)
    other = api.add("web-1", "prod", "cpu-node-7")
    pods = pods_of(fake)
    version = pods.list_pods()
    assert version == str(api.version)
    assert pods.get(mine.uid) == PodRef("trainer-0", "ml", mine.uid)
    assert pods.get(other.uid) is None
    (request,) = api.requests
    assert request["query"]["fieldSelector"] == f"spec.nodeName={NODE}"
    # Metadata only: the exporter never receives a pod spec (and its env values).
    assert "as=PartialObjectMetadataList;g=meta.k8s.io;v=v1" in request["accept"]
    assert pods.health.read() == (True, {}, 1)


def test_list_follows_continue_tokens(fake: Served) -> None:
    uids = [fake.api.add(f"p-{i}", "ns", NODE).uid for i in range(1203)]
    pods = pods_of(fake)
    pods.list_pods()
    assert all(pods.get(uid) is not None for uid in uids)
    assert [r["query"].get("continue") is not None for r in fake.api.requests] == [False, True, True]


def test_watch_applies_added_and_deleted_and_ends_with_a_bookmark(fake: Served) -> None:
    api = fake.api
    first = api.add("a", "ns", NODE)
    pods = pods_of(fake, keep_deleted_s=0.0)
    version = pods.list_pods()
    second = api.add("b", "ns", NODE)
    api.add("elsewhere", "ns", "cpu-node-7")
    api.delete(first.uid)
    pods.watch_once(version)
    assert pods.get(second.uid) == PodRef("b", "ns", second.uid)
    assert pods.get(first.uid) is None  # deleted, and keep_deleted_s is 0
    # The bookmark moved the version past the other node's event the watch never showed.
    assert pods.resource_version == str(api.version)
    watch = api.requests[-1]
    assert watch["query"]["watch"] == "1" and watch["query"]["allowWatchBookmarks"] == "true"
    assert watch["query"]["resourceVersion"] == version
    assert "as=PartialObjectMetadata;g=meta.k8s.io;v=v1" in watch["accept"]


def test_deleted_pods_keep_their_names_for_a_while(fake: Served) -> None:
    clock = [1000.0]
    pod = fake.api.add("job-1", "batch", NODE)
    pods = pods_of(fake, keep_deleted_s=600.0, clock=lambda: clock[0])
    version = pods.list_pods()
    fake.api.delete(pod.uid)
    pods.watch_once(version)
    assert pods.get(pod.uid) == PodRef("job-1", "batch", pod.uid)  # its series are still retained
    assert pods.health.read()[2] == 0  # but it is not counted as live
    clock[0] += 601
    fake.api.add("job-2", "batch", NODE)
    pods.watch_once(pods.resource_version or "")
    assert pods.get(pod.uid) is None


@pytest.mark.parametrize("as_status", [False, True], ids=["error-event", "http-410"])
def test_expired_version_relists_and_counts_it(fake: Served, as_status: bool) -> None:
    api = fake.api
    api.gone_as_status = as_status
    pods = pods_of(fake)
    pods.resource_version = pods.list_pods()
    late = api.add("late", "ns", NODE)
    api.compact()  # the watch history no longer reaches back to the list's version
    pods.start()
    try:
        wait_for(lambda: pods.get(late.uid) is not None)
        wait_for(lambda: pods.health.read()[1].get("expired", 0) >= 1)
    finally:
        pods.stop()
    lists = [r for r in api.requests if "watch" not in r["query"]]
    assert len(lists) >= 2  # listed again after 410
    assert pods.health.read()[0] is True


def test_thread_follows_changes_until_stopped(fake: Served) -> None:
    pods = pods_of(fake, watch_timeout_s=300)  # stop must not wait for the server to end the watch
    pods.start()
    try:
        wait_for(lambda: pods.health.read()[0])
        pod = fake.api.add("new", "ns", NODE)
        wait_for(lambda: pods.get(pod.uid) is not None)
    finally:
        started = time.monotonic()
        pods.stop()
        assert time.monotonic() - started < 5
        assert pods._thread is not None and not pods._thread.is_alive()


@pytest.mark.parametrize(
    ("token", "kind", "sent"),
    [
        ("stale-token\n", "unauthorized", True),  # sent, and the API server answers 401
        ("", "token", False),  # mounted, but the kubelet has not written it yet: nothing is sent
    ],
    ids=["stale", "empty"],
)
def test_a_bad_token_is_counted_and_retried_until_rotated(
    fake: Served, token: str, kind: str, sent: bool
) -> None:
    fake.token_file.write_text(token)
    pod = fake.api.add("a", "ns", NODE)
    pods = pods_of(fake)
    pods.start()
    try:
        wait_for(lambda: pods.health.read()[1].get(kind, 0) >= 1)
        assert pods.health.read()[0] is False
        assert pods.get(pod.uid) is None
        # Never a request with an empty bearer token.
        assert bool(fake.api.requests) is sent
        fake.token_file.write_text(fake.api.token + "\n")  # the kubelet rotated it: read on every request
        # The list stores the pods, then marks the lookup up: wait for both, not one then the other.
        wait_for(lambda: pods.get(pod.uid) is not None and pods.health.read()[0] is True)
    finally:
        pods.stop()


def test_missing_rbac_is_forbidden(fake: Served) -> None:
    fake.api.rbac = False
    pods = pods_of(fake)
    pods.start()
    try:
        wait_for(lambda: pods.health.read()[1].get("forbidden", 0) >= 2)  # and it keeps trying
        assert pods.health.read()[0] is False
    finally:
        pods.stop()


def test_server_errors_and_an_unknown_ca_are_counted(fake: Served, tmp_path: Path) -> None:
    fake.api.fail_lists_with = 500
    pods = pods_of(fake)
    pods.start()
    try:
        wait_for(lambda: pods.health.read()[1].get("http_5xx", 0) >= 1)
    finally:
        pods.stop()
    other_ca = tmp_path / "other-ca.crt"
    import trustme

    trustme.CA().cert_pem.write_to_path(str(other_ca))
    strict = ApiServerPods(NODE, fake.url, str(fake.token_file), str(other_ca), retry_s=0.05, max_retry_s=0.1)
    strict.start()
    try:
        wait_for(lambda: strict.health.read()[1].get("tls", 0) >= 1)
    finally:
        strict.stop()


def test_in_cluster_url_comes_from_the_service_env() -> None:
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert in_cluster_url(env) == "https://10.96.0.1:443"
    assert in_cluster_url({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}) == (
        "https://[fd00::1]:443"
    )
    assert in_cluster_url({}) == "https://kubernetes.default.svc"


def test_malformed_watch_line_is_counted_and_the_watch_restarts(fake: Served) -> None:
    pods = pods_of(fake)
    pods.list_pods()
    with pytest.raises(ValueError):
        pods._apply({"type": "ADDED"})
    with pytest.raises(ValueError):
        pods._apply({"type": "SURPRISE", "object": {"metadata": {"uid": "x", "name": "y"}}})
    # An ERROR event other than 410 is an error, not a relist.
    with pytest.raises(ValueError):
        pods._apply({"type": "ERROR", "object": {"kind": "Status", "code": 500, "reason": "InternalError"}})
