"""The state file: totals saved atomically, continued only after a clean shutdown so nothing counts twice."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

# Version 2 added ``clean``. A version-1 file cannot say whether a clean shutdown wrote it.
FORMAT_VERSION = 2
# A state file holds a few hundred bytes per device and per process series: about 2 MiB with the
# defaults at their fullest (8 GPUs x 500 series + 500 CPU series). Parsing takes about 5 times a
# file's size in memory (measured: 21 MiB for 3.9 MiB) and the DaemonSet's limit is 128 MiB, so a
# larger file is set aside unread, and a save that would be larger leaves the per-process series out.
MAX_STATE_BYTES = 4 * 1024 * 1024

# How a run's totals began, served as footprint_state_restore_info{result}.
CONTINUED = "continued"  # from a file that a clean shutdown wrote
NO_FILE = "no_file"  # there was no state file: the first start, or it was removed
UNCLEAN = "unclean"  # the previous run did not shut down cleanly (crash, OOM kill, power loss)
SET_ASIDE = "set_aside"  # corrupt, foreign, too large or impossible values: moved aside
UNREADABLE = "unreadable"  # a directory, no permission, an I/O error: left where it is
NOT_MARKED = "not_marked"  # clean, but it could not be marked in use, so continuing could over-count


class StateTooLarge(ValueError):
    """The totals would make a state file larger than MAX_STATE_BYTES, which no start would read."""


@dataclass(frozen=True, slots=True)
class Loaded:
    """What ``StateFile.load`` found."""

    result: str  # CONTINUED (a clean file: its totals may be continued), NO_FILE, UNCLEAN, SET_ASIDE...
    payload: dict[str, Any] | None = None  # the whole file when it was one of ours
    detail: str = ""  # why, for the log


class Restorable(Protocol):
    def dump_state(self) -> dict[str, Any]: ...

    def restore_state(self, data: Any) -> None: ...


def _refuse_constant(name: str) -> float:
    # json accepts NaN and Infinity by default; no total can be either.
    raise ValueError(f"{name} is not a number a total can have")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # 1e999 parses as infinity
        raise ValueError(f"{text} is not a number a total can have")
    return value


class StateFile:
    """One JSON file: ``{"version": 2, "saved_at": ..., "clean": bool, "totals": {...}}``.

    ``clean`` is true only in the file written at a clean shutdown, after the sampler stopped, so
    its totals are at least every value ever served. The next start continues from such a file and at
    once rewrites it as not clean ("in use") before serving anything: a crash after that leaves a
    file that can never be continued from, so counters then start from zero, which Prometheus reads
    as an ordinary reset. Periodic checkpoints are written not clean too.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def save(self, totals: dict[str, Any], clean: bool, now: float | None = None) -> None:
        """Write a temporary file beside the old one, fsync it, rename it over, fsync the directory."""
        payload = {
            "version": FORMAT_VERSION,
            "saved_at": time.time() if now is None else now,
            "clean": clean,
            "totals": totals,
        }
        text = json.dumps(payload, separators=(",", ":"), allow_nan=False)  # ASCII: one byte a character
        if len(text) > MAX_STATE_BYTES:
            raise StateTooLarge(f"{len(text)} bytes, more than the {MAX_STATE_BYTES} a start would read")
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
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

    def load(self) -> Loaded:
        """Read the file, never more than MAX_STATE_BYTES of it. Only a clean file comes back CONTINUED.

        A file that is not ours (corrupt, foreign, too large, impossible values) is moved aside; a
        path that cannot be read (a directory, no permission) is left alone and reported.
        """
        try:
            with open(self.path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size > MAX_STATE_BYTES:
                    return self._aside(f"{size} bytes, more than the {MAX_STATE_BYTES} a state file can hold")
                raw = fh.read(size + 1)  # read(n) allocates n bytes up front: ask for what is there
        except FileNotFoundError:
            return Loaded(NO_FILE, detail="no state file")
        except IsADirectoryError:
            return Loaded(UNREADABLE, detail="it is a directory, not a file")
        except OSError as exc:
            return Loaded(UNREADABLE, detail=f"cannot read it: {exc.strerror or exc}")
        if len(raw) > size:  # it grew while we read it: someone else is writing to it
            return self._aside("it changed while it was read")
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float)
            if not isinstance(data, dict) or data.get("version") not in (1, FORMAT_VERSION):
                raise ValueError(f"not a version {FORMAT_VERSION} state file")
            if not isinstance(data.get("totals"), dict):
                raise ValueError("no totals")
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            return self._aside(str(exc))
        if data["version"] != FORMAT_VERSION:
            return Loaded(UNCLEAN, data, "a version 1 file cannot tell whether a clean shutdown wrote it")
        if data.get("clean") is not True:
            saved = data.get("saved_at")
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(saved)) if _number(saved) else "?"
            return Loaded(
                UNCLEAN, data, f"the previous run did not shut down cleanly (last checkpoint {when})"
            )
        return Loaded(CONTINUED, data)

    def _aside(self, reason: str) -> Loaded:
        aside = self.set_aside(reason)
        detail = f"unusable ({reason}); moved to {aside}" if aside else f"unusable ({reason})"
        return Loaded(SET_ASIDE, detail=detail)

    def set_aside(self, reason: str) -> str | None:
        """Rename the file to ``<path>.corrupt-<unix time>``; the new name, or None if that failed."""
        aside = f"{self.path}.corrupt-{int(time.time())}"
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            log.warning(
                "state file %s is unusable (%s) and could not be moved aside: %s", self.path, reason, exc
            )
            return None
        return aside


def save_fitting(state: StateFile, totals: dict[str, Any], clean: bool, optional: tuple[str, ...]) -> None:
    """Save; when the totals would not fit a state file, save them without the ``optional`` keys
    (the per-process series: device totals always fit), and say so."""
    try:
        state.save(totals, clean=clean)
    except StateTooLarge as exc:
        log.warning("state too large (%s); saving it without %s", exc, ", ".join(optional))
        state.save({k: v for k, v in totals.items() if k not in optional}, clean=clean)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def continue_totals(state: StateFile, sampler: Restorable) -> str:
    """Continue the sampler's totals from the state file if, and only if, that cannot over-count.

    Called once at start, before the sampler runs and before anything is served. Returns how the
    totals began (CONTINUED, NO_FILE, UNCLEAN, SET_ASIDE, UNREADABLE or NOT_MARKED); everything but
    CONTINUED starts from zero and says so at warning level.
    """
    loaded = state.load()
    if loaded.result == CONTINUED:
        assert loaded.payload is not None
        try:
            # Marked in use first: if this fails, a crash later would leave a clean file with totals
            # below what this run served, and the next start would count them twice.
            state.save(loaded.payload["totals"], clean=False)
        except (OSError, ValueError) as exc:
            _from_zero(state, f"it cannot be marked in use ({exc}), so continuing could count twice")
            return NOT_MARKED
        try:
            sampler.restore_state(loaded.payload["totals"])
        except (ValueError, TypeError, AttributeError) as exc:
            aside = state.set_aside(f"bad totals: {exc}")
            _from_zero(
                state, f"unusable (bad totals: {exc}); moved to {aside}" if aside else f"bad totals: {exc}"
            )
            return SET_ASIDE
        log.info("continuing totals from %s, written by a clean shutdown", state.path)
        return CONTINUED
    if loaded.result == UNREADABLE:
        log.error(
            "state.file %s: %s; totals start from zero and cannot be saved there", state.path, loaded.detail
        )
        return UNREADABLE
    _from_zero(state, loaded.detail)
    return loaded.result


def _from_zero(state: StateFile, why: str) -> None:
    log.warning(
        "state file %s: %s; totals start from zero (Prometheus reads this as a counter reset)",
        state.path,
        why,
    )
