"""docker-compose.yml: valid for Debian's docker-compose, mounts files that exist where Grafana reads them."""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "not-admin-but-a-test-password"
DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources" / "footprint.yml"


def compose_config(env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose (Debian package docker-compose) is not installed"
    env = {k: v for k, v in os.environ.items() if k not in ("GRAFANA_ADMIN_PASSWORD", "FOOTPRINT_CONFIG")}
    env.update(env_extra or {})
    return subprocess.run(
        [binary, "--file", str(ROOT / "docker-compose.yml"), "--project-directory", str(ROOT), "config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@cache
def resolved() -> dict[str, Any]:
    result = compose_config({"GRAFANA_ADMIN_PASSWORD": PASSWORD})
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def mounts(service: str) -> dict[str, tuple[str, str]]:
    """Container path -> (source, mode) of a service's volumes, as docker-compose resolved them."""
    out = {}
    for entry in resolved()["services"][service].get("volumes", []):
        source, target, *mode = (
            entry.split(":") if isinstance(entry, str) else (entry["source"], entry["target"])
        )
        out[target] = (source, mode[0] if mode else "rw")
    return out


def flag(service: str, name: str, default: str | None = None) -> str | None:
    for arg in resolved()["services"][service].get("command", []):
        if arg.startswith(f"--{name}="):
            return str(arg.split("=", 1)[1])
    return default


def listen_port(service: str) -> str:
    address = flag(service, "web.listen-address")
    assert address is not None, f"{service} sets no --web.listen-address"
    return address.rsplit(":", 1)[1]


def test_compose_config_passes_and_lists_the_stack() -> None:
    services = resolved()["services"]
    assert set(services) == {"exporter", "exporter-simulated", "prometheus", "alertmanager", "grafana"}
    assert set(resolved()["volumes"]) == {
        "exporter-state",
        "exporter-simulated-state",
        "prometheus-data",
        "alertmanager-data",
        "grafana-data",
    }


def test_grafana_password_comes_from_the_environment_with_no_default() -> None:
    env = resolved()["services"]["grafana"]["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == PASSWORD
    missing = compose_config()
    assert missing.returncode != 0
    assert "GRAFANA_ADMIN_PASSWORD" in missing.stderr
    assert PASSWORD not in (ROOT / "docker-compose.yml").read_text()


def test_every_host_path_mounted_exists() -> None:
    checked = 0
    for service in resolved()["services"]:
        for target, (source, _mode) in mounts(service).items():
            if source.startswith("/"):
                assert Path(source).exists(), f"{service}: {source} (mounted at {target}) does not exist"
                checked += 1
    assert checked >= 8


def test_repository_files_are_mounted_read_only() -> None:
    for service in resolved()["services"]:
        for target, (source, mode) in mounts(service).items():
            if source.startswith("/"):
                assert mode == "ro", f"{service}: {source} -> {target} is writable"


def test_grafana_reads_our_provisioning_and_dashboards() -> None:
    grafana = mounts("grafana")
    prov_source, _ = grafana["/etc/grafana/provisioning"]  # Grafana's default provisioning path
    assert Path(prov_source) == ROOT / "grafana" / "provisioning"
    for kind in ("datasources", "dashboards"):
        assert list((Path(prov_source) / kind).glob("*.yml")), f"no {kind} provisioning file"
    providers = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/footprint.yml").read_text())[
        "providers"
    ]
    dashboards_path = providers[0]["options"]["path"]
    source, _ = grafana[dashboards_path]
    assert Path(source) == ROOT / "grafana" / "dashboards"
    assert len(list(Path(source).glob("*.json"))) == 4
    home = resolved()["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dashboards_path + "/")
    assert (ROOT / "grafana" / "dashboards" / home.rsplit("/", 1)[1]).is_file()
    assert mounts("grafana")["/var/lib/grafana"][0] == "grafana-data"


def test_datasource_urls_reach_the_listen_addresses() -> None:
    datasources = {d["uid"]: d for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    assert datasources["prometheus"]["url"] == "http://localhost:" + listen_port("prometheus")
    assert datasources["alertmanager"]["url"] == "http://localhost:" + listen_port("alertmanager")


def test_prometheus_config_scrapes_the_exporter_and_alerts_the_alertmanager() -> None:
    # Host networking makes prometheus/prometheus.yml (written for `make demo`) right as it is.
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]
    }
    assert "localhost:" + listen_port("exporter-simulated") in targets
    assert "localhost:" + listen_port("exporter") in targets
    am_targets = {
        t for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]
    }
    assert am_targets == {"localhost:" + listen_port("alertmanager")}


def test_prometheus_and_alertmanager_get_our_files() -> None:
    prom = mounts("prometheus")
    source, _ = prom["/etc/prometheus"]
    assert Path(source) == ROOT / "prometheus"
    config = flag("prometheus", "config.file")
    assert config is not None and config.startswith("/etc/prometheus/")
    assert (ROOT / "prometheus" / config.removeprefix("/etc/prometheus/")).is_file()
    assert mounts("prometheus")["/prometheus"][0] == "prometheus-data"
    am_config = flag("alertmanager", "config.file")
    assert am_config is not None
    assert Path(mounts("alertmanager")[am_config][0]) == ROOT / "prometheus" / "alertmanager.yml"


def test_gpu_exporter_reserves_nvidia_gpus_and_sees_host_processes() -> None:
    exporter = resolved()["services"]["exporter"]
    assert exporter["build"]["dockerfile"] == "exporter/Dockerfile"
    assert Path(exporter["build"]["context"]) == ROOT
    (device,) = exporter["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert exporter["pid"] == "host"
    assert exporter["profiles"] == ["gpu"]
    m = mounts("exporter")
    assert m["/host/proc"] == ("/proc", "ro") and m["/host/sys"] == ("/sys", "ro")
    assert flag("exporter", "path.procfs") == "/host/proc"
    assert flag("exporter", "path.sysfs") == "/host/sys"
    assert flag("exporter", "source.gpu") == "nvml"
    assert flag("exporter", "web.listen-address") == ":9877"
    assert flag("exporter", "config.file") in m
    state = flag("exporter", "state.file")
    assert state is not None and state.startswith("/var/lib/footprint/")
    assert m["/var/lib/footprint"][0] == "exporter-state"


def test_simulated_profile_runs_without_gpus_on_the_scraped_port() -> None:
    sim = resolved()["services"]["exporter-simulated"]
    assert sim["profiles"] == ["simulated"]
    assert flag("exporter-simulated", "source.gpu") == "simulated"
    assert "deploy" not in sim and "pid" not in sim
    assert listen_port("exporter-simulated") == listen_port("exporter") == "9877"
    assert mounts("exporter-simulated")["/var/lib/footprint"][0] == "exporter-simulated-state"


def test_every_service_has_a_healthcheck_and_a_pinned_image() -> None:
    for name, service in resolved()["services"].items():
        assert service["healthcheck"]["test"][0] == "CMD", name
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: {image} is not pinned"
    assert resolved()["services"]["grafana"]["healthcheck"]["test"][-1].endswith("/api/health")


def test_services_share_the_host_network_and_unauthenticated_ones_listen_on_loopback() -> None:
    for name, service in resolved()["services"].items():
        assert service["network_mode"] == "host", name
        assert "ports" not in service, f"{name}: published ports are meaningless with host networking"
    for name in ("exporter-simulated", "prometheus", "alertmanager"):
        assert str(flag(name, "web.listen-address", "")).startswith("127.0.0.1:"), name
    assert flag("alertmanager", "cluster.listen-address") == ""  # no gossip port on the host


def test_provisioning_holds_only_directories_grafana_reads() -> None:
    subdirs = {p.name for p in (ROOT / "grafana" / "provisioning").iterdir() if p.is_dir()}
    assert {"datasources", "dashboards"} <= subdirs <= {"datasources", "dashboards", "alerting", "plugins"}


def test_one_alerting_path_by_default() -> None:
    """Prometheus and Alertmanager alert; Grafana provisions no alert rules unless budgets choose it."""
    alerting = ROOT / "grafana" / "provisioning" / "alerting"
    for path in alerting.glob("*.y*ml"):
        doc = yaml.safe_load(path.read_text())
        assert doc == {"apiVersion": 1}, f"{path.name} provisions Grafana alerting: {sorted(doc)}"
    datasources = {d["uid"]: d for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    assert datasources["alertmanager"]["jsonData"]["handleGrafanaManagedAlerts"] is False
