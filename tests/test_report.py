"""footprint-exporter report against a real Prometheus holding two days of known data (promtool backfill).

The data (tests/report_data.py) has two nodes, four workloads in two namespaces plus a Slurm job, a counter
reset mid-period, a scrape gap, a stale intensity, a world-average zone, a GPU down, market figures on one
node only, a BMC on one node only, and token counters. Every format's figures are checked against the truth
the generator integrated, within 0.5%.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import bcrypt
import pytest
import requests
import trustme

from exporter.report.main import main as report_main
from tests import report_data as data
from tests.chromium import browser, save_for_docs
from tests.exporter_proc import start_exporter
from tests.prom_procs import RunningServer, binary, free_port, prometheus

pytestmark = pytest.mark.integration

KWH = data.JOULES_PER_KWH
PERIOD = ["--from", "2025-03-01T00:00:00Z", "--to", "2025-03-03T00:00:00Z"]
TOLERANCE = 0.005


@dataclass
class Store:
    prom: RunningServer
    truth: data.Truth
    workdir: Path

    @property
    def url(self) -> str:
        return self.prom.url


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    workdir = tmp_path_factory.mktemp("report-prom")
    source = workdir / "footprint.om"
    truth = data.build(source)
    blocks = subprocess.run(
        [binary("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(source), str(workdir / "data")],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert blocks.returncode == 0, blocks.stdout[-2000:] + blocks.stderr[-2000:]
    source.unlink()  # 27 MB; the blocks hold it now
    config = workdir / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1h\n")
    # The data is from 2025: keep it whatever today's date is.
    with prometheus(config, workdir, extra_args=["--storage.tsdb.retention.time=100y"]) as prom:
        yield Store(prom, truth, workdir)


def run_report(store: Store, tmp_path: Path, *args: str, fmt: str = "csv") -> str:
    out = tmp_path / f"report.{fmt}"
    code = report_main(
        ["--prometheus.url", store.url, *PERIOD, "--format", fmt, "--output", str(out), *args], {}
    )
    assert code == 0
    return out.read_text(encoding="utf-8")


def close(actual: float | str | None, expected: float, tolerance: float = TOLERANCE) -> bool:
    assert actual not in (None, ""), f"expected {expected}, got an empty figure"
    value = float(actual)  # type: ignore[arg-type]
    if expected == 0:
        return abs(value) < 1e-9
    return abs(value - expected) / abs(expected) <= tolerance


def csv_rows(text: str, label: str) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[-1][label] == "total" and rows[-1]["row"] == "total"
    return {r[label]: r for r in rows[:-1]}, rows[-1]


def test_csv_by_namespace_matches_the_truth(store: Store, tmp_path: Path) -> None:
    truth = store.truth
    rows, total = csv_rows(run_report(store, tmp_path, "--by", "namespace"), "namespace")
    assert set(rows) == {"team-a", "team-b", "", "(unattributed)"}
    assert rows["(unattributed)"]["row"] == "unattributed"
    for group in ("team-a", "team-b", ""):
        row = rows[group]
        assert close(row["energy_kwh"], truth.total("energy_j", namespace=group) / KWH), group
        assert close(row["emissions_location_kg"], truth.total("location_g", namespace=group) / 1000), group
        assert close(row["facility_energy_kwh"], truth.total("facility_j", namespace=group) / KWH), group
    unattributed = {"energy_j": 0.0, "location_g": 0.0}
    for part in unattributed:
        unattributed[part] = sum(v for (_, w), v in truth.values[part].items() if w is None)
    assert close(rows["(unattributed)"]["energy_kwh"], unattributed["energy_j"] / KWH)
    assert close(rows["(unattributed)"]["emissions_location_kg"], unattributed["location_g"] / 1000)
    # Totals: the whole measured energy of both nodes, through the counter reset on node-a.
    assert close(total["energy_kwh"], truth.total("energy_j") / KWH)
    assert close(total["emissions_location_kg"], truth.total("location_g") / 1000)
    assert close(total["embodied_kg"], truth.total("embodied_g") / 1000)
    assert close(total["facility_energy_kwh"], truth.total("facility_j") / KWH)
    assert close(total["unmetered_energy_kwh"], truth.total("unmetered_j") / KWH)
    # Market: node-b only. team-b and the Slurm job ran there; team-a and the total cannot have one.
    assert close(rows["team-b"]["emissions_market_kg"], truth.total("market_g", namespace="team-b") / 1000)
    assert close(rows[""]["emissions_market_kg"], truth.total("market_g", namespace="") / 1000)
    assert rows["team-a"]["emissions_market_kg"] == "" and total["emissions_market_kg"] == ""
    assert "market_missing" in rows["team-a"]["notes"].split(";")
    # Water: node-a only (WUE 1.8); team-a ran only there, so it gets node-a's water by its energy share.
    node_a_energy = truth.total("energy_j", data.A)
    share = truth.total("energy_j", data.A, namespace="team-a") / node_a_energy
    assert close(rows["team-a"]["water_l"], truth.total("water_l") * share)
    assert rows["team-b"]["water_l"] == "" and total["water_l"] == ""
    # Tokens: infer-1 (vLLM) at 200 W and 500 tokens/s, batch-2 (SGLang) at 250 W and 100 tokens/s.
    tokens = truth.tokens["infer-1"] + truth.tokens["batch-2"]
    assert close(rows["team-b"]["tokens"], tokens)
    gpu_joules = truth.total("energy_j", pod="infer-1") + truth.total("energy_j", pod="batch-2")
    assert close(rows["team-b"]["energy_per_token_j"], gpu_joules / tokens)
    assert rows["team-a"]["tokens"] == "" and rows["team-a"]["energy_per_token_j"] == ""
    # The rows add up to the total.
    assert close(sum(float(r["energy_kwh"]) for r in rows.values()), float(total["energy_kwh"]), 1e-9)


def test_the_counter_reset_is_counted_not_subtracted(store: Store, tmp_path: Path) -> None:
    """node-a's counters restart from zero mid-period: last minus first is far off; the report is not."""
    values = {}
    for t in (data.T0, data.T1):
        result = store.prom.get(
            "/api/v1/query", query="sum(footprint_gpu_energy_joules_total{instance='node-a:9877'})", time=t
        )["result"]
        values[t] = float(result[0]["value"][1])
    naive_kwh = (values[data.T1] - values[data.T0]) / KWH
    rows, _ = csv_rows(run_report(store, tmp_path, "--by", "instance"), "instance")
    a = rows[data.A]
    assert close(a["energy_kwh"], store.truth.total("energy_j", data.A) / KWH)
    # The reset 20 h into the 48 h period drops the first 20 h from a naive difference.
    assert naive_kwh < 0.6 * float(a["gpu_energy_kwh"]), "the fixture must reset node-a's counters"
    assert "exporter_restart" in a["notes"].split(";")


