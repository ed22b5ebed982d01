"""The state dir, private to the daemon's user whatever the umask: directories 0700, files 0600.

It holds the store (every prompt), the browser profiles (the accounts'
sessions), logs, snapshots and the web token.  The daemon sets the modes
itself rather than trusting the umask it was started with (022 in a shell):
at start on what is there, and on each file it makes.  Chromium and Xvfb run
with umask 077, so their own files (cookies, DevToolsActivePort) are private
too.  Outputs are not in here: they follow the umask and their directory, so
the people who submitted a job can read its images.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError

SUBDIRS = ("store", "logs", "profiles", "snapshots", "xvfb", "accounts")
CHILD_UMASK = 0o077  # for Chromium and Xvfb
TIGHTEN_DEPTH = 3  # state/profiles/worker-N/<entries>: anything deeper sits inside a 0700 directory


def private_dir(path: Path) -> None:
    """Make `path` (and missing parents) and set it 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def private_opener(path: str, flags: int) -> int:
    """An opener for open(): a file it makes is 0600 whatever the umask, and one it finds becomes 0600."""
    fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    except PermissionError:  # someone else's file (as root's daemon would not be): keep its mode
        pass
    return fd


def prepare(state_dir: Path) -> None:
    """Make the state dir and its subdirectories 0700, refusing one that belongs to another user."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    owner = state_dir.stat().st_uid
    if owner != os.geteuid():
        raise ConfigError(f"the state dir {state_dir} belongs to uid {owner}, not to tabfleetd's user (uid {os.geteuid()}): "
                          "run tabfleetd as its owner, or choose another --state-dir")
    os.chmod(state_dir, 0o700)
    for name in SUBDIRS:
        private_dir(state_dir / name)


def tighten(directory: Path, depth: int = TIGHTEN_DEPTH) -> None:
    """Set 0700 on the directories and 0600 on the files under `directory`, `depth` levels down (symlinks untouched)."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_symlink():
                continue
            if entry.is_dir():
                os.chmod(entry.path, 0o700)
                if depth > 1:
                    tighten(Path(entry.path), depth - 1)
            elif entry.is_file():
                os.chmod(entry.path, 0o600)
        except OSError:  # gone meanwhile, or not ours
            continue
