"""The state file: energy and emission totals saved atomically so a restart does not lose a node's totals."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from typing import Any

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


class StateFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def save(self, totals: dict[str, Any], now: float | None = None) -> None:
        """Write a temporary file beside the old one, fsync it, rename it over, fsync the directory."""
        payload = {
            "version": FORMAT_VERSION,
            "saved_at": time.time() if now is None else now,
            "totals": totals,
        }
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(payload, fh, separators=(",", ":"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def load(self) -> dict[str, Any] | None:
        """The saved totals, or None when there is no file. A corrupt file is renamed aside with a warning."""
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
            if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
                raise ValueError(f"not a version {FORMAT_VERSION} state file")
            totals = data.get("totals")
            if not isinstance(totals, dict):
                raise ValueError("no totals")
            return totals
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self.set_aside(str(exc))
            return None

    def set_aside(self, reason: str) -> str | None:
        aside = f"{self.path}.corrupt-{int(time.time())}"
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            log.warning(
                "state file %s is unusable (%s) and could not be moved aside: %s", self.path, reason, exc
            )
            return None
        log.warning(
            "state file %s is unusable (%s); moved it to %s and starting totals from zero",
            self.path,
            reason,
            aside,
        )
        return aside