def test_json_by_user_matches_the_truth(store: Store, tmp_path: Path) -> None:
    doc = json.loads(run_report(store, tmp_path, "--by", "user", fmt="json"))
    assert doc["report"]["by"] == "user"
    assert doc["report"]["from"] == "2025-03-01T00:00:00Z" and doc["report"]["to"] == "2025-03-03T00:00:00Z"
    rows = {r["user"]: r for r in doc["rows"]}
    assert set(rows) == {"alice", "bob", "carol", "dave", "(unattributed)"}
    for user in ("alice", "bob", "carol", "dave"):
        assert close(rows[user]["energy_kwh"], store.truth.total("energy_j", user=user) / KWH), user
        assert close(rows[user]["embodied_kg"], store.truth.total("embodied_g", user=user) / 1000), user
    # carol's batch process started and ended inside the period: increase() extrapolates its edges.
    assert close(rows["carol"]["energy_kwh"], 5.0)
    assert rows["alice"]["emissions_market_kg"] is None
    assert close(rows["dave"]["gpu_energy_kwh"], 0.0) and close(rows["dave"]["cpu_energy_kwh"], 0.96)
    total = doc["total"]
    assert close(total["energy_kwh"], store.truth.total("energy_j") / KWH)
    assert close(total["emissions_location_kg"], store.truth.total("location_g") / 1000)
    assert total["emissions_market_kg"] is None
    assert close(total["tokens"], sum(store.truth.tokens.values()))
    assert close(rows["bob"]["energy_per_token_j"], 200.0 / data.TOKENS_PER_S)
    assert close(rows["carol"]["energy_per_token_j"], 250.0 / data.BATCH_TOKENS_PER_S)
    assert rows["dave"]["tokens"] is None and rows["dave"]["energy_per_token_j"] is None
    codes = {n["code"] for n in doc["quality"]["notes"]}
    assert {"world_average", "stale_intensity", "exporter_restart", "coverage_gap", "gpu_down"} <= codes
    assert {"market_missing", "water_missing", "components_only", "source_down", "unmeasured_device"} <= codes
    assert "market_excludes_unmetered" in codes  # node-b has a BMC and carbon.market
    unmeasured = next(n for n in doc["quality"]["notes"] if n["code"] == "unmeasured_device")
    assert unmeasured["instances"] == [data.B] and "GPU-gpu1 (read_failed)" in unmeasured["text"]
    coverage = doc["quality"]["coverage"]
    # node-a: no sample stored for an hour (steps of 5 minutes: 11 of 576 empty); node-b: all there.
    assert coverage[data.B] == 1.0 and 0.975 < coverage[data.A] < 0.985
    zones = {(f["name"], f["provider"]) for f in doc["factors"] if f["kind"] == "grid_intensity"}
    assert zones == {("DE", "electricitymaps"), ("WORLD", "embedded")}
    de = next(f for f in doc["factors"] if f["name"] == "DE")
    assert de["min"] == 300.0 and de["max"] == 530.0 and de["instances"] == [data.A]
    world = next(f for f in doc["factors"] if f["name"] == "WORLD")
    assert world["source"] == "Ember" and world["year"] == "2023" and world["basis"] == "lifecycle"
    assert sorted(f["value"] for f in doc["factors"] if f["kind"] == "pue") == [1.2, 1.5]
    days = doc["daily"]
    assert [d["from"] for d in days] == ["2025-03-01T00:00:00Z", "2025-03-02T00:00:00Z"]
    assert close(sum(sum(d["energy_kwh"].values()) for d in days), total["energy_kwh"])


