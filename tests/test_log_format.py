"""The exporter's log formats: one line per record, and every logged failure carries its cause."""

from __future__ import annotations

import json
import logging
import sys

from exporter.cli import _JsonFormatter, _LogfmtFormatter


def failed_record(message: str = "sampler tick failed") -> logging.LogRecord:
    try:
        raise ValueError('power 1e308 "impossible"\nsecond line')
    except ValueError:
        exc_info = sys.exc_info()
    return logging.LogRecord("exporter.sampler", logging.ERROR, __file__, 1, message, None, exc_info)


def test_logfmt_carries_the_exception_type_and_message_on_one_line() -> None:
    line = _LogfmtFormatter().format(failed_record())
    assert "\n" not in line
    assert 'level=error logger=exporter.sampler msg="sampler tick failed"' in line
    assert 'err="ValueError: power 1e308 \\"impossible\\"\\nsecond line"' in line
    assert "stack=" not in line  # the traceback only at debug level


def test_logfmt_at_debug_adds_the_traceback_still_on_one_line() -> None:
    line = _LogfmtFormatter(traceback=True).format(failed_record())
    assert "\n" not in line
    assert 'stack="Traceback (most recent call last):\\n' in line and "test_log_format.py" in line


def test_logfmt_without_an_exception_is_unchanged_and_escapes_quotes() -> None:
    record = logging.LogRecord("footprint", logging.INFO, __file__, 1, 'listening on "%s"', ("::",), None)
    line = _LogfmtFormatter().format(record)
    assert line.endswith('level=info logger=footprint msg="listening on \\"::\\""')


def test_json_carries_the_exception_and_its_traceback() -> None:
    entry = json.loads(_JsonFormatter().format(failed_record()))
    assert entry["msg"] == "sampler tick failed" and entry["level"] == "error"
    assert entry["err"] == 'ValueError: power 1e308 "impossible"\nsecond line'
    assert entry["traceback"].startswith("Traceback (most recent call last):")
    plain = json.loads(_JsonFormatter().format(logging.LogRecord("x", logging.INFO, "", 1, "ok", None, None)))
    assert set(plain) == {"ts", "level", "logger", "msg"}
