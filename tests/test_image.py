"""The image, built for real (`make image` offline on a debootstrapped Debian), run, scraped, healthy."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from docker_engine import Docker, debian_base, engine
from metrics_text import parse, select

from tests.prom_procs import free_port

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "footprint-exporter:image-test"
# Building on vfs copies every layer: a minute or two, plus debootstrap (about a minute) when not cached.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docker]:
    with engine(tmp_path_factory.mktemp("dockerd")) as d:
        yield d


@pytest.fixture(scope="module")
def built(docker: Docker, tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    base = debian_base(docker, tmp_path_factory.mktemp("debootstrap"))
    started = time.monotonic()
    result = subprocess.run(
        ["make", "image", f"DOCKER={docker.client}", f"PYTHON_IMAGE={base}", f"IMAGE={IMAGE}"],
        cwd=ROOT,
        env=docker.env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # The build ran offline: the Makefile passes --network=none, and pip took only the wheelhouse.
    assert "--network=none" in result.stdout
    size = int(docker.run("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    print(f"\nimage build (make image, vfs): {seconds:.0f} s, size {size / 1e6:.0f} MB")
    return {"seconds": seconds, "size": size}


def test_image_runs_as_non_root_reads_the_hosts_proc_and_turns_healthy(
    docker: Docker, built: dict[str, float]
) -> None:
    port = free_port()
    name = f"footprint-{port}"
    docker.run(
        "run",
        "-d",
        f"--name={name}",
        "--network=host",  # loopback only: the test scrapes 127.0.0.1
        "--read-only",
        "--tmpfs=/tmp",
        # The image's own HEALTHCHECK command, checked every second instead of every 30 s.
        "--health-interval=1s",
        "-e",
        f"FOOTPRINT_WEB_LISTEN_ADDRESS=127.0.0.1:{port}",
        "-v",
        "/proc:/host/proc:ro",
        "-v",
        "/sys:/host/sys:ro",
        IMAGE,
        "--path.procfs=/host/proc",
        "--path.sysfs=/host/sys",
        "--source.gpu=none",
        # Idle power configured rather than learned, so that a steady host load (where the learner
        # would call all of the power idle) still leaves CPU energy to attribute to the host's processes.
        "--attribution.cpu-package-idle-watts=0",
        "--attribution.cpu-dram-idle-watts=0",
    )
    deadline = time.monotonic() + 90
    health = ""
    while time.monotonic() < deadline:
        health = docker.run("inspect", "--format", "{{json .State}}", name).stdout
        state = json.loads(health)
        assert state["Running"], docker.run("logs", name, check=False).stderr[-3000:]
        if state.get("Health", {}).get("Status") == "healthy":
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"never healthy: {health[-2000:]}")
    assert json.loads(health)["Health"]["Log"][-1]["ExitCode"] == 0

    deadline = time.monotonic() + 30
    while True:  # the first CPU interval needs two samples
        samples = parse(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
        # The host daemons' series itself, not any process's: the first interval that charged someone
        # need not have seen a daemon run.
        if (
            select(samples, "footprint_process_cpu_energy_joules_total", comm="system")
            or time.monotonic() > deadline
        ):
            break
        time.sleep(0.5)
    (build,) = select(samples, "footprint_build_info")
    # Debian bookworm's own interpreter, not the python image's.
    assert dict(build)["python_version"].startswith("3.11.")
    assert select(samples, "footprint_cpu_energy_joules_total")
    # The host's processes (through /host/proc) are attributed: the host's daemons sum into "system".
    assert select(samples, "footprint_process_cpu_energy_joules_total", comm="system")

    user = docker.run(
        "exec", name, "python3", "-c", "import os; print(os.getuid(), os.getgid())"
    ).stdout.split()
    assert user == ["10001", "10001"]
    config = json.loads(docker.run("image", "inspect", "--format", "{{json .Config}}", IMAGE).stdout)
    assert config["User"] == "10001:10001"
    assert config["Healthcheck"]["Test"] == ["CMD", "python3", "-m", "exporter.healthcheck"]
    # No pip and no wheelhouse in the runtime image.
    probe = docker.run(
        "exec",
        name,
        "python3",
        "-c",
        "import os, importlib.util as u; print(u.find_spec('pip') is None, os.path.exists('/wheelhouse'))",
    )
    assert probe.stdout.split() == ["True", "False"]


def test_a_failing_exporter_turns_unhealthy(docker: Docker, built: dict[str, float]) -> None:
    # The health check asks the port it is told; nothing listens there, so three failures in a row.
    port, other = free_port(), free_port()
    name = f"footprint-unhealthy-{port}"
    docker.run(
        "run",
        "-d",
        f"--name={name}",
        "--network=host",
        "--health-interval=1s",
        "--health-retries=2",
        "-e",
        f"FOOTPRINT_WEB_LISTEN_ADDRESS=127.0.0.1:{other}",
        IMAGE,
        f"--web.listen-address=127.0.0.1:{port}",
        "--source.gpu=none",
    )
    deadline = time.monotonic() + 60
    status = ""
    while time.monotonic() < deadline:
        status = docker.run("inspect", "--format", "{{.State.Health.Status}}", name).stdout.strip()
        if status == "unhealthy":
            break
        time.sleep(0.5)
    assert status == "unhealthy"
    # The exporter itself serves on the flag's port: the flag wins over the env var, as documented.
    assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).text == "ok\n"
