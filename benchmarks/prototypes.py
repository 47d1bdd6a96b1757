"""Candidate speed-ups measured against what the exporter does now, for the lead to adopt in exporter/."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString as _float_to_go

_SPECIAL = ("\\", "\n", '"')


def _escape_value(value: str) -> str:
    # Most label values (uuids, pids, pod names) need no escaping: test first, replace only if needed.
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def floatToGoString(value: float) -> str:
    return str(_float_to_go(value))  # type: ignore[no-untyped-call]


def text_exposition(registry: Collector) -> bytes:
    """Prometheus text format 0.0.4, byte-identical to ``generate_latest`` for our collector's families.

    What makes it faster: label names are checked and sorted once per family instead of once per sample
    (catalogue label names are valid identifiers by construction), values are escaped only when they
    hold a character that needs it, and each line is one f-string.
    """
    out: list[str] = []
    for metric in registry.collect():
        name, mtype = metric.name, metric.type
        if mtype == "counter":
            name += "_total"
        elif mtype == "unknown":
            mtype = "untyped"
        doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {mtype}\n")
        samples: Iterable[Sample] = metric.samples
        order: list[str] | None = None
        prefixes: list[str] = []
        for s in samples:
            labels = s.labels
            if not labels:
                out.append(f"{s.name} {floatToGoString(s.value)}\n")
                continue
            if order is None or len(labels) != len(order):
                order = sorted(labels)
                prefixes = [f'{k}="' if i == 0 else f'",{k}="' for i, k in enumerate(order)]
            parts = "".join([p + _escape_value(labels[k]) for p, k in zip(prefixes, order, strict=True)])
            out.append(f'{s.name}{{{parts}"}} {floatToGoString(s.value)}\n')
    return "".join(out).encode("utf-8")
