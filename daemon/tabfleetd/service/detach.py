"""`tabfleetd --detach`: run in the background without systemd, and the log file either way.

python-daemon's DaemonContext does the classic double fork, setsid, chdir /
and closes every fd.  Its parent exits at once, so the command would say
"started" before the daemon could fail; instead the command forks first and
waits for READY=1 (the sd_notify message systemd gets) on a socketpair, or for
EXIT_STATUS=N, or for the pair to close.  So `tabfleetd --detach` returns only
once the control socket answers, and fails with the daemon's own exit code.

Used only outside systemd (cli.py refuses --detach under $NOTIFY_SOCKET):
there the double fork would end the unit's main process.  The pid file is ours,
not python-daemon's (its pidfile module needs the deprecated lockfile package);
the flock on the state dir, not the pid file, is what refuses a second daemon.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import daemon as python_daemon

from ..errors import AlreadyRunning
from .exitcodes import EXIT_SOFTWARE
from ..journal import TEXT_FORMAT
from .notify import Notifier
from ..files.statedir import private_opener

log = logging.getLogger(__name__)

LOG_FORMAT = TEXT_FORMAT.format(who="tabfleetd")
OUTPUT_LOGGER = "tabfleetd.output"  # lines that worker processes write to their stderr
READY_TIMEOUT_S = 120.0
LOG_TAIL_LINES = 20


class _PassThroughFormatter(logging.Formatter):
    """The normal format, except for output lines that already carry their own (a worker's) prefix."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name == OUTPUT_LOGGER:
            return record.getMessage()
        return super().format(record)


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotated log file that is 0600 whatever the umask, as are the files it rotates to."""

    def _open(self) -> IO[str]:
        return open(self.baseFilename, self.mode, encoding=self.encoding, errors=self.errors, opener=private_opener)


def log_to_file(path: Path, level: str, max_mb: float, backups: int) -> logging.Handler:
    """Send all logging to a size-rotated file (0600); max_mb 0 never rotates."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    handler = _PrivateRotatingFileHandler(path, maxBytes=int(max_mb * 2**20), backupCount=backups, encoding="utf-8")
    handler.setFormatter(_PassThroughFormatter(LOG_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


def pump_output(read_fd: int) -> threading.Thread:
    """Log each line written to our stdout/stderr pipe (workers inherit it), so it is rotated with the log."""
    out = logging.getLogger(OUTPUT_LOGGER)
    out.setLevel(logging.DEBUG)  # each worker filtered its own lines by log_level already

    def pump() -> None:
        with os.fdopen(read_fd, "rb") as pipe:
            for line in pipe:
                out.info("%s", line.decode("utf-8", "replace").rstrip("\n"))

    thread = threading.Thread(target=pump, name="output-pump", daemon=True)
    thread.start()
    return thread


# -- pid file -------------------------------------------------------------------


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def write_pidfile(path: Path, pid: int) -> None:
    """Write the pid file (0600) atomically, so a reader never sees it half written."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{pid}")
    with open(tmp, "w", opener=private_opener) as f:
        f.write(f"{pid}\n")
    os.replace(tmp, path)


def remove_pidfile(path: Path, pid: int) -> None:
    """Remove the pid file if it still names us (never another daemon's)."""
    if read_pid(path) == pid:
        path.unlink(missing_ok=True)


def refuse_if_running(socket_path: Path, pidfile: Path | None) -> None:
    """Raise AlreadyRunning when a daemon answers on the socket or the pid file names a live process."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect(str(socket_path))
        raise AlreadyRunning(f"another tabfleetd is already listening on {socket_path}")
    except OSError:
        pass
    finally:
        probe.close()
    pid = read_pid(pidfile) if pidfile else None
    if pid is not None and pid != os.getpid() and pid_alive(pid):
        raise AlreadyRunning(f"the pid file {pidfile} names a running process ({pid}); stop it first or use another --pidfile")


# -- detaching --------------------------------------------------------------------


def daemonize(pidfile: Path | None, keep: Sequence[IO[str] | int], log_file: Path) -> Notifier:
    """Detach into the background; returns only in the daemon, with a notifier to the waiting command."""
    sys.stdout.flush()
    sys.stderr.flush()
    waiter, notify_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid:
        notify_end.close()
        os.waitpid(pid, 0)  # the first fork exits as soon as DaemonContext has forked again
        sys.exit(_wait_ready(waiter, pidfile, log_file))
    waiter.close()
    read_fd, write_fd = os.pipe()
    umask = os.umask(0)
    os.umask(umask)
    context = python_daemon.DaemonContext(
        detach_process=True,  # explicit: its default guesses from the parent pid and stdin
        working_directory="/",
        umask=umask,  # DaemonContext's default, 0, would leave outputs and the store world-writable
        files_preserve=[*keep, notify_end, read_fd],
        stdout=os.fdopen(write_fd, "wb", buffering=0, closefd=False),
        stderr=os.fdopen(write_fd, "wb", buffering=0, closefd=False),
        # SIGTERM keeps its default until the asyncio loop installs the daemon's own handler.
        signal_map={signal.SIGTSTP: None, signal.SIGTTIN: None, signal.SIGTTOU: None},
    )
    try:
        context.open()
        os.close(write_fd)  # fds 1 and 2 now hold the pipe's write end
        pump_output(read_fd)
        if pidfile is not None:
            write_pidfile(pidfile, os.getpid())
    except BaseException:
        os._exit(1)  # the waiting command sees the pair close and reports the failure
    return Notifier(notify_end)


def _wait_ready(waiter: socket.socket, pidfile: Path | None, log_file: Path) -> int:
    """In the command: wait for READY=1 or EXIT_STATUS=N from the daemon; return our exit code."""

    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        waiter.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            data = waiter.recv(4096)
        except socket.timeout:
            print(f"tabfleetd: the daemon did not report ready within {READY_TIMEOUT_S:.0f} s; see {log_file}",
                  file=sys.stderr)
            return EXIT_SOFTWARE
        fields = dict(line.partition("=")[::2] for line in data.decode(errors="replace").splitlines())
        if fields.get("READY") == "1":
            pid = read_pid(pidfile) if pidfile else None
            print(f"tabfleetd started{f' (pid {pid})' if pid else ''}; log: {log_file}")
            return 0
        if not data or "EXIT_STATUS" in fields:
            code = int(fields.get("EXIT_STATUS", EXIT_SOFTWARE) or EXIT_SOFTWARE)
            print(f"tabfleetd: the daemon did not start (exit {code}); the end of {log_file}:", file=sys.stderr)
            print(_tail(log_file), file=sys.stderr)
            return code


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join("    " + line for line in lines[-LOG_TAIL_LINES:])