def test_node_labels_group_node_totals(store: Store, tmp_path: Path) -> None:
    for label in ("cluster", "instance"):
        rows, total = csv_rows(run_report(store, tmp_path, "--by", label), label)
        keys = {data.A: data.A, data.B: data.B} if label == "instance" else {data.A: "train", data.B: "infer"}
        assert set(rows) == set(keys.values())
        for instance, key in keys.items():
            assert close(rows[key]["energy_kwh"], store.truth.total("energy_j", instance) / KWH)
            assert close(rows[key]["emissions_location_kg"], store.truth.total("location_g", instance) / 1000)
            assert rows[key]["row"] == "group"
        assert close(
            rows["infer" if label == "cluster" else data.B]["emissions_market_kg"],
            store.truth.total("market_g") / 1000,
        )
        assert close(total["energy_kwh"], store.truth.total("energy_j") / KWH)


def test_match_restricts_the_series(store: Store, tmp_path: Path) -> None:
    rows, total = csv_rows(
        run_report(store, tmp_path, "--by", "namespace", "--match", 'cluster="train"'), "namespace"
    )
    assert set(rows) == {"team-a", "(unattributed)"}
    assert close(total["energy_kwh"], store.truth.total("energy_j", data.A) / KWH)


def test_markdown_carries_the_figures(store: Store, tmp_path: Path) -> None:
    text = run_report(store, tmp_path, "--by", "namespace", fmt="markdown")
    total_kwh = store.truth.total("energy_j") / KWH
    total_row = next(line for line in text.splitlines() if line.startswith("| **total**"))
    cells = [c.strip().strip("*") for c in total_row.strip("|").split("|")]
    assert close(cells[1].replace(",", ""), total_kwh)
    assert close(cells[3].replace(",", ""), store.truth.total("location_g") / 1000)
    assert cells[4] == "–"  # no market figure for the whole: node-a has no carbon.market
    assert "**world_average** (warning)" in text and "**stale_intensity** (warning)" in text
    team_b = next(line for line in text.splitlines() if line.startswith("| team-b |"))
    tokens = store.truth.tokens["infer-1"] + store.truth.tokens["batch-2"]
    joules = store.truth.total("energy_j", pod="infer-1") + store.truth.total("energy_j", pod="batch-2")
    assert f"| {joules / tokens:.3f} |" in team_b  # joules per token


