"""Fake LLM inference servers on loopback serving the real /metrics names, labels and counting behaviour.

Sources of the shapes (metric names, types, labels, when a counter moves):
- vLLM, V1 engine: vllm/v1/metrics/loggers.py (PrometheusStatLogger): prometheus_client counters
  ``vllm:prompt_tokens``, ``vllm:generation_tokens`` (served with ``_total`` and a ``_created`` gauge)
  with labels ``model_name`` (the served model name) and ``engine`` (engine index), advanced by every
  engine step's IterationStats; ``vllm:request_success`` with ``finished_reason`` created up front
  for every FinishReason (``stop``, ``length``, ``abort``: vllm/v1/engine/__init__.py), advanced when a
  request finishes. docs.vllm.ai "Production Metrics" lists the same names for the V0 engine.
- SGLang: python/sglang/srt/metrics/collector.py (TokenizerMetricsCollector): counters
  ``sglang:prompt_tokens_total``, ``sglang:generation_tokens_total``, ``sglang:num_requests_total``
  labelled ``model_name``, advanced when a request finishes.
- Hugging Face TGI: docs/source/reference/metrics.md: histograms ``tgi_request_generated_tokens`` and
  ``tgi_request_input_length`` (one observation per request) and the counter ``tgi_request_success``;
  no model label. TGI's Rust exporter serves counters under the name given, without ``_total``.
- NVIDIA Triton with the TensorRT-LLM backend: Triton's metrics docs (``nv_inference_request_success``,
  ``nv_inference_count``, ``nv_inference_exec_count``, labels ``model`` and ``version``, counters without
  ``_total``) and triton-inference-server/tensorrtllm_backend custom_metrics_reporter.cc (histograms
  ``nv_llm_output_token_len`` / ``nv_llm_input_token_len`` with ``response_metric_type``
  ``total_output_tokens`` / ``total_input_tokens``, buckets 10, 50, 100, 500, 1000).

The inconvenient parts are kept: SGLang, TGI and Triton count a request's tokens only when it finishes
(steps, not a smooth line), counters start again from 0 when the server restarts (``restart()``), and
vLLM counts the tokens of aborted requests although they are not a success.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KINDS = ("vllm", "sglang", "tgi", "triton")
VLLM_STEP_S = 0.05  # one engine step: vLLM's counters move by a step's tokens
VLLM_REASONS = ("stop", "length", "abort")
HISTOGRAM_BUCKETS = (10.0, 50.0, 100.0, 500.0, 1000.0)


@dataclass(frozen=True)
class Traffic:
    """Steady traffic: requests per second, each with the same prompt and generated token counts."""

    model: str
    requests_per_s: float
    prompt_tokens: int  # per request
    generated_tokens: int  # per request
    aborted_per_s: float = 0.0  # vLLM: requests the client gave up on (their tokens were generated)

    @property
    def generation_tps(self) -> float:
        """Generated tokens per second, the truth the rules must find (aborted requests' tokens included)."""
        return (self.requests_per_s + self.aborted_per_s) * self.generated_tokens

    @property
    def prompt_tps(self) -> float:
        return (self.requests_per_s + self.aborted_per_s) * self.prompt_tokens


def _labels(pairs: dict[str, str]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(pairs.items())) + "}"


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self, name: str, kind: str, help_text: str, samples: list[tuple[str, dict[str, str], float]]
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for suffix, labels, value in samples:
            self.lines.append(f"{name}{suffix}{_labels(labels)} {float(value)!r}")

    def histogram(self, name: str, help_text: str, labels: dict[str, str], value: float, count: int) -> None:
        """A histogram of ``count`` observations that all equal ``value``."""
        samples = [
            ("_bucket", {**labels, "le": str(le)}, count if value <= le else 0) for le in HISTOGRAM_BUCKETS
        ]
        samples.append(("_bucket", {**labels, "le": "+Inf"}, count))
        samples.append(("_sum", labels, value * count))
        samples.append(("_count", labels, count))
        self.family(name, "histogram", help_text, samples)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


class FakeInferenceServer:
    """One inference server's /metrics on 127.0.0.1; its counters follow ``traffic`` from its start."""

    def __init__(self, kind: str, traffic: Traffic, clock: Callable[[], float] = time.monotonic) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown server kind {kind!r}")
        if kind != "vllm" and traffic.aborted_per_s:
            raise ValueError("only the vLLM fake models aborted requests")
        self.kind = kind
        self.traffic = traffic
        self._clock = clock
        self._started = clock()
        self._wall_started = time.time()
        self.scrapes = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                fake.scrapes += 1
                body = fake.exposition().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                # The scraper may give up mid-answer (Prometheus stopping): nothing left to answer then.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def restart(self) -> None:
        """The server process starts again: every counter from 0."""
        self._started = self._clock()
        self._wall_started = time.time()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _finished(self, per_s: float) -> int:
        """Requests finished since the start at ``per_s`` per second (whole requests only)."""
        return math.floor((self._clock() - self._started) * per_s + 1e-9)

    def exposition(self) -> str:
        return {"vllm": self._vllm, "sglang": self._sglang, "tgi": self._tgi, "triton": self._triton}[
            self.kind
        ]()

    def _vllm(self) -> str:
        tr = self.traffic
        steps = math.floor((self._clock() - self._started) / VLLM_STEP_S)
        labels = {"model_name": tr.model, "engine": "0"}
        out = _Exposition()
        out.family(
            "vllm:num_requests_running",
            "gauge",
            "Number of requests in model execution batches.",
            [("", labels, 4)],
        )
        for name, per_s, help_text in (
            ("vllm:prompt_tokens", tr.prompt_tps, "Number of prefill tokens processed."),
            ("vllm:generation_tokens", tr.generation_tps, "Number of generation tokens processed."),
        ):
            out.family(f"{name}_total", "counter", help_text, [("", labels, steps * per_s * VLLM_STEP_S)])
            out.family(f"{name}_created", "gauge", help_text, [("", labels, self._wall_started)])
        answered = {
            "stop": 0.75 * tr.requests_per_s,
            "length": 0.25 * tr.requests_per_s,
            "abort": tr.aborted_per_s,
        }
        out.family(
            "vllm:request_success_total",
            "counter",
            "Count of successfully processed requests.",
            [("", {**labels, "finished_reason": r}, self._finished(answered[r])) for r in VLLM_REASONS],
        )
        done = self._finished(tr.requests_per_s)
        out.histogram(
            "vllm:request_generation_tokens",
            "Number of generation tokens processed.",
            labels,
            tr.generated_tokens,
            done,
        )
        return out.text()

    def _sglang(self) -> str:
        tr = self.traffic
        done = self._finished(tr.requests_per_s)
        labels = {"model_name": tr.model}
        out = _Exposition()
        out.family(
            "sglang:prompt_tokens_total",
            "counter",
            "Number of prefill tokens processed.",
            [("", labels, done * tr.prompt_tokens)],
        )
        out.family(
            "sglang:generation_tokens_total",
            "counter",
            "Number of generation tokens processed.",
            [("", labels, done * tr.generated_tokens)],
        )
        out.family(
            "sglang:num_requests_total", "counter", "Number of requests processed.", [("", labels, done)]
        )
        return out.text()

    def _tgi(self) -> str:
        tr = self.traffic
        done = self._finished(tr.requests_per_s)
        out = _Exposition()
        out.family("tgi_request_count", "counter", "Total number of requests", [("", {}, done)])
        out.family("tgi_request_success", "counter", "Number of successful requests", [("", {}, done)])
        out.histogram(
            "tgi_request_generated_tokens", "Generated tokens per request", {}, tr.generated_tokens, done
        )
        out.histogram(
            "tgi_request_input_length", "Input token length per request", {}, tr.prompt_tokens, done
        )
        return out.text()

    def _triton(self) -> str:
        tr = self.traffic
        done = self._finished(tr.requests_per_s)
        labels = {"model": tr.model, "version": "1"}
        out = _Exposition()
        for name, help_text in (
            ("nv_inference_request_success", "Number of successful inference requests, all batch sizes"),
            ("nv_inference_count", "Number of inferences performed (does not include cached requests)"),
            (
                "nv_inference_exec_count",
                "Number of model executions performed (does not include cached requests)",
            ),
        ):
            out.family(name, "counter", help_text, [("", labels, done)])
        out.histogram(
            "nv_llm_output_token_len",
            "TRT LLM response metrics",
            {**labels, "response_metric_type": "total_output_tokens"},
            tr.generated_tokens,
            done,
        )
        out.histogram(
            "nv_llm_input_token_len",
            "TRT LLM response metrics",
            {**labels, "response_metric_type": "total_input_tokens"},
            tr.prompt_tokens,
            done,
        )
        return out.text()


@contextmanager
def inference_server(kind: str, traffic: Traffic) -> Iterator[FakeInferenceServer]:
    server = FakeInferenceServer(kind, traffic)
    try:
        yield server
    finally:
        server.close()
