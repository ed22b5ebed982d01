"""A virtual X display (Xvfb) for a worker whose site needs a headed browser.

Sites such as ChatGPT block headless Chromium, so such a worker runs a headed
one. Without a DISPLAY it starts its own Xvfb: in a new session, ended with
SIGKILL when the worker dies (PR_SET_PDEATHSIG through setpriv), and stopped
by the worker at exit. Its frame buffer directory lies under the state dir,
so the Xvfb process names that directory on its command line and the same
leftover checks as for Chromium find it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from . import reaper
from ..errors import BrowserStartError
from ..files.statedir import CHILD_UMASK, private_opener

log = logging.getLogger(__name__)

SCREEN = "1280x900x24"


class VirtualDisplay:
    """One Xvfb, started on demand on a free display number."""

    def __init__(self, fbdir: Path, log_path: Path, executable: str = "Xvfb") -> None:
        self.fbdir = fbdir
        self.log_path = log_path
        self.executable = executable
        self.proc: subprocess.Popen[bytes] | None = None
        self.name: str | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self, timeout: float = 10.0) -> str:
        """Start Xvfb unless it runs; return its display name, e.g. ":7"."""
        if self.running and self.name:
            return self.name
        self.stop()
        found = shutil.which(self.executable)
        if not found:
            raise BrowserStartError("no DISPLAY and no Xvfb to make one: install the OS package xvfb "
                                    "(`apt-get install xvfb`), or run tabfleetd with DISPLAY set")
        self.fbdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        read_fd, write_fd = os.pipe()
        # -displayfd: Xvfb picks a free display and writes its number once it accepts clients.
        argv = [found, "-displayfd", str(write_fd), "-screen", "0", SCREEN, "-nolisten", "tcp", "-fbdir", str(self.fbdir)]
        setpriv = shutil.which("setpriv")
        if setpriv:
            argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
        try:
            with open(self.log_path, "ab", opener=private_opener) as err:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, pass_fds=(write_fd,),
                                             start_new_session=True, close_fds=True, umask=CHILD_UMASK)
                reaper.claim(self.proc.pid, self.proc.poll)  # its exit code is Popen's to read, not the orphan sweep's
        finally:
            os.close(write_fd)
        try:
            number = await self._read_number(read_fd, timeout)
        finally:
            os.close(read_fd)
        self.name = f":{number}"
        log.info("Xvfb %s started (pid %d)", self.name, self.proc.pid)
        return self.name

    async def _read_number(self, fd: int, timeout: float) -> int:
        os.set_blocking(fd, False)
        data = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in data:
            try:
                chunk = os.read(fd, 64)
            except BlockingIOError:
                chunk = None
            if chunk:
                data += chunk
                continue
            assert self.proc is not None
            if chunk == b"" or self.proc.poll() is not None or time.monotonic() > deadline:
                code = self.proc.poll()
                self.stop()
                raise BrowserStartError(f"Xvfb did not start (exit code {code}); see {self.log_path}")
            await asyncio.sleep(0.02)
        return int(data.split(b"\n")[0])

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.warning("Xvfb %d did not exit after SIGKILL", self.proc.pid)
        else:
            reaper.release(self.proc.pid)
        self.proc = None
        self.name = None


def display_problem(display: str) -> str | None:
    """Why a local X display such as ":0" cannot be used (no X server socket), or None.

    A remote display (host:N, e.g. ssh -X forwarding) is not checked here.
    """
    host, sep, rest = display.partition(":")
    if not sep:
        return "not an X display name (expected e.g. :0)"
    number = rest.split(".")[0]
    if host in ("", "unix") and number.isdigit() and not Path(f"/tmp/.X11-unix/X{number}").exists():
        return f"no X server listens there (/tmp/.X11-unix/X{number} is missing)"
    return None
