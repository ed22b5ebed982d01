"""Named accounts on disk: each one's session and state in STATE_DIR/accounts/NAME.json, 0600 in a 0700 directory.

A session signs an account in on its site, so these files are as private as the browser profiles: written
atomically (a temp file, fsync, rename) through a descriptor of the directory, never through a symlink, and
read with a size limit.  The daemon writes them; a worker reads its account's file when it attaches a browser.

    {"version": 1, "name", "state", "reason", "last_used", "saved", "source",
     "session": {"cookies": [...], "origins": [...]}}      (cookiefile.py describes a session)
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from ..files.statedir import private_dir
from ..settings.workerspec import account_problem

UNKNOWN, SIGNED_IN, SIGNED_OUT, CHALLENGED = "unknown", "signed in", "signed out", "challenged"
MAX_FILE_BYTES = 32 * 1024 * 1024
SUFFIX = ".json"


def empty_record(name: str) -> dict[str, Any]:
    return {"version": 1, "name": name, "state": UNKNOWN, "reason": None, "last_used": None, "saved": None,
            "source": None, "session": {"cookies": [], "origins": []}}


class AccountFiles:
    """The accounts directory.  Every method is blocking: the daemon calls them in an executor."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _dir_fd(self, create: bool) -> int | None:
        if create:
            private_dir(self.directory)
        try:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o700)
        return fd

    @staticmethod
    def file_name(name: str) -> str:
        problem = account_problem(name)
        if problem:
            raise ValueError(problem)
        return name + SUFFIX

    def names(self) -> list[str]:
        fd = self._dir_fd(create=False)
        if fd is None:
            return []
        try:
            return sorted(n[:-len(SUFFIX)] for n in os.listdir(fd)
                          if n.endswith(SUFFIX) and account_problem(n[:-len(SUFFIX)]) is None)
        finally:
            os.close(fd)

    def read(self, name: str) -> dict[str, Any] | None:
        """The account's record, or None when it has none; ValueError for a file that is not one of ours."""
        file_name = self.file_name(name)
        fd = self._dir_fd(create=False)
        if fd is None:
            return None
        try:
            try:
                handle = os.open(file_name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=fd)
            except FileNotFoundError:
                return None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise ValueError(f"accounts/{file_name} is a symlink; remove it") from None
                raise
            try:
                info = os.fstat(handle)
                if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
                    raise ValueError(f"accounts/{file_name} is not a plain file; remove it")
                data = b""
                while len(data) <= MAX_FILE_BYTES and (chunk := os.read(handle, 1 << 20)):
                    data += chunk
            finally:
                os.close(handle)
        finally:
            os.close(fd)
        if len(data) > MAX_FILE_BYTES:
            raise ValueError(f"accounts/{file_name} is larger than {MAX_FILE_BYTES >> 20} MiB")
        try:
            record = json.loads(data)
        except ValueError:
            raise ValueError(f"accounts/{file_name} is not valid JSON") from None
        if not isinstance(record, dict) or not isinstance(record.get("session"), dict):
            raise ValueError(f"accounts/{file_name} holds no session")
        return empty_record(name) | record | {"name": name}

    def write(self, name: str, record: dict[str, Any]) -> None:
        """Replace the account's file atomically (0600)."""
        file_name = self.file_name(name)
        fd = self._dir_fd(create=True)
        assert fd is not None
        temp = f".{file_name}.{os.getpid()}.{time.monotonic_ns()}.tmp"
        try:
            handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd)
            try:
                os.fchmod(handle, 0o600)
                view = memoryview(json.dumps(record | {"name": name}, separators=(",", ":")).encode())
                while view:
                    view = view[os.write(handle, view):]
                os.fsync(handle)
            finally:
                os.close(handle)
            os.rename(temp, file_name, src_dir_fd=fd, dst_dir_fd=fd)
            os.fsync(fd)
        except BaseException:
            try:
                os.unlink(temp, dir_fd=fd)
            except OSError:
                pass
            raise
        finally:
            os.close(fd)

    def remove(self, name: str) -> bool:
        """Delete the account's file; False when there was none."""
        file_name = self.file_name(name)
        fd = self._dir_fd(create=False)
        if fd is None:
            return False
        try:
            os.unlink(file_name, dir_fd=fd)
            os.fsync(fd)
            return True
        except FileNotFoundError:
            return False
        finally:
            os.close(fd)
