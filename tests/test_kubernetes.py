"""deploy/kubernetes: every overlay built with `kubectl kustomize`, validated, cross-checked, rule parity.

Real tools: ``kubectl kustomize`` (kustomize v5 inside kubectl) builds the base and each overlay, and
``kubernetes-validate`` checks every built-in object strictly against the 1.33 and latest schemas.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from exporter.carbon.config import parse_carbon_config
from exporter.config import FLAGS_BY_NAME, load_file, parse_listen_address

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "kubernetes"
BASE = K8S / "base"
# Oldest Kubernetes we claim (pod-resources GA since 1.28; nodes/pods authorisation 1.33) and the newest.
K8S_VERSIONS = ("1.33.0", kubernetes_validate.latest_version())
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
OVERLAYS = {
    "gpu-operator": "ai-footprint",
    "device-plugin": "ai-footprint",
    "namespace-monitoring": "monitoring",
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}


def _render_module() -> Any:
    spec = importlib.util.spec_from_file_location("render_rules", K8S / "render_rules.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


@functools.cache
def _built_text(path: Path) -> str:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None, "kubectl is not installed (its `kubectl kustomize` builds the manifests)"
    result = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _built(where: str = "gpu-operator") -> list[dict[str, Any]]:
    """What `kubectl apply -k` of an overlay (or "base") creates: a fresh copy to look at or change."""
    path = BASE if where == "base" else K8S / "overlays" / where
    return [d for d in yaml.safe_load_all(_built_text(path)) if d is not None]


def _kinds(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in objects if d["kind"] == kind]


def _one(kind: str, where: str = "gpu-operator") -> dict[str, Any]:
    found = _kinds(_built(where), kind)
    assert len(found) == 1, f"expected one {kind} in {where}, found {len(found)}"
    return found[0]


def _container(where: str = "gpu-operator") -> dict[str, Any]:
    containers = _one("DaemonSet", where)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _args(where: str = "gpu-operator") -> dict[str, str]:
    args: dict[str, str] = {}
    for arg in _container(where)["args"]:
        assert arg.startswith("--") and "=" in arg, arg
        name, value = arg[2:].split("=", 1)
        args[name] = value
    return args


# --- kustomize: base and overlays ----------------------------------------------------------------------


def test_base_lists_every_manifest_in_its_directory() -> None:
    listed = yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")


def test_base_has_no_namespace_object_and_no_runtime_class() -> None:
    objects = _built("base")
    assert not _kinds(objects, "Namespace")
    assert "runtimeClassName" not in _one("DaemonSet", "base")["spec"]["template"]["spec"]


@pytest.mark.parametrize(("overlay", "namespace"), sorted(OVERLAYS.items()))
def test_every_namespaced_object_is_in_the_overlays_namespace(overlay: str, namespace: str) -> None:
    objects = _built(overlay)
    kinds = ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet", "Service"]
    kinds += ["NetworkPolicy", "ServiceMonitor", "PrometheusRule"]
    assert sorted(d["kind"] for d in objects if d["kind"] != "Namespace") == sorted(kinds)
    for doc in objects:
        if doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"]["namespace"] == namespace, (overlay, doc["kind"])
    (binding,) = _kinds(objects, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "footprint-exporter", "namespace": namespace}
    ]


def test_a_namespace_change_neither_creates_nor_labels_a_namespace() -> None:
    objects = _built("namespace-monitoring")
    # The review found the old base stamping pod-security "privileged" on `monitoring`.
    assert not _kinds(objects, "Namespace")
    assert "pod-security.kubernetes.io/enforce" not in _built_text(K8S / "overlays" / "namespace-monitoring")
    # The ServiceMonitor still finds the Service: it selects in its own namespace, which moved with it.
    monitor, service = _one("ServiceMonitor", "namespace-monitoring"), _one("Service", "namespace-monitoring")
    assert "namespaceSelector" not in monitor["spec"]
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"] == "monitoring"


def test_overlays_that_own_the_namespace_create_it_for_privileged_pods() -> None:
    for overlay in ("gpu-operator", "device-plugin"):
        namespace = _one("Namespace", overlay)
        assert namespace["metadata"]["name"] == "ai-footprint"
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_runtime_class_only_where_the_gpu_operator_provides_it() -> None:
    spec = {o: _one("DaemonSet", o)["spec"]["template"]["spec"] for o in OVERLAYS}
    assert spec["gpu-operator"]["runtimeClassName"] == "nvidia"
    assert spec["namespace-monitoring"]["runtimeClassName"] == "nvidia"
    assert "runtimeClassName" not in spec["device-plugin"]


def test_image_is_named_for_your_registry_not_a_published_one() -> None:
    image = _container()["image"]
    assert image == "footprint-exporter:0.1.0"
    # Nothing in deploy/ or the docs claims an image that was never published.
    for path in [*K8S.rglob("*.yaml"), REPO / "docs" / "deployment.md"]:
        assert "ghcr.io" not in path.read_text(), path


# --- schema validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_builtin_kinds_validate_strictly_against_the_kubernetes_schema(overlay: str, version: str) -> None:
    checked = 0
    for doc in _built(overlay):
        if doc["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    # sa, role, binding, configmap, daemonset, service, networkpolicy (+ the namespace where owned)
    assert checked == (7 if overlay == "namespace-monitoring" else 8)


def test_strict_validation_would_catch_a_misspelt_field() -> None:
    doc = _one("DaemonSet")
    doc["spec"]["template"]["spec"]["hostPid"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


def test_crds_have_no_schema_so_their_structure_is_checked_here() -> None:
    for kind in CRD_KINDS:
        with pytest.raises(kubernetes_validate.SchemaNotFoundError):
            kubernetes_validate.validate(_one(kind), K8S_VERSIONS[-1], strict=True)


# --- DaemonSet ---------------------------------------------------------------------------------------


def test_daemonset_args_are_flags_the_exporter_accepts() -> None:
    args = _args()
    unknown = set(args) - set(FLAGS_BY_NAME)
    assert not unknown
    assert parse_listen_address(args["web.listen-address"]) == ("", 9877)
    # GPU nodes run NVML explicitly: without it the exporter exits and the pod crash-loops, visibly.
    assert args["source.gpu"] == "nvml"
    assert (args["attribution.group-by"], args["attribution.cpu-group-by"]) == ("pod", "pod")
    assert args["kubernetes.pod-lookup"] == "apiserver"


def test_host_proc_and_sys_are_mounted_read_only_where_the_flags_point() -> None:
    pod = _one("DaemonSet")["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in _container()["volumeMounts"]}
    args = _args()
    for flag, host_path in (("path.procfs", "/proc"), ("path.sysfs", "/sys")):
        mount = mounts[args[flag]]
        assert mount["readOnly"] is True
        assert volumes[mount["name"]]["hostPath"]["path"] == host_path
    assert args["path.procfs"] == "/host/proc" and args["path.sysfs"] == "/host/sys"


def test_gpus_are_reached_through_the_runtime_without_claiming_any() -> None:
    pod = _one("DaemonSet")["spec"]["template"]["spec"]
    container = _container()
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "utility"
    resources = container["resources"]
    claimed = [r for part in resources.values() for r in part if "gpu" in r or r.startswith("nvidia.com/")]
    assert claimed == []
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    # A priority class would let the exporter preempt the very workloads it measures on a full node.
    assert "priorityClassName" not in pod
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


def test_node_name_comes_from_the_downward_api() -> None:
    container = _container()
    refs = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
        for e in container["env"]
        if "fieldRef" in e.get("valueFrom", {})
    }
    assert refs == {"NODE_NAME": "spec.nodeName"}
    args = _args()
    assert args["kubernetes.node-name"] == "$(NODE_NAME)"
    assert "kubernetes.kubelet-url" not in args  # no kubelet API call, so no kubelet authorisation


def test_pod_resources_socket_directory_is_mounted_where_the_flag_points() -> None:
    pod = _one("DaemonSet")["spec"]["template"]["spec"]
    socket = Path(_args()["kubernetes.pod-resources-socket"])
    (mount,) = [m for m in _container()["volumeMounts"] if Path(m["mountPath"]) == socket.parent]
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    # The directory: a socket mounted by itself goes stale when the kubelet re-creates it.
    assert volume["hostPath"] == {"path": "/var/lib/kubelet/pod-resources", "type": "Directory"}


def test_state_file_lives_on_a_writable_host_path() -> None:
    pod = _one("DaemonSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    state = Path(_args()["state.file"])
    (mount,) = [m for m in _container()["volumeMounts"] if state.parent == Path(m["mountPath"])]
    assert not mount.get("readOnly", False)
    assert volumes[mount["name"]]["hostPath"] == {
        "path": "/var/lib/footprint-exporter",
        "type": "DirectoryOrCreate",
    }


def test_container_is_locked_down_and_sized() -> None:
    container = _container()
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert "add" not in sc["capabilities"]
    assert container["resources"] == {
        "requests": {"cpu": "20m", "memory": "64Mi"},
        "limits": {"cpu": "200m", "memory": "128Mi"},
    }
    # Every writable path is an explicit volume, since the root filesystem is read-only.
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly", False)}
    assert writable == {"/var/lib/footprint", "/tmp"}


def test_probes_use_healthz_on_the_metrics_port() -> None:
    container = _container()
    (port,) = container["ports"]
    assert (port["name"], port["containerPort"]) == ("metrics", 9877)
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}


def test_host_user_names_come_from_the_hosts_passwd_read_only() -> None:
    pod = _one("DaemonSet")["spec"]["template"]["spec"]
    (mount,) = [m for m in _container()["volumeMounts"] if m["mountPath"] == "/etc/passwd"]
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["hostPath"] == {"path": "/etc/passwd", "type": "File"}
    # /etc/shadow (password hashes) is never mounted.
    assert not any("shadow" in str(v) for v in pod["volumes"])


def test_configmap_config_is_accepted_by_the_exporter(tmp_path: Path) -> None:
    config_map = _one("ConfigMap")
    mount = next(m for m in _container()["volumeMounts"] if m["name"] == "config")
    assert _args()["config.file"] == f"{mount['mountPath']}/config.yaml"
    path = tmp_path / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"], encoding="utf-8")
    values, carbon_raw = load_file(str(path))
    assert values == {}
    carbon = parse_carbon_config(carbon_raw)
    assert carbon.zone == "DE"
    assert carbon.pue == pytest.approx(1.2)
    assert carbon.providers[0].type == "electricitymaps"
    # The token comes from an optional Secret, named by token_env in the file.
    env = {e["name"]: e for e in _container()["env"]}
    ref = env["ELECTRICITYMAPS_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref["optional"] is True
    assert carbon.providers[0].token_env == "ELECTRICITYMAPS_TOKEN"


# --- RBAC ----------------------------------------------------------------------------------------------


def test_rbac_grants_only_list_and_watch_on_pods() -> None:
    role = _one("ClusterRole")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]
    binding = _one("ClusterRoleBinding")
    account = _one("ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]
    assert _one("DaemonSet")["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]


def test_no_object_grants_nodes_proxy_secrets_or_wildcards() -> None:
    for doc in _built():
        for rule in doc.get("rules", []):
            for key in ("resources", "verbs", "apiGroups"):
                assert "*" not in rule[key]
            assert not {"nodes/proxy", "secrets", "pods/exec"} & set(rule["resources"])


# --- NetworkPolicy ------------------------------------------------------------------------------------


def test_network_policy_lets_only_prometheus_reach_the_metrics_port() -> None:
    policy = _one("NetworkPolicy")
    pod_labels = _one("DaemonSet")["spec"]["template"]["metadata"]["labels"]
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    # One peer with both selectors: Prometheus pods (in any namespace), not any pod of any namespace.
    assert rule["from"] == [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
    ]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert "metrics" in {p["name"] for p in _container()["ports"]}


# --- Service and ServiceMonitor -------------------------------------------------------------------------


def test_service_is_headless_and_selects_the_daemonset_pods() -> None:
    service = _one("Service")
    assert service["spec"]["clusterIP"] == "None"
    pod_labels = _one("DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9877, "targetPort": "metrics", "protocol": "TCP"}
    ]


def test_servicemonitor_selects_the_service_and_its_named_port() -> None:
    monitor = _one("ServiceMonitor")
    service = _one("Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert "namespaceSelector" not in monitor["spec"]  # its own namespace: follows the overlay
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "relabelings"}


def test_servicemonitor_keeps_the_workload_pod_labels_of_the_exporter() -> None:
    (endpoint,) = _one("ServiceMonitor")["spec"]["endpoints"]
    # Workload `pod`/`namespace` labels must not be renamed exported_pod by the operator's target labels.
    assert endpoint.get("honorLabels", False) is False
    drop = [r for r in endpoint["relabelings"] if r.get("action") == "labeldrop"]
    assert len(drop) == 1
    pattern = re.compile(drop[0]["regex"])
    for label in ("pod", "namespace", "container", "service", "endpoint"):
        assert pattern.fullmatch(label)
    assert not pattern.fullmatch("node") and not pattern.fullmatch("instance")
    targets = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"] if "targetLabel" in r}
    assert targets == {
        "node": ["__meta_kubernetes_pod_node_name"],
        "instance": ["__meta_kubernetes_pod_node_name"],
    }


# --- PrometheusRule ------------------------------------------------------------------------------------


def test_prometheusrule_groups_are_identical_to_prometheus_rules() -> None:
    render_rules = _render_module()
    groups = render_rules.load_groups()
    assert groups, "prometheus/rules/ holds no rule groups"
    rule = _one("PrometheusRule")
    assert rule["spec"]["groups"] == groups
    # Byte for byte what the generator writes, so a hand edit is caught too.
    assert (BASE / "prometheusrule.yaml").read_text(encoding="utf-8") == render_rules.render(groups)
    assert render_rules.main(["--check"]) == 0


def test_prometheusrule_structure_is_what_the_operator_accepts() -> None:
    rule = _one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule["spec"]) == {"groups"}
    names = [g["name"] for g in rule["spec"]["groups"]]
    assert len(names) == len(set(names))
    for group in rule["spec"]["groups"]:
        assert group["rules"], group["name"]
        for entry in group["rules"]:
            assert ("record" in entry) != ("alert" in entry), entry
            assert isinstance(entry["expr"], str | int | float)


def test_prometheusrule_groups_pass_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": _one("PrometheusRule")["spec"]["groups"]}), encoding="utf-8")
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_render_check_detects_drift(tmp_path: Path) -> None:
    render_rules = _render_module()
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yml").write_text(
        "groups:\n- name: g1\n  rules:\n  - record: x:y:sum\n    expr: sum(y)\n", encoding="utf-8"
    )
    (rules / "b.yml").write_text(
        "groups:\n- name: g2\n  rules:\n  - alert: A\n    expr: up == 0\n", encoding="utf-8"
    )
    groups = render_rules.load_groups(rules)
    assert [g["name"] for g in groups] == ["g1", "g2"]
    text = render_rules.render(groups)
    assert yaml.safe_load(text)["spec"]["groups"] == groups
    (rules / "c.yml").write_text("groups:\n- name: g1\n  rules: []\n", encoding="utf-8")
    with pytest.raises(ValueError, match="g1"):
        render_rules.load_groups(rules)
