"""The exporter's own exception types, and how a bad value is shown in their one-line messages."""

from __future__ import annotations

import reprlib

SHOWN_CHARS = 40  # a value in an error message: its first 40 characters, then "..."
_KEY_CHARS = 120

# reprlib stops at a bounded depth and count of elements, so showing a value costs the same for a
# huge nested structure (a YAML "billion laughs") as for a small one.
_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxdict = _repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxfrozenset = 4
_repr.maxstring = _repr.maxother = _repr.maxlong = 2 * SHOWN_CHARS


def _one_line(text: str) -> str:
    """Control characters (newlines above all) escaped, so a message stays one line on any terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def shorten(text: str, limit: int = 200) -> str:
    """Text for a one-line message (a path, another library's message): one line, ``limit`` characters."""
    text = _one_line(text[: 4 * limit])
    return text if len(text) <= limit else text[:limit] + "..."


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """A value as an error message quotes it: repr, one line, at most ``limit`` characters then "..."."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 4 * limit:
        # repr of a huge int is slow, and past 4,300 digits Python refuses it outright.
        text = f"<an integer of about {int(value.bit_length() * 0.30103) + 1} digits>"
    elif isinstance(value, str | bytes):
        text = _one_line(repr(value[: 2 * limit]))
    else:
        text = _one_line(_repr.repr(value))
    return text if len(text) <= limit else text[:limit] + "..."


class ConfigError(Exception):
    """A bad configuration value. Printed as one line naming the key; the exporter exits 2."""

    def __init__(self, key: str, problem: str) -> None:
        key = _one_line(key) or "''"  # an empty YAML key is still named
        if len(key) > _KEY_CHARS:
            key = key[:_KEY_CHARS] + "..."
        problem = _one_line(problem)
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem
