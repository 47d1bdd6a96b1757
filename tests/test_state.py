"""The state file: continued only from a clean shutdown, marked in use at once, refused when damaged."""

from __future__ import annotations

import json
import logging
import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from exporter import state as state_module
from exporter.state import (
    CONTINUED,
    MAX_STATE_BYTES,
    NO_FILE,
    NOT_MARKED,
    SET_ASIDE,
    UNCLEAN,
    UNREADABLE,
    StateFile,
    StateTooLarge,
    continue_totals,
    save_fitting,
)


class Totals:
    """A stand-in sampler: what it was given, and a check like the real one's."""

    def __init__(self) -> None:
        self.restored: Any = None

    def dump_state(self) -> dict[str, Any]:
        return {"gpus": {}}

    def restore_state(self, data: Any) -> None:
        for value in data.get("gpus", {}).values():
            if value["energy_j"] < 0:
                raise ValueError("energy_j must be finite and non-negative")
        self.restored = data


TOTALS = {"gpus": {"GPU-a": {"energy_j": 1234.5}}}


def contents(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_a_clean_shutdown_is_continued_once_and_marked_in_use_before_anything_runs(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    StateFile(str(path)).save(TOTALS, clean=True)
    assert contents(path)["clean"] is True and contents(path)["version"] == 2

    sampler = Totals()
    assert continue_totals(StateFile(str(path)), sampler) == CONTINUED
    assert sampler.restored == TOTALS
    # In use now: the same totals, no longer clean. A crash from here on cannot bring them back ...
    assert contents(path)["clean"] is False and contents(path)["totals"] == TOTALS
    again = Totals()
    assert continue_totals(StateFile(str(path)), again) == UNCLEAN
    assert again.restored is None  # ... so the next start begins from zero


def test_checkpoints_and_version_1_files_start_from_zero_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    StateFile(str(path)).save(TOTALS, clean=False, now=1_700_000_000)
    sampler = Totals()
    with caplog.at_level(logging.INFO):
        assert continue_totals(StateFile(str(path)), sampler) == UNCLEAN
    assert sampler.restored is None
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING)
    assert (
        "did not shut down cleanly" in warning.getMessage() and "2023-11-14T22:13:20Z" in warning.getMessage()
    )
    assert path.exists()  # not corrupt: the next checkpoint overwrites it

    path.write_text(json.dumps({"version": 1, "saved_at": 1.0, "totals": TOTALS}))
    assert continue_totals(StateFile(str(path)), sampler) == UNCLEAN
    assert sampler.restored is None


def test_no_file_starts_from_zero_at_warning_level(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert continue_totals(StateFile(str(tmp_path / "state.json")), Totals()) == NO_FILE
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "start from zero" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    "text",
    [
        '{"version": 2, "clean": true, "totals": {"gpus": {"GPU-a": {"energy_j": NaN}}}}',
        '{"version": 2, "clean": true, "totals": {"gpus": {"GPU-a": {"energy_j": Infinity}}}}',
        '{"version": 2, "clean": true, "totals": {"gpus": {"GPU-a": {"energy_j": 1e999}}}}',
        '{"version": 2, "clean": true, "totals": {"gpus": {"GPU-a": {"energy_j": -5}}}}',
        '{"version": 3, "clean": true, "totals": {}}',
        "{not json",
        "\udcff\udcfe",  # bytes that are not UTF-8
    ],
)
def test_damaged_files_are_set_aside_and_said_so(
    text: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    sampler = Totals()
    assert continue_totals(StateFile(str(path)), sampler) == SET_ASIDE
    assert sampler.restored is None and not path.exists()
    aside = list(tmp_path.glob("state.json.corrupt-*"))
    assert len(aside) == 1
    message = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "unusable" in message and str(aside[0]) in message and "start from zero" in message


def test_a_huge_file_is_set_aside_without_being_read(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    with path.open("wb") as fh:  # 100 MB, sparse: cheap to make, fatal to parse in a 128 MiB pod
        fh.truncate(100 * 1000 * 1000)
    tracemalloc.start()
    try:
        result = StateFile(str(path)).load()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.result == SET_ASIDE and "100000000 bytes" in result.detail
    assert peak < 1_000_000
    assert len(list(tmp_path.glob("state.json.corrupt-*"))) == 1
    assert MAX_STATE_BYTES < 100 * 1000 * 1000


def test_a_directory_or_unreadable_path_is_reported_and_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "state.json"
    directory.mkdir()
    assert continue_totals(StateFile(str(directory)), Totals()) == UNREADABLE
    assert directory.is_dir() and list(tmp_path.iterdir()) == [directory]
    error = next(r for r in caplog.records if r.levelno == logging.ERROR)
    assert str(directory) in error.getMessage() and "is a directory" in error.getMessage()

    beneath_a_file = tmp_path / "plain" / "state.json"
    (tmp_path / "plain").write_text("")
    loaded = StateFile(str(beneath_a_file)).load()
    assert loaded.result == UNREADABLE and "Not a directory" in loaded.detail


def test_a_clean_file_that_cannot_be_marked_in_use_is_not_continued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    StateFile(str(path)).save(TOTALS, clean=True)
    state = StateFile(str(path))

    def full_disk(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state, "save", full_disk)
    sampler = Totals()
    assert continue_totals(state, sampler) == NOT_MARKED
    assert sampler.restored is None
    assert contents(path)["clean"] is True  # untouched: a later start that can write may continue


def test_saves_are_atomic_and_leave_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = StateFile(str(path))
    for k in range(5):
        state.save({"gpus": {"GPU-a": {"energy_j": float(k)}}}, clean=k == 4)
    assert os.listdir(tmp_path) == ["state.json"]
    assert contents(path)["totals"]["gpus"]["GPU-a"]["energy_j"] == 4.0 and contents(path)["clean"] is True
    with pytest.raises(ValueError):
        state.save({"gpus": {"GPU-a": {"energy_j": float("nan")}}}, clean=True)
    assert os.listdir(tmp_path) == ["state.json"] and contents(path)["clean"] is True


def test_a_state_too_large_to_read_back_is_saved_without_its_per_process_series(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(state_module, "MAX_STATE_BYTES", 2000)
    path = tmp_path / "state.json"
    state = StateFile(str(path))
    series = [{"key": ["GPU-a", pid, 1.0], "energy_j": 1.0} for pid in range(100)]
    totals = {"gpus": {"GPU-a": {"energy_j": 5.0}}, "gpu_processes": {"group_by": "pid", "series": series}}
    with pytest.raises(StateTooLarge):
        state.save(totals, clean=True)
    assert not path.exists()
    save_fitting(state, totals, True, ("gpu_processes", "cpu_processes"))
    assert contents(path)["totals"] == {"gpus": {"GPU-a": {"energy_j": 5.0}}}
    assert "without gpu_processes, cpu_processes" in caplog.records[-1].getMessage()
    # And what was written is read back (a file over the limit would have been set aside unread).
    assert StateFile(str(path)).load().result == CONTINUED
