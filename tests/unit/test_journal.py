"""Unit tests for tabfleetd.journal: syslog priority prefixes for journald, and telling whether stderr is the journal."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from tabfleetd.journal import JournalFormatter, priority, stderr_is_journal


def record(level: int, message: str, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            info = sys.exc_info()
    return logging.LogRecord("tabfleetd.x", level, __file__, 1, message, (), info)


def test_levels_map_to_syslog_priorities() -> None:
    """debug 7, info 6, warning 4, error 3, critical 2: what `journalctl -p` filters on."""
    assert [priority(level) for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)] \
        == [7, 6, 4, 3, 2]


def test_every_line_of_a_record_carries_its_priority_and_no_timestamp() -> None:
    """A traceback's lines each start with the record's priority, since journald takes each line as an entry."""
    formatter = JournalFormatter("tabfleetd %(name)s: %(message)s")
    assert formatter.format(record(logging.WARNING, "disk is full")) == "<4>tabfleetd tabfleetd.x: disk is full"
    lines = formatter.format(record(logging.ERROR, "failed", exc=True)).split("\n")
    assert len(lines) > 3 and all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>ValueError: boom"


def test_stderr_is_the_journal_only_when_journal_stream_names_it(tmp_path: Path) -> None:
    """$JOURNAL_STREAM must name the very device and inode of stderr; another file, or garbage, is not the journal."""
    with open(tmp_path / "stream", "wb") as stream, open(tmp_path / "other", "wb") as other:
        st = os.fstat(stream.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert stderr_is_journal(env, stream.fileno())
        assert not stderr_is_journal(env, other.fileno())
        assert not stderr_is_journal({}, stream.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": "x:y"}, stream.fileno())
