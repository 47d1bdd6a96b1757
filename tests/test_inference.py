"""Inference efficiency end to end: exporter (replay) + fake inference servers + real Prometheus + our rules.

A replay trace puts the processes of five pods on four GPUs at constant power, so each pod's attributed
energy is known exactly; fake vLLM, SGLang, TGI and Triton servers count tokens and requests at known
rates; a real Prometheus scrapes them all (the servers with the namespace and pod a PodMonitor would
give them) and evaluates prometheus/rules/inference.rules.yml as shipped. The recorded figures must
equal the truth within 2%.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.attribution import AttributionPolicy
from exporter.ledger import ProcessLedger
from exporter.model import IntensityState
from exporter.sampler import Attribution, Sampler
from exporter.sources.replay import ReplayGpuSource
from exporter.workload import WorkloadResolver
from tests.exporter_proc import ExporterProcess, start_exporter
from tests.fake_inference import FakeInferenceServer, Traffic
from tests.prom_procs import RunningServer, prometheus

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "prometheus" / "rules" / "inference.rules.yml"
NAMESPACE = "llm"
SECONDS_PER_YEAR = 365.25 * 86400.0
GRID_G_PER_KWH = 400.0
PUE = 1.2
G_PER_J = GRID_G_PER_KWH * PUE / 3.6e6
# Market-based: a PPA covering half the node's consumption at 0 g/kWh, the supplier's 300 g/kWh for the rest.
MARKET_G_PER_J = (0.5 * 0.0 + 0.5 * 300.0) * PUE / 3.6e6
H100_KG, H100_LIFE_Y = 150.0, 4.0  # configured below, so the embodied truth does not lean on defaults
EMBODIED_G_PER_S = H100_KG * 1000.0 / (H100_LIFE_Y * SECONDS_PER_YEAR)
TOLERANCE = 0.02
SCRAPE_S = 120  # seconds of scraping before the figures are read (see test_figures_match_the_truth)


@dataclass(frozen=True)
class Pod:
    name: str
    uid: str
    kind: str  # inference server
    traffic: Traffic
    gpu_watts: float  # the truth: GPU power attributed to the pod
    gpu_share: list[float]  # per GPU the pod is on: its share of that GPU (for embodied carbon)


# GPU 0 and GPU 2: the vLLM pod's two tensor-parallel ranks, alone on each (350 W + 250 W).
# GPU 1: SGLang (SM 60%) and TGI (SM 20%) share 400 W: proportional attribution gives 300 W and 100 W.
# GPU 3: Triton, 300 W. GPU 4: an idle vLLM pod holding 80 W and serving nothing.
PODS = {
    "vllm": Pod(
        "vllm-llama-0",
        "4a0f3c1e-9b7d-4e2a-8c61-0d5e7f9a1b21",
        "vllm",
        Traffic("meta-llama/Llama-3.1-8B-Instruct", 5.0, 1000, 250, aborted_per_s=1.0),
        600.0,
        [1.0, 1.0],
    ),
    "sglang": Pod(
        "sglang-qwen-0",
        "5b1e4d2f-0c8e-4f3b-9d72-1e6f8a0b2c32",
        "sglang",
        Traffic("Qwen/Qwen2.5-7B-Instruct", 6.0, 400, 100),
        300.0,
        [0.75],
    ),
    "tgi": Pod(
        "tgi-0", "6c2f5e3a-1d9f-4a4c-8e83-2f7a9b1c3d43", "tgi", Traffic("", 5.0, 200, 50), 100.0, [0.25]
    ),
    "triton": Pod(
        "triton-0",
        "7d3a6f4b-2e0a-4b5d-9f94-3a8b0c2d4e54",
        "triton",
        Traffic("tensorrt_llm", 4.0, 300, 100),
        300.0,
        [1.0],
    ),
    "idle": Pod(
        "vllm-idle-0",
        "8e4b7a5c-3f1b-4c6e-8a05-4b9c1d3e5f65",
        "vllm",
        Traffic("meta-llama/Llama-3.1-8B-Instruct", 0.0, 1000, 250),
        80.0,
        [1.0],
    ),
}


def _cgroup(uid: str, container: int) -> str:
    slice_uid = uid.replace("-", "_")
    return (
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{slice_uid}.slice/"
        f"cri-containerd-{container:064x}.scope"
    )


def _process(pid: int, comm: str, pod: Pod, sm: float) -> dict[str, Any]:
    return {
        "pid": pid,
        "comm": comm,
        "user": "inference",
        "sm_util": sm,
        "used_memory_bytes": 60_000_000_000,
        "cgroup": _cgroup(pod.uid, pid),
    }


def write_trace(path: Path, duration_s: float = 1800.0, step_s: float = 30.0) -> None:
    """Constant power on every GPU, with a hardware energy counter: the energy at any time is exact."""
    gpus = [
        (350.0, [_process(4242, "vllm", PODS["vllm"], 0.8)]),
        (
            400.0,
            [
                _process(5252, "python3", PODS["sglang"], 0.6),
                _process(6262, "text-generation", PODS["tgi"], 0.2),
            ],
        ),
        (250.0, [_process(4243, "vllm", PODS["vllm"], 0.7)]),
        (300.0, [_process(7272, "tritonserver", PODS["triton"], 0.5)]),
        (80.0, [_process(8282, "vllm", PODS["idle"], 0.0)]),
    ]
    lines = []
    t = 0.0
    while t <= duration_s:
        sample = []
        for i, (watts, procs) in enumerate(gpus):
            sample.append(
                {
                    "index": i,
                    "uuid": f"GPU-00000000-0000-4000-8000-00000000000{i}",
                    "name": "NVIDIA H100 80GB HBM3",
                    "power_w": watts,
                    "energy_j": watts * t,
                    "util": 0.5,
                    "mem_used_bytes": 61_000_000_000,
                    "mem_total_bytes": 85_899_345_920,
                    "temp_c": 55,
                    "power_limit_w": 700,
                    "processes": procs,
                }
            )
        lines.append(json.dumps({"t": t, "gpus": sample}))
        t += step_s
    path.write_text("\n".join(lines) + "\n")


class FakeKubelet:
    """The kubelet's /pods: a v1 PodList with each pod's metadata (uid, name, namespace)."""

    def __init__(self, pods: list[Pod]) -> None:
        body = json.dumps(
            {
                "kind": "PodList",
                "apiVersion": "v1",
                "items": [
                    {
                        "metadata": {"name": p.name, "namespace": NAMESPACE, "uid": p.uid},
                        "spec": {},
                        "status": {},
                    }
                    for p in pods
                ],
            }
        ).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/pods":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Stack:
    prom: RunningServer
    exporter: ExporterProcess
    servers: dict[str, FakeInferenceServer]
    ready_at: float  # monotonic time from which the figures are read


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("inference")
    write_trace(tmp / "trace.jsonl")
    config = {
        "carbon": {
            "zone": "DE",
            "pue": PUE,
            "providers": [{"type": "static", "grams_per_kwh": GRID_G_PER_KWH}],
            "embodied": {"gpu": {"H100": {"kg": H100_KG, "life_years": H100_LIFE_Y}}},
            "market": {
                "instruments": [{"name": "wind-ppa", "share": 0.5, "grams_per_kwh": 0}],
                "supplier_grams_per_kwh": 300,
            },
        }
    }
    (tmp / "exporter.yml").write_text(yaml.safe_dump(config))
    kubelet = FakeKubelet(list(PODS.values()))
    servers: dict[str, FakeInferenceServer] = {}
    exporter: ExporterProcess | None = None
    try:
        exporter = start_exporter(
            [
                "--source.gpu=replay",
                f"--source.gpu.replay.file={tmp / 'trace.jsonl'}",
                "--source.cpu=none",
                "--sample.interval=500ms",
                f"--config.file={tmp / 'exporter.yml'}",
                "--kubernetes.node-name=gpu-node-1",
                f"--kubernetes.kubelet-url={kubelet.url}",
            ],
            wait=60,
        )
        for key, pod in PODS.items():
            servers[key] = FakeInferenceServer(pod.kind, pod.traffic)
        # What a PodMonitor gives each server's series: the pod's namespace and name as target labels.
        scrape_configs: list[dict[str, Any]] = [
            {"job_name": "footprint", "static_configs": [{"targets": [exporter.instance]}]}
        ]
        for key, pod in PODS.items():
            scrape_configs.append(
                {
                    "job_name": f"{NAMESPACE}/{key}",
                    "static_configs": [
                        {
                            "targets": [servers[key].target],
                            "labels": {"namespace": NAMESPACE, "pod": pod.name, "container": key},
                        }
                    ],
                }
            )
        prom_config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": scrape_configs,
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(prom_config))
        with prometheus(tmp / "prometheus.yml", tmp / "prom") as prom:
            ready_at = time.monotonic() + SCRAPE_S
            yield Stack(prom, exporter, servers, ready_at)
    finally:
        for server in servers.values():
            server.close()
        if exporter is not None:
            exporter.stop()
        kubelet.close()


def values(stack: Stack, expr: str) -> dict[tuple[str, ...], float]:
    """Instant values of EXPR keyed by (pod,), (pod, model_name) or (model_name,), as the series have them."""
    out = {}
    for s in stack.prom.query(expr):
        m = s["metric"]
        key = tuple(m[k] for k in ("pod", "model_name") if k in m)
        out[key] = float(s["value"][1])
    return out


def wait_ready(stack: Stack) -> None:
    remaining = stack.ready_at - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
    # Every target must have been scraped all along (a target that came late would skew its rates).
    targets = stack.prom.get("/api/v1/targets")["activeTargets"]
    assert len(targets) == 1 + len(PODS)
    assert all(t["health"] == "up" for t in targets), [(t["labels"], t["lastError"]) for t in targets]


def test_fake_servers_serve_the_real_names_and_count_whole_requests() -> None:
    traffic = Traffic("m", 10.0, 30, 20, aborted_per_s=2.0)
    clock = [100.0]
    expected = {
        "vllm": {
            "vllm:generation_tokens",
            "vllm:prompt_tokens",
            "vllm:request_success",
            "vllm:num_requests_running",
            "vllm:generation_tokens_created",
            "vllm:prompt_tokens_created",
            "vllm:request_generation_tokens",
        },
        "sglang": {"sglang:generation_tokens", "sglang:prompt_tokens", "sglang:num_requests"},
        "tgi": {
            "tgi_request_count",
            "tgi_request_success",
            "tgi_request_generated_tokens",
            "tgi_request_input_length",
        },
        "triton": {
            "nv_inference_request_success",
            "nv_inference_count",
            "nv_inference_exec_count",
            "nv_llm_output_token_len",
            "nv_llm_input_token_len",
        },
    }
    for kind, names in expected.items():
        server = FakeInferenceServer(
            kind, traffic if kind == "vllm" else Traffic("m", 10.0, 30, 20), lambda: clock[0]
        )
        try:
            clock[0] = 100.0
            server.restart()
            clock[0] = 100.5625  # 5.6 requests' time at 10/s: 5 finished
            text = requests.get(f"http://{server.target}/metrics", timeout=10).text
            families = {f.name: f for f in text_string_to_metric_families(text)}
            assert set(families) == names, kind
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for f in families.values()
                for s in f.samples
            }
            if kind == "vllm":
                key = (("engine", "0"), ("model_name", "m"))
                # 11 whole engine steps of 50 ms at 240 tok/s (aborted requests' tokens were generated too)
                assert samples[("vllm:generation_tokens_total", key)] == pytest.approx(11 * 0.05 * 240)
                reasons = {
                    dict(k[1])["finished_reason"]: v
                    for k, v in samples.items()
                    if k[0] == "vllm:request_success_total"
                }
                assert reasons == {"stop": 4.0, "length": 1.0, "abort": 1.0}
            elif kind == "sglang":
                assert samples[("sglang:generation_tokens_total", (("model_name", "m"),))] == 5 * 20
            elif kind == "tgi":
                assert samples[("tgi_request_generated_tokens_sum", ())] == 5 * 20
                assert samples[("tgi_request_input_length_sum", ())] == 5 * 30
                # TGI's and Triton's counters carry no _total (the parser adds one): read the raw line
                assert "\ntgi_request_success 5.0\n" in text
            else:
                out = (("model", "m"), ("response_metric_type", "total_output_tokens"), ("version", "1"))
                assert samples[("nv_llm_output_token_len_sum", out)] == 5 * 20
                assert '\nnv_inference_request_success{model="m",version="1"} 5.0\n' in text
            clock[0] = 200.0
            server.restart()  # a restart starts every counter again from 0
            text = requests.get(f"http://{server.target}/metrics", timeout=10).text
            counters = [
                s.value
                for f in text_string_to_metric_families(text)
                if f.type in ("counter", "histogram")
                for s in f.samples
                if not s.name.endswith("_created")
            ]
            assert counters and all(v == 0 for v in counters), kind
            assert server.scrapes == 2
        finally:
            server.close()


def within(got: float, truth: float) -> bool:
    return abs(got - truth) <= TOLERANCE * abs(truth)


@pytest.mark.integration
def test_figures_match_the_truth(stack: Stack) -> None:
    """Joules, grams and SCI per token and per request, per pod and per model, within 2% of the truth.

    Each server's tokens and the exporter's energy are scraped from (nearly) the same moment on, so the
    5-minute rates cover the same time; the first scrapes of two targets can be up to one scrape
    interval (1 s) apart, which after SCRAPE_S = 120 s of scraping is below 1% of either rate. (The
    rates themselves are still below the truth then: a 5-minute rate of a 2-minute-old series is about
    2/5 of it. The ratios are not, as both sides are equally short.)
    """
    wait_ready(stack)
    report = []

    def check(rule: str, key: tuple[str, ...], truth: float) -> None:
        got = values(stack, rule).get(key)
        ok = got is not None and within(got, truth)
        report.append(f"{'ok ' if ok else 'BAD'} {rule} {key}: {got} (truth {truth:.6g})")

    for key, pod in PODS.items():
        if key == "idle":
            continue
        tps = pod.traffic.generation_tps
        joules = pod.gpu_watts / tps
        grams = pod.gpu_watts * G_PER_J / tps
        sci = (pod.gpu_watts * G_PER_J + EMBODIED_G_PER_S * sum(pod.gpu_share)) / tps
        check("namespace_pod:footprint_joules_per_token:rate5m", (pod.name,), joules)
        check("namespace_pod:footprint_grams_per_token:rate5m", (pod.name,), grams)
        check(
            "namespace_pod:footprint_market_grams_per_token:rate5m",
            (pod.name,),
            pod.gpu_watts * MARKET_G_PER_J / tps,
        )
        check("namespace_pod:footprint_gpu_cpu_joules_per_token:rate5m", (pod.name,), joules)
        check("namespace_pod:footprint_sci_grams_per_token:rate5m", (pod.name,), sci)
        check(
            "namespace_pod:footprint_joules_per_prompt_token:rate5m",
            (pod.name,),
            pod.gpu_watts / pod.traffic.prompt_tps,
        )
        check(
            "namespace_pod:footprint_joules_per_request:rate5m",
            (pod.name,),
            pod.gpu_watts / pod.traffic.requests_per_s,
        )
        check(
            "namespace_pod:footprint_grams_per_request:rate5m",
            (pod.name,),
            pod.gpu_watts * G_PER_J / pod.traffic.requests_per_s,
        )
        model = (pod.name, pod.traffic.model) if pod.traffic.model else (pod.name,)
        check("namespace_pod_model_name:footprint_joules_per_token:rate5m", model, joules)
        check("namespace_pod_model_name:footprint_grams_per_token:rate5m", model, grams)
        check("namespace_pod_model_name:footprint_sci_grams_per_token:rate5m", model, sci)
        check(
            "namespace_pod_model_name:footprint_joules_per_request:rate5m",
            model,
            pod.gpu_watts / pod.traffic.requests_per_s,
        )
    # Across the fleet, a model's figure includes the energy of its pods that served nothing: the idle
    # vLLM pod's 80 W is charged to Llama's tokens.
    llama = PODS["vllm"].traffic
    check(
        "model_name:footprint_joules_per_token:rate5m",
        (llama.model,),
        (PODS["vllm"].gpu_watts + PODS["idle"].gpu_watts) / llama.generation_tps,
    )
    check(
        "model_name:footprint_joules_per_token:rate5m",
        (PODS["sglang"].traffic.model,),
        PODS["sglang"].gpu_watts / PODS["sglang"].traffic.generation_tps,
    )
    print("\n".join(report))
    assert not [line for line in report if line.startswith("BAD")], "\n".join(report)


@pytest.mark.integration
def test_no_tokens_no_series(stack: Stack) -> None:
    """The idle pod: its token rate is 0, and no per-token or per-request figure exists (not 0, Inf, NaN)."""
    wait_ready(stack)
    idle = PODS["idle"].name
    assert values(stack, f'namespace_pod:footprint_inference_generation_tokens:rate5m{{pod="{idle}"}}') == {
        (idle,): 0.0
    }
    for rule in (
        "namespace_pod:footprint_joules_per_token:rate5m",
        "namespace_pod:footprint_grams_per_token:rate5m",
        "namespace_pod:footprint_sci_grams_per_token:rate5m",
        "namespace_pod:footprint_joules_per_request:rate5m",
        "namespace_pod_model_name:footprint_joules_per_token:rate5m",
    ):
        assert values(stack, f'{rule}{{pod="{idle}"}}') == {}, rule
    # Nothing anywhere is NaN or infinite.
    for rule in (
        "namespace_pod:footprint_joules_per_token:rate5m",
        "model_name:footprint_sci_grams_per_token:rate5m",
    ):
        got = values(stack, rule)
        assert got and all(0 < v < float("inf") for v in got.values()), (rule, got)
    assert values(stack, f'namespace_pod:footprint_market_grams_per_token:rate5m{{pod="{idle}"}}') == {}


def _camel_to_snake(relabel: dict[str, Any]) -> dict[str, Any]:
    """A PodMonitor relabeling as the operator writes it into Prometheus' relabel_configs."""
    names = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    return {names.get(k, k): v for k, v in relabel.items()}


