"""The report's arithmetic and arguments without Prometheus: rows, totals, allocation, times, flags."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from exporter.report.collect import day_buckets
from exporter.report.formats import iso, number, to_csv, to_json
from exporter.report.main import ArgumentError, main, parse_match, parse_time
from exporter.report.model import UNATTRIBUTED, Report, Row
from exporter.report.rows import Stored, build_rows, total_of
from exporter.report.svg import nice_ticks, time_ticks

KWH = 3.6e6


def workload_store() -> Stored:
    """Two nodes; a on both, b on n1 only; n1 has market and water, n2 neither."""
    return Stored(
        workload=True,
        parts={
            "energy_gpu": {("a", "n1"): 2 * KWH, ("a", "n2"): 1 * KWH, ("b", "n1"): 1 * KWH},
            "energy_cpu": {("a", "n1"): 0.5 * KWH, ("b", "n1"): 0.5 * KWH},
            "loc_gpu": {("a", "n1"): 800.0, ("a", "n2"): 300.0, ("b", "n1"): 400.0},
            "loc_cpu": {("a", "n1"): 200.0, ("b", "n1"): 200.0},
            "mkt_gpu": {("a", "n1"): 100.0, ("b", "n1"): 50.0},
            "mkt_cpu": {("a", "n1"): 25.0, ("b", "n1"): 25.0},
            "emb_gpu": {("a", "n1"): 30.0, ("a", "n2"): 10.0, ("b", "n1"): 15.0},
        },
        node={
            "energy_gpu": {"n1": 4 * KWH, "n2": 2 * KWH},
            "energy_cpu": {"n1": 2 * KWH, "n2": 1 * KWH},
            "loc_gpu": {"n1": 1600.0, "n2": 600.0},
            "loc_cpu": {"n1": 800.0, "n2": 300.0},
            "mkt_gpu": {"n1": 200.0},
            "mkt_cpu": {"n1": 100.0},
            "emb_gpu": {"n1": 60.0, "n2": 20.0},
            "emb_node": {"n1": 5.0, "n2": 5.0},
            "water": {"n1": 12.0},
        },
        pue={"n1": 1.2, "n2": 1.5},
        coverage={"n1": 1.0, "n2": 0.5},
    )


def rows_by_group(stored: Stored) -> dict[str, Row]:
    return {r.group: r for r in build_rows(stored)}


def test_workload_rows_and_the_unattributed_rest() -> None:
    stored = workload_store()
    rows = rows_by_group(stored)
    a, b, rest = rows["a"], rows["b"], rows[UNATTRIBUTED]
    assert a.figures.energy_kwh == pytest.approx(3.5) and b.figures.energy_kwh == pytest.approx(1.5)
    # The rest is node minus workloads, per node: (6 - 4) on n1 and (3 - 1) on n2.
    assert rest.kind == "unattributed" and rest.figures.energy_kwh == pytest.approx(4.0)
    assert rest.figures.emissions_location_kg == pytest.approx((2400 - 1600 + 900 - 300) / 1000)
    assert rest.figures.embodied_kg == pytest.approx((65 - 45 + 25 - 10) / 1000)
    # Facility energy: each node's energy times its own PUE.
    assert a.figures.facility_energy_kwh == pytest.approx(2.5 * 1.2 + 1.0 * 1.5)
    # Market: a used n2, which has none, so a has none; b ran on n1 only.
    assert a.figures.emissions_market_kg is None and "market_missing" in a.notes
    assert b.figures.emissions_market_kg == pytest.approx(0.075)
    # Water: n1's 12 L split by energy share (b: 1.5 of n1's 6 kWh); a used n2 without WUE.
    assert b.figures.water_l == pytest.approx(12 * 1.5 / 6)
    assert a.figures.water_l is None and "water_missing" in a.notes
    # Coverage: energy-weighted over the nodes the group used.
    assert a.figures.coverage == pytest.approx((2.5 * 1.0 + 1.0 * 0.5) / 3.5)
    assert "coverage_gap" in a.notes and "coverage_gap" not in b.notes


def test_totals_are_the_node_measurements_and_all_or_nothing() -> None:
    stored = workload_store()
    rows = build_rows(stored)
    total = total_of(rows, stored)
    assert total.energy_kwh == pytest.approx(9.0)  # the nodes' 6 + 3
    assert total.emissions_location_kg == pytest.approx(3.3)
    assert total.emissions_market_kg is None  # n2 has no market figure: no total
    assert total.gpu_energy_kwh == pytest.approx(6.0) and total.cpu_energy_kwh == pytest.approx(3.0)
    assert total.unmetered_energy_kwh is None  # no BMC anywhere
    assert total.coverage == pytest.approx((6 * 1.0 + 3 * 0.5) / 9)
    assert [r.group for r in rows][-1] == UNATTRIBUTED


def test_node_grouping_has_no_unattributed_row() -> None:
    stored = Stored(
        workload=False,
        parts={
            "energy_gpu": {("eu", "n1"): 4 * KWH, ("us", "n2"): 2 * KWH},
            "energy_cpu": {("eu", "n1"): 2 * KWH, ("us", "n2"): 1 * KWH},
            "energy_unmetered": {("eu", "n1"): 1 * KWH},
            "loc_gpu": {("eu", "n1"): 1.0, ("us", "n2"): 1.0},
        },
    )
    rows = rows_by_group(stored)
    assert set(rows) == {"eu", "us"}
    assert rows["eu"].figures.energy_kwh == pytest.approx(7.0)
    assert rows["us"].figures.unmetered_energy_kwh is None
    assert rows["eu"].figures.facility_energy_kwh is None and "pue_missing" in rows["eu"].notes


def test_tokens_of_a_pod_split_among_the_groups_its_energy_went_to() -> None:
    stored = workload_store()
    stored.tokens = {("ns", "pod-1"): 1000.0}
    stored.pod_energy = {("a", "ns", "pod-1"): 300.0, ("b", "ns", "pod-1"): 100.0}
    rows = rows_by_group(stored)
    assert rows["a"].figures.tokens == pytest.approx(750.0)
    assert rows["b"].figures.tokens == pytest.approx(250.0)
    assert rows["a"].figures.energy_per_token_j == pytest.approx(0.4)
    total = total_of(build_rows(stored), stored)
    assert total.tokens == pytest.approx(1000.0) and total.energy_per_token_j == pytest.approx(0.4)


def test_negative_rest_is_reported_not_hidden() -> None:
    stored = workload_store()
    stored.parts["energy_gpu"][("a", "n2")] = 4 * KWH  # more than n2 measured
    rest = rows_by_group(stored)[UNATTRIBUTED]
    assert rest.figures.energy_kwh is not None and rest.figures.energy_kwh < 4.0
    stored.parts["energy_gpu"][("a", "n2")] = 6 * KWH
    rest = rows_by_group(stored)[UNATTRIBUTED]
    assert rest.figures.energy_kwh is not None and rest.figures.energy_kwh < 0
    assert "attributed_exceeds_measured" in rest.notes


def test_csv_and_json_keep_missing_figures_empty_and_totals_last() -> None:
    stored = workload_store()
    rows = build_rows(stored)
    report = Report(
        "namespace", 0.0, 86400.0, "http://prom:9090", 86400.0, rows=rows, total=total_of(rows, stored)
    )
    parsed = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert parsed[-1]["namespace"] == "total" and parsed[-1]["row"] == "total"
    assert parsed[0]["namespace"] == "a" and parsed[0]["emissions_market_kg"] == ""
    assert list(parsed[0])[:5] == [
        "namespace",
        "energy_kwh",
        "emissions_location_kg",
        "emissions_market_kg",
        "embodied_kg",
    ]
    doc = json.loads(to_json(report))
    assert doc["total"]["emissions_market_kg"] is None and doc["total"]["energy_kwh"] == pytest.approx(9.0)
    assert doc["rows"][0]["namespace"] == "a"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-01T00:00:00Z", 1740787200.0),
        ("2025-03-01T01:00:00+01:00", 1740787200.0),
        ("2025-03-01T00:00:00.5Z", 1740787200.5),
        ("2025-03-01", 1740787200.0),
        ("1740787200", 1740787200.0),
        ("1740787200.25", 1740787200.25),
    ],
)
def test_times(text: str, expected: float) -> None:
    assert parse_time(text, "--from") == expected


def test_relative_times() -> None:
    assert parse_time("now", "--to", now=1000.0) == 1000.0
    assert parse_time("now-15m", "--from", now=1000.0) == 100.0
    with pytest.raises(ArgumentError, match=r"^--from: not a duration"):
        parse_time("now-soon", "--from", now=1000.0)


@pytest.mark.parametrize("text", ["2025-03-01T00:00:00", "yesterday", "2025-13-01T00:00:00Z", ""])
def test_bad_times_name_the_flag(text: str) -> None:
    with pytest.raises(ArgumentError, match=r"^--to: "):
        parse_time(text, "--to")


def test_matchers() -> None:
    assert parse_match('{cluster="eu", instance=~"gpu-.*"}') == 'cluster="eu", instance=~"gpu-.*"'
    assert parse_match("") == "" and parse_match("{}") == ""
    with pytest.raises(ArgumentError, match=r"^--match: "):
        parse_match("cluster=eu")


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--from", "2025-03-01"], "--prometheus.url"),
        (["--prometheus.url", "http://u:p@prom:9090", "--from", "2025-03-01"], "--prometheus.url"),
        (["--prometheus.url", "ftp://prom", "--from", "2025-03-01"], "--prometheus.url"),
        (["--prometheus.url", "http://prom:9090"], "--from"),
        (["--prometheus.url", "http://prom:9090", "--from", "2025-03-02", "--to", "2025-03-01"], "--to"),
        (["--prometheus.url", "http://prom:9090", "--from", "2025-03-01", "--by", "name-space"], "--by"),
        (["--prometheus.url", "http://prom:9090", "--from", "2025-03-01", "--format", "pdf"], "--format"),
        (
            [
                "--prometheus.url",
                "http://prom:9090",
                "--from",
                "2025-03-01",
                "--output",
                "/nonexistent/x.csv",
            ],
            "--output",
        ),
        (
            ["--prometheus.url", "http://prom:9090", "--from", "2025-03-01", "--prometheus.timeout", "soon"],
            "--prometheus.timeout",
        ),
        (
            ["--prometheus.url", "http://prom:9090", "--from", "2025-03-01", "--prometheus.username", "u"],
            "--prometheus.username",
        ),
        (
            [
                "--prometheus.url",
                "http://prom:9090",
                "--from",
                "2025-03-01",
                "--prometheus.token-file",
                "/nonexistent",
            ],
            "--prometheus.token-file",
        ),
        (
            [
                "--prometheus.url",
                "http://prom:9090",
                "--from",
                "2025-03-01",
                "--prometheus.ca-file",
                "/nonexistent",
            ],
            "--prometheus.ca-file",
        ),
    ],
)
def test_bad_arguments_exit_2_with_one_line_naming_the_flag(
    args: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args, {}) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("footprint-exporter report: error: ")
    assert flag in err


def test_basic_auth_and_token_together_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "token"
    token.write_text("abc\n")
    env = {"FOOTPRINT_PROMETHEUS_USERNAME": "u", "FOOTPRINT_PROMETHEUS_PASSWORD": "p"}
    code = main(
        [
            "--prometheus.url",
            "http://prom:9090",
            "--from",
            "2025-03-01",
            "--prometheus.token-file",
            str(token),
        ],
        env,
    )
    assert code == 2 and "not both" in capsys.readouterr().err


def test_help_lists_formats_and_one_default_each(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"], {}) == 0
    out = capsys.readouterr().out
    assert "{csv,json,markdown,html}" in out
    assert out.count("(default csv)") == 1 and out.count("(default instance)") == 1


def test_day_buckets_are_utc_days_clipped_to_the_period() -> None:
    start = 1740787200.0 + 6 * 3600  # 06:00
    buckets = day_buckets(start, start + 2 * 86400)
    assert [(iso(a), iso(b)) for a, b in buckets] == [
        ("2025-03-01T06:00:00Z", "2025-03-02T00:00:00Z"),
        ("2025-03-02T00:00:00Z", "2025-03-03T00:00:00Z"),
        ("2025-03-03T00:00:00Z", "2025-03-03T06:00:00Z"),
    ]
    year = day_buckets(1704067200.0, 1704067200.0 + 366 * 86400)
    assert len(year) <= 92 and year[0][0] == 1704067200.0 and year[-1][1] == 1704067200.0 + 366 * 86400


def test_numbers_and_ticks() -> None:
    assert number(None) == "" and number(0.0) == "0" and number(12.5) == "12.5" and number(1e-10) == "0"
    assert number(123456789.123) == "123456789.123" and number(60000.0) == "60000"
    assert nice_ticks(23.0) == [0, 5, 10, 15, 20, 25]
    assert nice_ticks(27.5) == [0, 10, 20, 30]
    assert nice_ticks(0.0) == [0.0, 1.0]


def test_time_axis_ticks_are_round_utc_times() -> None:
    two_days = time_ticks(1740787200.0, 1740787200.0 + 2 * 86400)
    assert [label for _, label in two_days] == [
        "03-01 00:00",
        "03-01 12:00",
        "03-02 00:00",
        "03-02 12:00",
        "03-03 00:00",
    ]
    month = time_ticks(1740787200.0, 1740787200.0 + 31 * 86400)
    assert len(month) <= 7 and all(t % 86400 == 0 for t, _ in month)
