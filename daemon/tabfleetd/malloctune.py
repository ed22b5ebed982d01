"""glibc malloc, tuned for a process that runs for weeks: few arenas, and freed memory handed back to the system.

glibc gives each thread that allocates under contention an arena of its own
(up to 8 per core), and keeps what is freed inside them for reuse.  The
daemon's executor threads (store, backups, file work) each come and go, so
over days the arenas fill with free holes the daemon's RSS keeps counting.
Two arenas serve the daemon's few busy threads, and a trim after each
housekeeping pass returns the free pages of every arena.  Elsewhere (musl,
macOS) these are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import platform

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # mallopt parameter, from glibc's malloc.h
DAEMON_ARENAS = 2


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def limit_arenas(count: int = DAEMON_ARENAS) -> bool:
    """At most `count` malloc arenas from now on (call before threads start); True if glibc took it."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(count)))


def trim() -> bool:
    """Hand the free pages of every arena back to the system; True if some were. Takes a few ms: run it in a thread."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(ctypes.c_size_t(0)))