def test_html_renders_in_chromium_with_charts_and_no_errors(store: Store, tmp_path: Path) -> None:
    html = run_report(store, tmp_path, "--by", "namespace", fmt="html")
    assert "<script" not in html.lower() and "http://" not in html.replace(store.url, "")
    page = tmp_path / "report.html"
    with browser() as chrome:
        found = chrome.open(page.as_uri())
        assert found.console_errors == [], found.messages
        assert chrome.evaluate("document.querySelectorAll('svg.chart').length") == 3
        # Two days, four groups (team-a, team-b, the Slurm job, unattributed): 8 bars.
        assert chrome.evaluate("document.querySelectorAll('svg.chart rect.bar').length") == 8
        lines = chrome.evaluate("document.querySelectorAll('svg.chart polyline.line').length")
        assert lines == 3  # DE and WORLD intensity, one budget
        total_cell = chrome.evaluate("document.querySelector('tr.total td:nth-child(2)').textContent")
        assert close(total_cell.replace(",", ""), store.truth.total("energy_j") / KWH)
        width = chrome.evaluate("document.documentElement.scrollWidth")
        assert width <= 1000, "the page must fit a 1000 px window"
        png = chrome.screenshot()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
    (tmp_path / "report.png").write_bytes(png)
    save_for_docs("report.png", page.as_uri(), height=1500)


def test_the_page_loads_nothing_from_outside(store: Store, tmp_path: Path) -> None:
    """The page's policy refuses any fetch: an injected outside image is blocked and reported, not loaded."""
    html = run_report(store, tmp_path, "--by", "namespace", fmt="html")
    tampered = tmp_path / "tampered.html"
    tampered.write_text(html.replace("<h1>", '<img src="https://example.invalid/pixel.png"><h1>'))
    with browser() as chrome:
        found = chrome.open(tampered.as_uri())
    assert any("Content Security Policy" in e or "Refused to load" in e for e in found.console_errors), (
        found.messages
    )