@pytest.mark.integration
def test_the_documented_relabelling_labels_the_servers_series_with_namespace_and_pod(tmp_path: Path) -> None:
    """deploy/examples: the plain-Prometheus job's relabel_configs and the PodMonitor's relabelings, run by
    a real Prometheus on targets that carry what Kubernetes service discovery would give them.

    Debian's Prometheus is built without the Kubernetes discovery, so the targets come from a file with the
    same __meta_kubernetes_* labels instead; everything after discovery is the example as shipped.
    """
    plain = yaml.safe_load((ROOT / "deploy" / "examples" / "prometheus-inference-scrape.yml").read_text())
    (job,) = plain["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    monitor = yaml.safe_load((ROOT / "deploy" / "examples" / "vllm-podmonitor.yaml").read_text())
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "PodMonitor"
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["port"]

    traffic = Traffic("meta-llama/Llama-3.1-8B-Instruct", 2.0, 100, 50)
    annotated, monitored = FakeInferenceServer("vllm", traffic), FakeInferenceServer("vllm", traffic)
    try:

        def pod(name: str, address: str, container: str, **extra: str) -> dict[str, Any]:
            labels = {
                "__meta_kubernetes_namespace": "llm-serving",
                "__meta_kubernetes_pod_name": name,
                "__meta_kubernetes_pod_container_name": container,
                "__meta_kubernetes_pod_phase": "Running",
                **extra,
            }
            return {"targets": [address], "labels": labels}

        port = str(annotated.port)
        scrape = {"__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true"}
        groups = [
            # One pod, two containers with a port each: both become the annotated port, one target.
            pod(
                "vllm-0",
                "127.0.0.1:1",
                "vllm",
                **scrape,
                __meta_kubernetes_pod_annotation_prometheus_io_port=port,
            ),
            pod(
                "vllm-0",
                "127.0.0.1:2",
                "proxy",
                **scrape,
                __meta_kubernetes_pod_annotation_prometheus_io_port=port,
            ),
            # Not annotated, and annotated but not running: not scraped.
            pod("other-0", annotated.target, "app"),
            pod("vllm-1", annotated.target, "vllm", **scrape, __meta_kubernetes_pod_phase="Pending"),
        ]
        (tmp_path / "plain.json").write_text(json.dumps(groups))
        # What the operator gives a PodMonitor endpoint's target before the PodMonitor's own relabelings.
        operator = [pod("vllm-2", monitored.target, "vllm")]
        operator[0]["labels"]["container"] = "vllm"
        (tmp_path / "operator.json").write_text(json.dumps(operator))
        config = {
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": job["job_name"],
                    "file_sd_configs": [{"files": [str(tmp_path / "plain.json")]}],
                    "relabel_configs": job["relabel_configs"],
                },
                {
                    "job_name": "llm-serving/vllm",
                    "metrics_path": endpoint["path"],
                    "file_sd_configs": [{"files": [str(tmp_path / "operator.json")]}],
                    "relabel_configs": [_camel_to_snake(r) for r in endpoint["relabelings"]],
                },
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        with prometheus(tmp_path / "prometheus.yml", tmp_path / "prom") as prom:
            deadline = time.monotonic() + 60
            series: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                series = prom.query("vllm:generation_tokens_total")
                if len(series) >= 2:
                    break
                time.sleep(0.5)
            time.sleep(3)  # a few more scrapes: a duplicate target would show up by now
            series = prom.query("vllm:generation_tokens_total")
            targets = prom.get("/api/v1/targets")["activeTargets"]
    finally:
        annotated.close()
        monitored.close()
    by_pod = {s["metric"]["pod"]: s["metric"] for s in series}
    assert sorted(by_pod) == ["vllm-0", "vllm-2"], series
    for name, labels in by_pod.items():
        assert labels["namespace"] == "llm-serving", name
        assert labels["model_name"] == traffic.model and "container" not in labels, labels
    assert by_pod["vllm-0"]["instance"] == annotated.target
    assert len([t for t in targets if t["labels"]["job"] == "inference-servers"]) == 1


class _ConstantCarbon:
    """A carbon service at 400 g/kWh whose GPUs each carry 1 g of embodied carbon per second."""

    pue = 1.0
    wue_litres_per_kwh: float | None = None
    has_marginal = False
    market = None

    def segments(self, signal: str, t0: float, t1: float) -> list[tuple[float, float]]:
        return [(t1 - t0, 400.0)]

    def gpu_embodied_grams_per_second(self, name: str) -> float:
        return 1.0

    def node_embodied_grams_per_second(self) -> float | None:
        return None

    def intensities(self) -> tuple[IntensityState, ...]:
        return (IntensityState("DE", "static", "average", 400.0, 0.0),)

    def providers(self) -> tuple[()]:
        return ()

    def forecasts(self) -> tuple[()]:
        return ()

    def emission_factors(self) -> tuple[()]:
        return ()


@pytest.mark.parametrize("policy", ["proportional", "idle-baseline"])
def test_sci_embodied_share_is_time_held_times_attribution_share(tmp_path: Path, policy: str) -> None:
    """M in the SCI rules is footprint_process_gpu_embodied_emissions_grams_total summed over the pod.

    Pinned here what docs/inference.md says it is: a GPU's embodied carbon per second (TE / EL), charged
    only while the process holds the GPU (TiR), times the process's share of the energy attributed in
    that interval (RR / ToR): all of it for a process alone on its GPU, 3:1 for two processes at 60% and
    20% SM. Under idle-baseline, the share of the idle energy stays with the GPU, and so does its share
    of the embodied carbon.
    """
    lines = []
    for k in range(61):
        alone = [{"pid": 1, "comm": "vllm", "sm_util": 0.8}]
        shared = [{"pid": 2, "comm": "sglang", "sm_util": 0.6}, {"pid": 3, "comm": "tgi", "sm_util": 0.2}]
        leaves = [{"pid": 4, "comm": "vllm", "sm_util": 0.5}] if k < 30 else []
        gpus = [
            {
                "index": i,
                "uuid": f"GPU-{i}",
                "name": "NVIDIA H100",
                "power_w": 300.0,
                "energy_j": 300.0 * k,
                "processes": p,
            }
            for i, p in enumerate((alone, shared, leaves))
        ]
        lines.append(json.dumps({"t": float(k), "gpus": gpus}))
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    clock = [0.0]
    sampler = Sampler(
        ReplayGpuSource(str(tmp_path / "t.jsonl")),
        None,
        carbon=_ConstantCarbon(),  # type: ignore[arg-type]
        attribution=Attribution(
            policy=AttributionPolicy(policy, idle_watts=100.0 if policy == "idle-baseline" else None),
            resolver=WorkloadResolver(str(tmp_path / "noproc")),
            gpu_ledger=ProcessLedger("pid", 500, 600.0),
            cpu_ledger=ProcessLedger("pid", 500, 600.0),
        ),
        clock=lambda: clock[0],
        wall_clock=lambda: 1000.0 + clock[0],
    )
    while clock[0] <= 60.0:
        sampler.tick()
        clock[0] += 0.5
    gpu = {g.reading.index: g.embodied_emissions_g_total for g in sampler.snapshot.gpus}
    proc = {p.pid: p.embodied_emissions_g_total for p in sampler.snapshot.gpu_processes}
    assert gpu[0] == pytest.approx(60.0)  # 1 g/s for the 60 s the GPU was watched
    held = 1.0 if policy == "proportional" else (300.0 - 100.0) / 300.0  # the attributed share of the energy
    assert proc["1"] == pytest.approx(held * gpu[0], rel=1e-9)
    assert proc["2"] == pytest.approx(0.75 * held * gpu[1], rel=1e-9)
    assert proc["3"] == pytest.approx(0.25 * held * gpu[1], rel=1e-9)
    assert proc["4"] == pytest.approx(held * 30.0, rel=0.02)  # held the GPU for the first 30 s only
