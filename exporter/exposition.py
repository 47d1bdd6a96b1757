"""Prometheus text exposition (format 0.0.4) of our collector's families, without per-sample overhead."""

from __future__ import annotations

import math

from prometheus_client.registry import Collector


def _value(v: float) -> str:
    if math.isfinite(v):
        return repr(float(v))
    if math.isnan(v):
        return "NaN"
    return "+Inf" if v > 0 else "-Inf"


def _escape(value: str) -> str:
    # Almost every label value (uuids, pids, pod names) needs no escaping: look before replacing.
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def render_text(collector: Collector) -> bytes:
    """The text format for every family the collector yields.

    prometheus_client's generic encoder validates and formats each label name on every sample; our
    label names come from the catalogue and are the same for all samples of a family, so each
    family's ``name="`` prefixes are built once and only values are formatted per sample.
    """
    out: list[str] = []
    for family in collector.collect():
        name, kind = family.name, family.type
        if kind == "counter":
            name += "_total"
        elif kind == "unknown":
            kind = "untyped"
        doc = family.documentation.replace("\\", "\\\\").replace("\n", "\\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")
        keys: tuple[str, ...] = ()
        prefixes: list[str] = []
        for sample in family.samples:
            labels = sample.labels
            if not labels:
                out.append(f"{sample.name} {_value(sample.value)}\n")
                continue
            if tuple(labels) != keys:
                keys = tuple(labels)
                prefixes = [f'{k}="' if i == 0 else f'",{k}="' for i, k in enumerate(keys)]
            body = "".join([p + _escape(labels[k]) for p, k in zip(prefixes, keys, strict=True)])
            out.append(f'{sample.name}{{{body}"}} {_value(sample.value)}\n')
    return "".join(out).encode("utf-8")
