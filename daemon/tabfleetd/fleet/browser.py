"""One Chromium, launched in its own process group and ended with that whole group.

Chromium is started by us (not by pyppeteer.launch) so that it lives in a new
session, dies with its worker (PR_SET_PDEATHSIG through setpriv where present)
and is driven over its DevTools pipe: `--remote-debugging-pipe` reads commands
from fd 3 and writes replies to fd 4. Only the worker holds the other ends, so
no other process (and no other local user) can reach the browser; no TCP port
is opened at all. devtools.py speaks CDP over that pipe.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import shutil
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import reaper
from ..errors import BrowserStartError, ChromiumNotFound
from ..files.statedir import CHILD_UMASK

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
    "--remote-debugging-pipe",
)
PIPE_IN_FD, PIPE_OUT_FD = 3, 4  # where Chromium reads CDP commands and writes its replies


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


@dataclass
class DevToolsPipe:
    """The worker's ends of a Chromium's DevTools pipe: CDP commands are written to `commands`, replies read from `replies`."""

    commands: int
    replies: int

    def close(self) -> None:
        for fd in (self.commands, self.replies):
            try:
                os.close(fd)
            except OSError:
                pass


class ChildProcess:
    """A process started with posix_spawn, with the part of Popen's interface the worker uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        reaper.claim(pid, self.poll)  # its exit code is ours to read, not the orphan sweep's

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere; its code is lost
                self.returncode = -1
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
            if self.returncode is not None:
                reaper.release(self.pid)
        return self.returncode

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"process {self.pid} is still running after {timeout:.0f} s")
            time.sleep(0.01)
        assert self.returncode is not None
        return self.returncode


def spawn(argv: list[str], env: Mapping[str, str], log_fd: int, pipe_in: int, pipe_out: int) -> ChildProcess:
    """Start `argv` in a new session: stdin /dev/null, stdout and stderr to `log_fd`, and the DevTools pipe on fds 3 and 4.

    posix_spawn, because Popen cannot put an fd at a chosen number without a preexec_fn. Every source is first
    copied above the target numbers: dup2(fd, fd) is a no-op that would leave a pipe end already at 3 or 4
    close-on-exec, and Chromium would start without its pipe.
    """
    sources = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (log_fd, pipe_in, pipe_out)]
    # What the worker inherited as inheritable (multiprocessing's channel to the daemon) must not reach Chromium.
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if fd > 2 and os.get_inheritable(fd):
                os.set_inheritable(fd, False)
        except OSError:  # the listing's own fd, closed by now
            pass
    log_copy, in_copy, out_copy = sources
    # Chromium's own files (cookies, caches) are the daemon user's alone, whatever the umask it was started with.
    umask = os.umask(CHILD_UMASK)
    try:
        pid = os.posix_spawn(argv[0], argv, env, setsid=True, setsigdef=(signal.SIGPIPE, signal.SIGXFSZ), file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, log_copy, 1),
            (os.POSIX_SPAWN_DUP2, log_copy, 2),
            (os.POSIX_SPAWN_DUP2, in_copy, PIPE_IN_FD),
            (os.POSIX_SPAWN_DUP2, out_copy, PIPE_OUT_FD),
        ])
    finally:
        os.umask(umask)
        for fd in sources:
            os.close(fd)
    return ChildProcess(pid)


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
        self.proc: ChildProcess | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def start(self) -> DevToolsPipe:
        """Launch Chromium; return the worker's ends of its DevTools pipe, which the caller then owns."""
        self.profile.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.profile / PROFILE_MARK).touch(mode=0o600)
        (self.profile / "DevToolsActivePort").unlink(missing_ok=True)  # left by a tabfleet that still used a port
        argv = chromium_argv(self.executable, self.profile, self.headless, self.extra_args, os.geteuid() == 0)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Chromium's crash handler double-forks out of our process group; a config home inside the profile
        # puts the profile path on its command line, so it can be found and ended.
        env = dict(os.environ if self.env is None else self.env) | {"XDG_CONFIG_HOME": str(self.profile / "xdg")}
        commands_in, commands = os.pipe()
        replies, replies_out = os.pipe()
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            self.proc = spawn(argv, env, log_fd, commands_in, replies_out)
        except OSError as exc:
            DevToolsPipe(commands, replies).close()
            raise BrowserStartError(f"cannot start Chromium ({argv[0]}): {exc}") from None
        finally:
            for fd in (commands_in, replies_out, log_fd):
                os.close(fd)
        return DevToolsPipe(commands, replies)

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
        except TimeoutError:
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


def names_path(arg: str, root: str) -> bool:
    """Whether a command-line argument (or the value of a `--switch=VALUE` one) is `root` or a path under it.

    A path component boundary, not a substring: worker-1's profile must not match worker-10's.
    """
    value = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg else arg
    return value == root or value.startswith(root + "/")


def kill_profile_processes(profile: Path) -> int:
    """SIGKILL every process whose command line names `profile` or a path under it."""
    import psutil  # imported here: the daemon's control plane does not need it at import

    root = os.path.normpath(profile)
    killed = 0
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.pid != os.getpid() and any(names_path(arg, root) for arg in cmdline):
            try:
                proc.kill()
                killed += 1
            except psutil.Error:
                pass
    # process_iter keeps every process it saw, with its command line, until that process ends: on a busy machine that
    # is memory held between the rare calls here, for processes that are not ours.
    clear = getattr(psutil.process_iter, "cache_clear", None)  # psutil 6 and later
    if clear is not None:
        clear()
    return killed