def test_the_console_script_runs_the_report(store: Store, tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "footprint-exporter"
    result = subprocess.run(
        [
            str(script),
            "report",
            "--prometheus.url",
            store.url,
            *PERIOD,
            "--by",
            "namespace",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert close(json.loads(result.stdout)["total"]["energy_kwh"], store.truth.total("energy_j") / KWH)


def test_a_period_without_data_exits_1(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = report_main(
        ["--prometheus.url", store.url, "--from", "2024-01-01T00:00:00Z", "--to", "2024-01-02T00:00:00Z"], {}
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err and "no footprint energy series" in err


def test_unreachable_prometheus_exits_1_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = report_main(["--prometheus.url", f"http://127.0.0.1:{free_port()}", *PERIOD], {})
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err
    assert err.startswith("footprint-exporter report: error: cannot reach Prometheus at http://127.0.0.1:")


@pytest.fixture(scope="module")
def secured(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A second Prometheus over a copy of the blocks, with TLS and basic auth (its --web.config.file)."""
    workdir = tmp_path_factory.mktemp("report-prom-tls")
    (workdir / "data").mkdir()
    for block in (store.workdir / "data").iterdir():
        if block.is_dir() and re.fullmatch(r"[0-9A-Z]{26}", block.name):
            shutil.copytree(block, workdir / "data" / block.name)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(workdir / "cert.pem"))
    cert.private_key_pem.write_to_path(str(workdir / "key.pem"))
    ca.cert_pem.write_to_path(str(workdir / "ca.pem"))
    hashed = bcrypt.hashpw(SECRET.encode(), bcrypt.gensalt(4)).decode()
    (workdir / "web.yml").write_text(
        f"tls_server_config:\n  cert_file: {workdir / 'cert.pem'}\n  key_file: {workdir / 'key.pem'}\n"
        f"basic_auth_users:\n  reporter: '{hashed}'\n"
    )
    (workdir / "prometheus.yml").write_text("global:\n  scrape_interval: 1h\n")
    port = free_port()
    with (workdir / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                "--storage.tsdb.retention.time=100y",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--web.config.file={workdir / 'web.yml'}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (workdir / "prometheus.log").read_text()[-3000:]
            try:
                ready = requests.get(
                    url + "/-/ready", verify=str(workdir / "ca.pem"), auth=("reporter", SECRET), timeout=2
                )
                if ready.status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, (workdir / "prometheus.log").read_text()[-3000:]
            time.sleep(0.2)
        yield url, workdir / "ca.pem"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


SECRET = "report-secret-42"


def test_tls_and_basic_auth_from_the_environment_or_a_file(
    store: Store, secured: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, ca = secured
    args = [
        "--prometheus.url",
        url,
        *PERIOD,
        "--by",
        "namespace",
        "--format",
        "json",
        "--prometheus.ca-file",
        str(ca),
    ]
    env = {"FOOTPRINT_PROMETHEUS_USERNAME": "reporter", "FOOTPRINT_PROMETHEUS_PASSWORD": SECRET}
    assert report_main(args, env) == 0
    doc = json.loads(capsys.readouterr().out)
    assert close(doc["total"]["energy_kwh"], store.truth.total("energy_j") / KWH)
    password = tmp_path / "password"
    password.write_text(SECRET + "\n")
    file_args = [*args, "--prometheus.username", "reporter", "--prometheus.password-file", str(password)]
    assert report_main(file_args, {}) == 0
    assert close(
        json.loads(capsys.readouterr().out)["total"]["energy_kwh"], store.truth.total("energy_j") / KWH
    )
    # A wrong password, and no CA: one line each, exit 1, no secret in it.
    assert report_main(args, {**env, "FOOTPRINT_PROMETHEUS_PASSWORD": "wrong"}) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith("refused the credentials (HTTP 401)") and "\n" not in err and "wrong" not in err
    assert report_main(args[:-2], env) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"footprint-exporter report: error: TLS to {url} failed") and "\n" not in err
    assert SECRET not in err


def test_bearer_token_is_sent_and_api_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Prometheus itself takes no bearer tokens; proxies in front of it do. This loopback server stands for
    one and answers as Prometheus' API does on a bad query (status error, errorType, error)."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            body = json.dumps(
                {"status": "error", "errorType": "bad_data", "error": "query too expensive"}
            ).encode()
            self.send_response(422)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = tmp_path / "token"
    token.write_text("tok-123\n")
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        code = report_main(["--prometheus.url", url, *PERIOD, "--prometheus.token-file", str(token)], {})
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err.strip()
    assert code == 1 and seen and seen[0] == "Bearer tok-123"
    assert (
        err == f"footprint-exporter report: error: Prometheus at {url} answered HTTP 422: query too expensive"
    )


def test_days_cut_at_the_period_edges_add_up_to_the_total(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "partial.json"
    args = ["--prometheus.url", store.url, "--from", "2025-03-01T06:00:00Z", "--to", "2025-03-02T18:00:00Z"]
    assert report_main([*args, "--by", "cluster", "--format", "json", "--output", str(out)], {}) == 0
    doc = json.loads(out.read_text())
    days = doc["daily"]
    assert [(d["from"], d["to"]) for d in days] == [
        ("2025-03-01T06:00:00Z", "2025-03-02T00:00:00Z"),
        ("2025-03-02T00:00:00Z", "2025-03-02T18:00:00Z"),
    ]
    total = doc["total"]["energy_kwh"]
    assert close(sum(sum(d["energy_kwh"].values()) for d in days), total)
    # 36 hours of the 48: between 70% and 80% of the whole (the power changes by the hour).
    assert 0.7 < total / (store.truth.total("energy_j") / KWH) < 0.8


@pytest.mark.timeout(240)
def test_report_on_what_prometheus_scraped_from_the_real_exporter(tmp_path: Path) -> None:
    """The series names the report reads are the ones the exporter serves: a simulated node with a zone,
    a WUE and a market configuration, scraped every second, reported over what Prometheus stored."""
    config = tmp_path / "exporter.yml"
    config.write_text(
        "carbon:\n  zone: FR\n  pue: 1.4\n  wue: 1.5\n  market:\n    instruments:\n"
        "      - {name: ppa, share: 0.5, grams_per_kwh: 0}\n    residual_grams_per_kwh: 420\n"
    )
    exporter = start_exporter(["--source.gpu=simulated", "--source.cpu=estimated", f"--config.file={config}"])
    try:
        (tmp_path / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: footprint\n"
            f"    static_configs:\n      - targets: ['{exporter.instance}']\n"
        )
        with prometheus(tmp_path / "prometheus.yml", tmp_path / "prom") as prom:
            deadline = time.monotonic() + 90
            while True:
                stored = prom.query("count_over_time(footprint_samples_total[5m])")
                if stored and float(stored[0]["value"][1]) >= 25:
                    break
                assert time.monotonic() < deadline, "Prometheus stored too few scrapes"
                time.sleep(1)
            # The period: from a stored scrape (once every counter exists: the water counter appears after
            # the first tick) to the last one, so no edge needs extrapolating.
            scrapes = prom.get("/api/v1/query", query="footprint_samples_total[5m]")["result"][0]["values"]
            start, end = float(scrapes[3][0]), float(scrapes[-1][0])

            def energy_at(t: float) -> float:
                q = "sum(footprint_gpu_energy_joules_total) + sum(footprint_cpu_energy_joules_total)"
                return float(prom.get("/api/v1/query", query=q, time=t)["result"][0]["value"][1])

            truth_kwh = (energy_at(end) - energy_at(start)) / KWH
            out = tmp_path / "live.json"
            args = [
                "--prometheus.url",
                prom.url,
                "--from",
                f"{start:.3f}",
                "--to",
                f"{end:.3f}",
                "--by",
                "namespace",
            ]
            assert report_main([*args, "--format", "json", "--output", str(out)], {}) == 0
    finally:
        exporter.stop()
    doc = json.loads(out.read_text())
    total = doc["total"]
    assert close(total["energy_kwh"], truth_kwh)
    assert total["emissions_market_kg"] is not None and total["emissions_market_kg"] > 0
    assert close(total["facility_energy_kwh"], total["energy_kwh"] * 1.4, 1e-6)
    assert close(total["water_l"], total["energy_kwh"] * 1.5)
    zones = {(f["name"], f["provider"], f["basis"]) for f in doc["factors"] if f["kind"] == "grid_intensity"}
    assert zones == {("FR", "embedded", "lifecycle")}
    codes = {n["code"] for n in doc["quality"]["notes"]}
    assert "world_average" not in codes and "market_missing" not in codes
    namespaces = {r["namespace"] for r in doc["rows"]}
    assert "(unattributed)" in namespaces and len(namespaces) >= 3  # the simulated pods' namespaces
