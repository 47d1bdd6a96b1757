"""Prometheus-style durations: ``250ms``, ``1s``, ``5m``, ``1h30m``, ``7d``, ``1w``, ``1y``."""

from __future__ import annotations

import re

from exporter.errors import shown

_UNITS = (
    ("y", 365 * 86400.0),
    ("w", 7 * 86400.0),
    ("d", 86400.0),
    ("h", 3600.0),
    ("m", 60.0),
    ("s", 1.0),
    ("ms", 0.001),
)
_SIZES = dict(_UNITS)
# [0-9], not \d: \d also matches other scripts' digits, which Prometheus does not accept.
_PATTERN = re.compile(
    r"^(?:(?P<y>[0-9]+)y)?(?:(?P<w>[0-9]+)w)?(?:(?P<d>[0-9]+)d)?(?:(?P<h>[0-9]+)h)?(?:(?P<m>[0-9]+)m)?"
    r"(?:(?P<s>[0-9]+)s)?(?:(?P<ms>[0-9]+)ms)?$"
)
# No setting anywhere needs more than a century; the ceiling keeps every duration a finite float that
# timers (threading.Event.wait) accept, whatever digits a file holds.
MAX_SECONDS = 100 * 365 * 86400.0
_MAX_TEXT = 40  # "100y" needs 4 characters; a longer text only adds zeros or units


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration; raises ValueError naming the text when it is not one.

    Durations longer than 100 years are refused here, before any arithmetic: a 400-digit number of
    years would not fit a float.
    """
    if not isinstance(text, str):
        raise ValueError(f"duration must be a string like '1s' or '5m', got {shown(text)}")
    if text == "0":
        return 0.0
    match = _PATTERN.match(text) if len(text) <= _MAX_TEXT else None
    if not text or match is None or not any(match.groupdict().values()):
        raise ValueError(f"not a duration: {shown(text)} (use Prometheus' format, e.g. 250ms, 1s, 5m, 1h)")
    total = 0.0
    for unit, digits in match.groupdict().items():
        if digits:
            count = int(digits)
            if count > MAX_SECONDS / _SIZES[unit]:
                raise ValueError(f"duration {shown(text)} is longer than 100y")
            total += count * _SIZES[unit]
    if total > MAX_SECONDS:
        raise ValueError(f"duration {shown(text)} is longer than 100y")
    return total


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
