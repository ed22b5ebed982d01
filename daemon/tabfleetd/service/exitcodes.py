"""The daemon command's named exit codes (sysexits.h), so systemd units and scripts can tell failures apart.

Both the command line (cli.py) and the --detach parent (detach.py) end with these, so they live apart from either.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_STORE_DAMAGED = 65  # the store is missing, cut short or corrupt (EX_DATAERR); the message says how to restore it
EXIT_UNAVAILABLE = 69  # no Chromium
EXIT_SOFTWARE = 70  # a bug, or a --detach daemon that never became ready
EXIT_ALREADY_RUNNING = 75
EXIT_CONFIG = 78
