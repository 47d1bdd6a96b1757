"""Reads a user's YAML file with bounds: size, strict UTF-8, nesting depth, and no anchors or aliases."""

from __future__ import annotations

import os
import stat
from typing import Any

import yaml

from exporter.errors import ConfigError, shorten

MAX_BYTES = 1 << 20  # our configuration files are a few kilobytes; a megabyte is already a mistake
MAX_DEPTH = 32  # the deepest setting we have (carbon.embodied.gpu.<name>.kg) is 5 levels down


class _Refused(yaml.MarkedYAMLError):
    """YAML that is valid but that we do not accept (too deep, anchors)."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases and nesting deeper than MAX_DEPTH.

    Aliases let 300 bytes stand for a billion-node tree ("billion laughs"); no setting of ours needs
    them. PyYAML composes nested nodes recursively, so depth is bounded here, before Python's
    recursion limit is.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(
                problem="anchors and aliases (& and *) are not accepted", problem_mark=event.start_mark
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(
                    problem=f"nested deeper than {MAX_DEPTH} levels", problem_mark=event.start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def read_yaml(path: str, key: str) -> Any:
    """The parsed document of the YAML file ``path``; ConfigError naming ``key`` on any problem."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            # A FIFO would block the start; a directory or device is never a configuration.
            raise ConfigError(key, f"{shorten(path)} is not a regular file")
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(key, f"cannot read {shorten(path)}: {exc.strerror or exc}") from None
    except ValueError as exc:  # a NUL character in the path
        raise ConfigError(key, f"cannot read {shorten(path)}: {exc}") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(key, f"{shorten(path)} is larger than {MAX_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = _line_of(data, exc.start)
        raise ConfigError(
            key, f"{shorten(path)} is not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line})"
        ) from None
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(
            key,
            f"{shorten(path)} is not valid YAML: character #x{exc.character:04x} at line {line} "
            "is not allowed",
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = f": {exc.problem}" if exc.problem else ""
        raise ConfigError(key, f"{shorten(path)} is not valid YAML{at}{problem}") from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        # Values that parse as YAML but not as Python: a 5,000-digit integer, a 13th month.
        raise ConfigError(key, f"{shorten(path)} is not valid YAML: {shorten(str(exc), 80)}") from None
