"""One Chromium, launched in its own process group and ended with that whole group.

Chromium is started by us (not by pyppeteer.launch) so that it lives in a new
session, dies with its worker (PR_SET_PDEATHSIG through setpriv where present)
and reports its DevTools endpoint through the DevToolsActivePort file rather
than a racy free-port guess.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from .errors import BrowserStartError, ChromiumNotFound
from .statedir import CHILD_UMASK, private_opener

log = logging.getLogger(__name__)

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PROFILE_MARK = "tabfleet-profile"

BASE_ARGS = (
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-breakpad",
    "--disable-dev-shm-usage",
    # Fewer helper processes: about 30 MB less per browser, measured with PSS.
    "--disable-features=Translate,MediaRouter,OptimizationHints,WebUIOmniboxPopup",
    "--enable-features=NetworkServiceInProcess2",
    "--in-process-gpu",
    "--disable-renderer-backgrounding",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--metrics-recording-only",
    "--mute-audio",
    "--password-store=basic",
    "--use-mock-keychain",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


def find_chromium(configured: str | None, path_env: str | None) -> str:
    """Return the Chromium executable to use, or raise ChromiumNotFound."""
    if configured:
        found = shutil.which(configured, path=path_env)
        if found:
            return found
        raise ChromiumNotFound(f"Chromium not found at '{configured}' (from --chromium or the config)")
    for name in CANDIDATES:
        found = shutil.which(name, path=path_env)
        if found:
            return found
    raise ChromiumNotFound(
        "no Chromium found on PATH (looked for chromium, chromium-browser, google-chrome): "
        "install the OS package, e.g. `apt-get install chromium`, or pass --chromium PATH"
    )


def chromium_argv(executable: str, profile: Path, headless: bool, extra: tuple[str, ...], as_root: bool) -> list[str]:
    argv = [executable, *BASE_ARGS, f"--user-data-dir={profile}"]
    if headless:
        argv.append("--headless=new")
    if as_root:
        # Chromium refuses to run its sandbox as root; only then is it turned off.
        argv.append("--no-sandbox")
    argv.extend(extra)
    argv.append("about:blank")
    setpriv = shutil.which("setpriv")
    if setpriv:
        argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
    return argv


class Chromium:
    """A running Chromium and the process group it leads."""

    def __init__(self, executable: str, profile: Path, log_path: Path, *, headless: bool = True,
                 extra_args: tuple[str, ...] = (), env: Mapping[str, str] | None = None) -> None:
        self.executable = executable
        self.profile = profile
        self.log_path = log_path
        self.headless = headless
        self.extra_args = extra_args
        self.env = dict(env) if env is not None else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def start(self, timeout: float) -> str:
        """Launch Chromium and return its browser websocket URL."""
        self.profile.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.profile / PROFILE_MARK).touch(mode=0o600)
        port_file = self.profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        argv = chromium_argv(self.executable, self.profile, self.headless, self.extra_args, os.geteuid() == 0)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Chromium's crash handler double-forks out of our process group; a config home inside
        # the profile puts the profile path on its command line, so it can be found and ended.
        env = dict(os.environ if self.env is None else self.env) | {"XDG_CONFIG_HOME": str(self.profile / "xdg")}
        with open(self.log_path, "wb", opener=private_opener) as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         start_new_session=True, env=env, close_fds=True, umask=CHILD_UMASK)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrowserStartError(f"Chromium exited with code {self.proc.returncode} at start; see {self.log_path}")
            try:
                lines = port_file.read_text().splitlines()
            except FileNotFoundError:
                lines = []
            if len(lines) >= 2:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            await asyncio.sleep(0.05)
        self.kill()
        raise BrowserStartError(f"Chromium did not open its DevTools port within {timeout:.0f} s; see {self.log_path}")

    async def wait_exit(self, poll_s: float = 0.25) -> int | None:
        """Return Chromium's exit code once it has exited."""
        while self.proc is not None and self.proc.poll() is None:
            await asyncio.sleep(poll_s)
        return None if self.proc is None else self.proc.returncode

    def kill(self) -> None:
        """Kill Chromium's whole process group, and what escaped it, and reap its leader."""
        if self.proc is None:
            return
        kill_group(self.proc.pid)
        kill_profile_processes(self.profile)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.warning("Chromium %d did not exit after SIGKILL", self.proc.pid)
        self.proc = None


def kill_group(pgid: int) -> bool:
    """SIGKILL a process group; False when it no longer exists."""
    try:
        os.killpg(pgid, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        log.warning("not allowed to kill process group %d", pgid)
        return False


def kill_profile_processes(profile: Path) -> int:
    """SIGKILL every process whose command line names a path under `profile`."""
    import psutil  # imported here: the daemon's control plane does not need it at import

    mark = str(profile)
    killed = 0
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.pid != os.getpid() and any(mark in arg for arg in cmdline):
            try:
                proc.kill()
                killed += 1
            except psutil.Error:
                pass
    return killed
