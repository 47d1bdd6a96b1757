"""The validation report for people: report.md and the summary printed at the end of a run."""

from __future__ import annotations

from typing import Any


def _num(value: Any, digits: int = 1, unit: str = "") -> str:
    if value is None or isinstance(value, dict | list):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, int | float):
        return f"{value:.{digits}f}{unit}"
    return str(value)


def _pct(value: Any) -> str:
    return "n/a" if not isinstance(value, int | float) else f"{100 * value:.1f}%"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return ["(nothing measured)", ""]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return [*out, ""]


def _gpu_line(report: dict[str, Any]) -> str:
    gpu = report.get("gpu") or {}
    return (
        f"GPU {gpu.get('index', '?')}: {_num(gpu.get('name'))}, driver {_num(gpu.get('driver_version'))}, "
        f"NVML {_num(gpu.get('nvml_version'))}, CUDA driver API {_num(gpu.get('cuda_driver_version'), 0)}"
    )


def energy_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for phase in report.get("phases", []):
        e = phase.get("energy") or {}

        def pair(label: str, key: str = "integral_j", ratio: str = "over_counter", e: Any = e) -> str:
            v = e.get(label)
            return "n/a" if not v else f"{_num(v.get(key), 0)} ({_num(v.get(ratio), 3)})"

        rows.append(
            [
                phase["name"],
                _num(e.get("span_s"), 1),
                _num(e.get("counter_j"), 0),
                _num(e.get("counter_mean_w"), 1),
                pair("power_usage"),
                pair("power_usage", "integral_at_tick_j", "at_tick_over_counter"),
                pair("power_instant"),
                pair("power_average"),
            ]
        )
    return rows


def period_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for phase, periods in (report.get("update_periods") or {}).items():
        for signal, s in periods.items():
            rows.append(
                [
                    phase,
                    signal,
                    _num(s.get("changes", s.get("n")), 0),
                    _num(s.get("median"), 1),
                    _num(s.get("p90"), 1),
                    f"{_num(s.get('poll_ms'), 1)} ({_num(s.get('poll_ms_achieved'), 1)})",
                ]
            )
    return rows


def sample_rows(report: dict[str, Any]) -> list[list[str]]:
    ps = report.get("process_samples") or {}
    names = ps.get("pid_names") or {}
    rows = []
    for poller in ("fast", "exporter_cadence"):
        s = ps.get(poller)
        if not s:
            continue
        period = s.get("driver_sample_period_ms") or {}
        rows.append(
            [
                poller,
                "all",
                _num(s.get("calls"), 0),
                _pct(s.get("empty_fraction")),
                f"{_num(period.get('median'), 0)} / {_num(period.get('p90'), 0)}",
                _num((s.get("samples_per_call") or {}).get("median"), 1),
                "",
            ]
        )
        for pid, p in (s.get("per_pid") or {}).items():
            pp = p.get("period_ms") or {}
            rows.append(
                [
                    poller,
                    f"{pid} ({names.get(pid, 'other')})",
                    _num(p.get("samples"), 0),
                    "",
                    f"{_num(pp.get('median'), 0)} / {_num(pp.get('p90'), 0)}",
                    f"{_num(p.get('samples_per_call_mean'), 2)} "
                    f"(max {_num(p.get('samples_per_call_max'), 0)})",
                    _num(p.get("sm_util_mean"), 1),
                ]
            )
    return rows


def attribution_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for phase in report.get("phases", []):
        att = phase.get("attribution") or {}
        by = att.get("by_worker") or {}
        share = att.get("share_of_attributed") or {}
        work = phase.get("workers") or {}
        rows.append(
            [
                phase["name"],
                _num(att.get("gpu_j"), 0),
                f"{_num(by.get('A'), 0)} ({_pct(share.get('A'))})",
                f"{_num(by.get('B'), 0)} ({_pct(share.get('B'))})",
                _num(by.get("other"), 0),
                f"{_num(att.get('unattributed_j'), 0)} ({_pct(att.get('unattributed_share'))})",
                " / ".join(f"{k}: {v.get('launches')}" for k, v in work.items()) or "-",
            ]
        )
    return rows


