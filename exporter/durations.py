"""Prometheus-style durations: ``250ms``, ``1s``, ``5m``, ``1h30m``, ``7d``, ``1w``, ``1y``."""

from __future__ import annotations

import re

_UNITS = (
    ("y", 365 * 86400.0),
    ("w", 7 * 86400.0),
    ("d", 86400.0),
    ("h", 3600.0),
    ("m", 60.0),
    ("s", 1.0),
    ("ms", 0.001),
)
_PATTERN = re.compile(
    r"^(?:(?P<y>\d+)y)?(?:(?P<w>\d+)w)?(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?"
    r"(?:(?P<s>\d+)s)?(?:(?P<ms>\d+)ms)?$"
)


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration; raises ValueError naming the text when it is not one."""
    if not isinstance(text, str):
        raise ValueError(f"duration must be a string like '1s' or '5m', got {text!r}")
    if text == "0":
        return 0.0
    match = _PATTERN.match(text)
    if not text or match is None or not any(match.groupdict().values()):
        raise ValueError(f"not a duration: {text!r} (use Prometheus' format, e.g. 250ms, 1s, 5m, 1h)")
    return sum(int(v) * dict(_UNITS)[k] for k, v in match.groupdict().items() if v)


def format_duration(seconds: float) -> str:
    """The shortest Prometheus duration for a whole number of milliseconds."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    parts = []
    for unit, size in _UNITS:
        size_ms = round(size * 1000)
        if ms >= size_ms:
            parts.append(f"{ms // size_ms}{unit}")
            ms %= size_ms
    return "".join(parts)
