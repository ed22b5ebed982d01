"""Logging to stderr, for a terminal or for systemd's journal.

journald stamps each line itself and reads a leading ``<N>`` as the line's
syslog priority, so under systemd (``log_format = "journal"``) lines carry no
timestamp and start with their priority: ``journalctl -p warning -u tabfleetd``
then shows warnings and worse.  Every line of a multi-line message (a
traceback) gets the prefix, since journald takes each line as an entry.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

TEXT_FORMAT = "%(asctime)s {who} %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "{who} %(name)s: %(message)s"
# Python's levels as syslog priorities (sd-daemon.h's SD_ERR, SD_WARNING...).
PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
DEBUG_PRIORITY = 7


class JournalFormatter(logging.Formatter):
    """`<priority>` before each line of the record, and no timestamp (journald adds its own)."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def priority(level: int) -> int:
    return next((p for threshold, p in PRIORITIES if level >= threshold), DEBUG_PRIORITY)


def stderr_is_journal(env: Mapping[str, str], fd: int | None = None) -> bool:
    """True when stderr is the journal's stream: $JOURNAL_STREAM names its device and inode (systemd.exec(5))."""
    device, _, inode = env.get("JOURNAL_STREAM", "").partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        st = os.fstat(sys.stderr.fileno() if fd is None else fd)
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def log_to_stderr(level: str, journal: bool, who: str) -> None:
    """Send all logging to stderr in the text or the journal format; `who` names the process (tabfleetd, worker-N)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter(JOURNAL_FORMAT.format(who=who)) if journal
                         else logging.Formatter(TEXT_FORMAT.format(who=who)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