def cost_rows(report: dict[str, Any]) -> list[list[str]]:
    costs = report.get("costs") or {}
    rows = []
    for name, c in (costs.get("nvml_calls_per_read") or {}).items():
        rows.append(
            [
                name,
                _num(c.get("calls_per_read"), 0),
                _num(c.get("median"), 1),
                _num(c.get("p90"), 1),
                _num(c.get("n"), 0),
                ", ".join(f"{k} x{v}" for k, v in (c.get("errors") or {}).items()),
            ]
        )
    for name, c in (costs.get("other_nvml_calls") or {}).items():
        rows.append(
            [
                f"{name} (not per read)",
                "-",
                _num(c.get("median"), 1),
                _num(c.get("p90"), 1),
                _num(c.get("n"), 0),
                ", ".join(f"{k} x{v}" for k, v in (c.get("errors") or {}).items()),
            ]
        )
    for key, label in (("source_read", "NvmlGpuSource.read()"), ("sampler_tick", "Sampler.tick()")):
        c = costs.get(key) or {}
        rows.append([label, "-", _num(c.get("median"), 1), _num(c.get("p90"), 1), _num(c.get("n"), 0), ""])
    return rows


def render_markdown(report: dict[str, Any]) -> str:
    lines = ["# GPU validation report", ""]
    lines += [
        f"- {_gpu_line(report)}",
        f"- status: {report.get('status')}; started {report.get('started_at')}; "
        f"{_num(report.get('wall_s'), 0)} s of wall time",
        f"- environment: {report.get('environment', {}).get('platform', 'n/a')}, Python "
        f"{report.get('environment', {}).get('python', 'n/a')}",
        "",
        "## Steps",
        "",
    ]
    lines += _table(
        ["step", "status", "seconds", "detail"],
        [
            [
                s["name"],
                s["status"],
                _num(s.get("duration_s"), 1),
                str(s.get("error") or s.get("reason") or ""),
            ]
            for s in report.get("steps", [])
        ],
    )
    checks = (report.get("selfcheck") or {}).get("nvml") or {}
    if checks:
        lines += ["## NVML functions", ""]
        lines += _table(
            ["function", "result"],
            [[k, "ok" if v.get("ok") else str(v.get("error"))] for k, v in checks.items()],
        )
    cuda = (report.get("selfcheck") or {}).get("cuda") or {}
    if cuda:
        lines += ["## CUDA self-check", ""]
        lines += _table(
            ["step", "result"],
            [
                [str(s.get("step")), str(s.get("detail") if s.get("ok") else f"FAILED {s.get('error')}")]
                for s in cuda.get("steps", [])
            ],
        )
    lines += [
        "## Energy counter against integrated power",
        "",
        "Joules over each phase; in brackets the ratio to the energy counter. Power is integrated at",
        "the poll rate and, as a poller reading once per tick would, at the tick.",
        "",
    ]
    lines += _table(
        [
            "phase",
            "s",
            "counter J",
            "mean W",
            "power usage",
            "power usage at tick",
            "instant field",
            "average field",
        ],
        energy_rows(report),
    )
    lines += ["## Update periods (fast polls at the start of a phase)", ""]
    lines += _table(
        ["phase", "signal", "changes", "median ms", "p90 ms", "poll ms (achieved)"], period_rows(report)
    )
    lines += ["## Per-process utilisation samples (shared phase)", ""]
    lines += _table(
        ["poller", "pid", "calls / samples", "empty", "period median / p90 ms", "samples per call", "SM %"],
        sample_rows(report),
    )
    lines += ["## Attribution through the exporter (NvmlGpuSource + Sampler)", ""]
    lines += _table(
        ["phase", "GPU J", "A J (share)", "B J (share)", "other J", "unattributed J", "launches"],
        attribution_rows(report),
    )
    split = report.get("split") or {}
    if split:
        lines += ["### Split of the shared phase", ""]
        lines += _table(["quantity", "value"], [[k, _num(v, 4)] for k, v in split.items()])
    mapping = report.get("pid_mapping") or {}
    if mapping:
        lines += [f"PID mapping: {mapping.get('method')}: {mapping.get('note', '')}", ""]
    costs = report.get("costs") or {}
    if costs:
        lines += ["## Cost of NVML calls and of the exporter's read and tick (microseconds)", ""]
        lines += _table(["call", "per read", "median", "p90", "n", "errors"], cost_rows(report))
        lines += [
            f"NVML floor of one read: {_num(costs.get('nvml_floor_us'), 1)} us; tick / floor "
            f"{_num(costs.get('tick_over_floor'), 2)} (bar {costs.get('bar')}: "
            f"{_num(costs.get('bar_holds'))}); read / floor {_num(costs.get('read_over_floor'), 2)}; "
            f"NVML share of a tick (median) {_pct((costs.get('nvml_share_of_tick') or {}).get('median'))}",
            "",
        ]
    replay = report.get("replay_check") or {}
    if replay:
        lines += ["## Replay of the recorded trace", ""]
        lines += _table(
            ["quantity", "value"],
            [[k, _num(v, 6)] for k, v in replay.items() if not isinstance(v, dict)],
        )
    return "\n".join(lines)


def render_summary(report: dict[str, Any]) -> str:
    """A short plain-text table for the end of a run."""
    out = [
        "",
        "=" * 78,
        _gpu_line(report),
        f"status: {report.get('status')}  wall: {_num(report.get('wall_s'), 0)} s",
    ]
    for s in report.get("steps", []):
        detail = s.get("error") or s.get("reason") or ""
        out.append(f"  {s['name']:<16} {s['status']:<8} {detail[:50]}")
    for phase in report.get("phases", []):
        e = phase.get("energy") or {}
        pu = e.get("power_usage") or {}
        out.append(
            f"  {phase['name']:<9} counter {_num(e.get('counter_j'), 0):>8} J"
            f"  mean {_num(e.get('counter_mean_w'), 1):>7} W"
            f"  power usage/counter {_num(pu.get('over_counter'), 3)}"
            f" (at tick {_num(pu.get('at_tick_over_counter'), 3)})"
        )
    for phase, periods in (report.get("update_periods") or {}).items():
        parts = [
            f"{k} {_num(v.get('median'), 0)}/{_num(v.get('p90'), 0)}"
            for k, v in periods.items()
            if k in ("energy_counter", "power_usage", "power_instant")
        ]
        out.append(f"  update ms median/p90 ({phase}): " + ", ".join(parts))
    fast = (report.get("process_samples") or {}).get("fast") or {}
    if fast:
        period = fast.get("driver_sample_period_ms") or {}
        out.append(
            f"  process samples: period {_num(period.get('median'), 0)}/{_num(period.get('p90'), 0)} ms, "
            f"empty calls {_pct(fast.get('empty_fraction'))}"
        )
    split = report.get("split") or {}
    if split:
        out.append(
            f"  split A: measured {_pct(split.get('measured_share_A'))},"
            f" nominal {_pct(split.get('nominal_share_A'))},"
            f" work {_pct(split.get('work_share_A'))},"
            f" alone phases {_pct(split.get('energy_share_A_from_alone_phases'))}"
            f" (pid mapping: {split.get('pid_mapping')})"
        )
    costs = report.get("costs") or {}
    if costs:
        out.append(
            f"  cost us: read {_num((costs.get('source_read') or {}).get('median'), 0)},"
            f" tick {_num((costs.get('sampler_tick') or {}).get('median'), 0)},"
            f" NVML floor {_num(costs.get('nvml_floor_us'), 0)},"
            f" tick/floor {_num(costs.get('tick_over_floor'), 2)} (bar 1.2)"
        )
    replay = report.get("replay_check") or {}
    if replay:
        out.append(
            f"  replay: {replay.get('trace_lines')} lines, replay/live energy diff "
            f"{_num(replay.get('replay_vs_live_relative'), 9)}"
        )
    out += [
        f"  files: {', '.join(sorted((report.get('files') or {}).values()))}, report.json, report.md",
        "=" * 78,
        "",
    ]
    return "\n".join(out)
