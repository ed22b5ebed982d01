"""A worker process: one browser, one page, one site adapter, one account, one task at a time.

Started by the fleet through a spawn context.  Its browser is a Chromium it launches and drives over a pipe
(local), or a browser elsewhere that it attaches to over a DevTools endpoint (remote, remote.py), as its
`[[workers]]` entry says.  Either way it applies its account's session when it attaches and sends the
refreshed session back after tasks (sessions.py).  It talks to the daemon only through its Channel:

    daemon -> worker  {"t": "task", "key", "prompt", "path", "site", "url", "deadline_s", "answer_s"}
                      {"t": "login", "url", "display", "args"}   open the profile headed until the person closes it
                      {"t": "session"}   the account's session changed (imported, removed): apply it, replacing the browser's
                      {"t": "stop"}
                      {"t": "abort", "key"}   its job was cancelled: stop the task now (inbox.py)
    worker -> daemon  {"t": "hello", "pid", "browser": {"kind": "local", "pid", "pgid", "profile"} | {"kind": "remote", "endpoint"}}
                      {"t": "browser", "state": "reconnecting", "error", "attempt", "retry_in_s"}   a remote browser is gone;
                                        no task until the next hello (one sent meanwhile is answered "detached")
                      {"t": "session", "account", "session": {"cookies", "origins"}, "source"}   the session as the browser has it now
                      {"t": "hb", "rss_mb", "profile_mb"}   profile_mb: the local profile's size (None: a remote browser)
                      {"t": "result", "key", "ok": true, "file", "sha256", "bytes", "adopted", "started", "finished",
                       "sent_at", "answer_s"}
                      {"t": "result", "key", "ok": false, "error", "kind", "wait_s", "blame", "started", "finished",
                       "sent_at", "frozen_cpu_s", "data" (disk: the image that could not be written)}
                      {"t": "fatal", "error", "code"}   the worker cannot run at all
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import random
import signal
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from . import loginwindow, proctree, reaper, sessions
from .accounts import AccountFiles
from .browser import Chromium
from .channel import Channel
from .inbox import ABORTED, Abortable, Inbox
from .profilekeeper import ProfileKeeper
from ..settings.config import Config
from .devtools import close_page, connect_browser
from .display import VirtualDisplay
from ..errors import BrowserError, OutDirError, ProfileError, SiteError
from ..journal import log_to_stderr
from ..files.outdir import is_image
from ..files.outputs import read_image, write_atomic
from .remote import RemoteBrowser
from ..sites.profile import adapter_for
from ..sites.base import AUTH, CHALLENGE, CRASH, PERMANENT, SITE, TIMEOUT, WORKER, SiteAdapter

log = logging.getLogger("tabfleetd.fleet.worker")

VIEWPORT = {"width": 1024, "height": 768}
PAGE_CLOSE_S = 3.0
REAP_EVERY_S = 2.0  # orphans are also reaped at each SIGCHLD; this catches what coalesced signals hide
PROFILE_MEASURE_S = 5.0  # how often the profile's size is measured (a walk of its files, in a thread)

EXIT_OK = 0
EXIT_BROWSER = 3  # Chromium could not be started
DISK = "disk"
DETACHED = "detached"  # a task that reached a worker whose remote browser is gone: back to pending, nothing charged
RECONNECT_FIRST_S, RECONNECT_CAP_S = 1.0, 30.0  # a remote browser is tried again after these, doubling, with jitter
# Errors writing an image that are the output's, not the prompt's: the job waits for room, the image is kept.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM, errno.ENOENT,
                         errno.ENOTDIR})


def main(wid: int, conn: Connection, config: Config, chromium: str) -> None:
    """Process entry point."""
    proctree.die_with_parent()
    reaper.become_subreaper()  # before any Chromium: what it orphans becomes ours to reap, not PID 1's
    log_to_stderr(config.log_level, config.log_format == "journal", f"worker-{wid}")
    for noisy in ("pyppeteer", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    sys.exit(asyncio.run(Worker(wid, conn, config, chromium).run()))


class Worker:
    def __init__(self, wid: int, conn: Connection, config: Config, chromium: str) -> None:
        self.wid = wid
        self.conn = conn
        self.config = config
        self.chromium = Chromium(
            chromium, config.state_dir / "profiles" / f"worker-{wid}",
            config.state_dir / "logs" / f"chromium-{wid}.log",
            headless=config.headless, extra_args=config.chromium_args)
        spec = config.worker_spec(wid)
        self.account = spec.account_of(wid)
        self.remote = RemoteBrowser(spec.remote) if spec.remote is not None else None
        self.reconnector: asyncio.Task[None] | None = None
        self.session = sessions.AccountSession(self.account, AccountFiles(config.state_dir / "accounts"))
        self.browser: Any = None
        self.page: Any = None
        self.adapter: SiteAdapter | None = None
        self.chan: Channel | None = None
        self.generation = Abortable()
        self.browser_tasks = 0  # tasks on the current browser, for rotation
        self.busy = False
        self.browser_lock = asyncio.Lock()
        self.rotations = 0
        self.profile = None if self.remote is not None else ProfileKeeper(self.chromium, config.profile_max_mb)
        self.display = VirtualDisplay(config.state_dir / "xvfb" / f"worker-{wid}", config.state_dir / "logs" / f"xvfb-{wid}.log")

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()
        assert main_task is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, main_task.cancel)
        self.chan = await Channel.open(self.conn)
        inbox = Inbox(self.chan, self.generation.abort)
        heartbeat = None
        reaping = asyncio.create_task(reaper.reap_forever(REAP_EVERY_S, on_sigchld=True))
        reading = asyncio.create_task(inbox.read())
        try:
            try:
                await self.start_browser()
            except BrowserError as exc:
                if self.remote is None:
                    await self.chan.send({"t": "fatal", "error": str(exc), "code": exc.code})
                    return EXIT_BROWSER
                await self.begin_reconnect(str(exc))  # a remote browser may come (back) later; the worker waits for it
            heartbeat = asyncio.create_task(self.heartbeats())
            while True:
                msg = await inbox.get()
                if msg is None:
                    log.info("the daemon has gone; stopping")
                    break
                if msg.get("t") == "task":
                    self.busy = True
                    self.generation.begin(str(msg["key"]))
                    try:
                        result = await self.run_task(msg)
                    finally:
                        self.busy = False
                        self.generation.end()
                    await self.chan.send(result)
                elif msg.get("t") == "login":
                    await self.login(msg)
                elif msg.get("t") == "session":
                    await self.reload_session()
                elif msg.get("t") == "stop":
                    break
        except asyncio.CancelledError:
            log.info("stopping on signal")
        finally:
            if heartbeat:
                heartbeat.cancel()
            reaping.cancel()
            reading.cancel()
            if self.reconnector is not None:
                self.reconnector.cancel()
            await self.stop_browser()
            self.display.stop()
            reaper.reap_orphans()
        return EXIT_OK

    async def start_browser(self) -> None:
        timeout = self.config.browser_start_timeout_s
        viewport = VIEWPORT
        if self.remote is not None:
            self.page = await self.remote.attach(timeout, viewport)
            self.browser = self.remote.browser
            info = self.remote.info()
        else:
            sessions.keep_profile_to(self.chromium.profile, self.account)
            assert self.profile is not None
            await self.profile.trim()
            self.browser = await connect_browser(self.chromium, timeout, viewport)
            try:
                pages = await asyncio.wait_for(self.browser.pages(), timeout)
                self.page = pages[0] if pages else await asyncio.wait_for(self.browser.newPage(), timeout)
            except Exception as exc:
                await self.stop_browser()
                raise BrowserError(f"cannot drive Chromium: {type(exc).__name__}: {exc}") from None
            info = {"kind": "local", "pid": self.chromium.pid, "pgid": self.chromium.pid, "profile": str(self.chromium.profile)}
        self.adapter = None
        self.browser_tasks = 0
        await self.session.apply(self.browser_send, self.page, self.context_id, replace=False)
        assert self.chan is not None
        await self.chan.send({"t": "hello", "pid": os.getpid(), "rotations": self.rotations, "browser": info})

    async def stop_browser(self) -> None:
        if self.browser is not None:
            await self.save_session(force=True)
        if self.remote is not None:
            await self.remote.detach()
        elif self.browser is not None:
            await self.disconnect(self.browser)
        self.browser = self.page = None
        self.session.storage_script = None
        self.chromium.kill()

    # -- the account's session -------------------------------------------------

    def browser_send(self, method: str, params: dict[str, Any]) -> Any:
        return self.browser._connection.send(method, params)

    @property
    def context_id(self) -> str | None:
        return self.remote.context_id if self.remote is not None else None

    async def reload_session(self) -> None:
        """The account's session was imported or removed: the browser takes it, and the site is loaded again."""
        if self.browser is None:
            return  # applied at the next attach
        await self.session.apply(self.browser_send, self.page, self.context_id, replace=True)
        if self.adapter is not None:
            self.adapter.opened_url = None

    async def save_session(self, force: bool = False) -> None:
        """Send the daemon the account's session as the browser now has it, when it changed."""
        if self.browser is None or self.chan is None:
            return
        session = await self.session.read_back(self.browser_send, self.page, self.context_id,
                                               getattr(self.adapter, "keeps_storage", False), force)
        if session is not None:
            await self.chan.send({"t": "session", "account": self.account, "session": session,
                                  "source": f"worker {self.wid}"})

    @staticmethod
    async def disconnect(browser: Any) -> None:
        try:
            await asyncio.wait_for(browser.disconnect(), 2)
        except Exception:  # the browser may already be gone; it is killed next anyway
            pass

    async def recycle_browser(self) -> None:
        async with self.browser_lock:  # the idle check in heartbeats() may want the same
            log.info("recycling Chromium")
            await self.stop_browser()
            await self.start_browser()

    async def rotate_if_due(self) -> None:
        """A fresh browser every rotate_after_tasks tasks (Chromium's memory only grows over a long run), or sooner
        when its profile has outgrown profile_max_mb (the new browser's start trims it)."""
        every = self.config.rotate_after_tasks
        if every and self.browser_tasks >= every:
            self.rotations += 1
            log.info("rotating Chromium after %d tasks", self.browser_tasks)
            await self.clear_cache(always=True)
            await self.recycle_browser()
        elif self.profile_over_cap():
            log.info("the profile has grown to %.0f MB, over profile_max_mb: restarting Chromium to trim it", self.profile_mb)
            await self.recycle_browser()

    # -- a bounded profile (profilekeeper.py) -------------------------------------

    @property
    def profile_mb(self) -> float | None:
        return None if self.profile is None else self.profile.size_mb

    def profile_over_cap(self) -> bool:
        return self.profile is not None and self.page is not None and self.profile.over_cap()

    async def clear_cache(self, always: bool = False) -> None:
        if self.profile is not None and self.page is not None:  # a remote context's cache is in memory, gone at rotation
            await self.profile.clear_cache(self.page, always)

    async def heartbeats(self) -> None:
        assert self.chan is not None
        last_rss = 0.0
        measured = profile_measured = 0.0
        while True:
            now = time.monotonic()
            if now - measured > 5:
                last_rss, measured = proctree.tree_memory_mb(os.getpid()), now
            if now - profile_measured > PROFILE_MEASURE_S and self.profile is not None:
                await self.profile.measure()
                profile_measured = now
            await self.chan.send({"t": "hb", "rss_mb": last_rss, "profile_mb": self.profile_mb})
            if (self.remote is not None and not self.busy and not self.browser_lock.locked() and self.browser is not None
                    and self.remote.lost):
                await self.begin_reconnect(f"the connection to the remote browser at {self.remote.shown} closed")
            elif (not self.busy and not self.browser_lock.locked() and self.chromium.proc is not None
                    and self.chromium.proc.poll() is not None):
                # Chromium died between tasks: replace it now, not when the next task finds it dead.
                log.warning("Chromium exited (%s) while idle; starting a new one", self.chromium.proc.returncode)
                await self.recycle_quietly()
            elif not self.busy and not self.browser_lock.locked() and self.profile_over_cap():
                log.info("the profile has grown to %.0f MB while idle, over profile_max_mb: restarting Chromium to trim it",
                         self.profile_mb)
                await self.recycle_quietly()
            await asyncio.sleep(self.config.heartbeat_interval_s)

    async def run_task(self, msg: dict[str, Any]) -> dict[str, Any]:
        started = time.time()
        deadline = time.monotonic() + float(msg["deadline_s"])
        path = Path(msg["path"])
        reply: dict[str, Any] = {"t": "result", "key": msg["key"], "started": started}
        data = b""
        try:
            existing = read_image(path)  # never through a symlink; ForeignFile for anything but an image
            if existing is not None:
                data, adopted = existing, True
            else:
                if not await self.attached():
                    return reply | self.detached_reply()
                await self.rotate_if_due()
                data, adopted = await self.generation.run(self.generate(msg, deadline)), False
                self.browser_tasks += 1
                write_atomic(path, data)
                await self.clear_cache()
                self.session.signed_in = True
                await self.save_session()
        except SiteError as exc:
            frozen_cpu = self.renderer_cpu_s() if exc.frozen else None
            if exc.kind in (AUTH, CHALLENGE):
                self.session.signed_in = False
            if exc.kind == DETACHED:
                return reply | self.detached_reply()
            if exc.kind in (TIMEOUT, ABORTED):  # the page may be mid-answer: it goes, and its renderer with it
                await self.recycle_quietly(page_only=True)
            elif exc.kind == CRASH:
                await self.recycle_quietly()
            return reply | {"ok": False, "error": str(exc), "kind": exc.kind, "wait_s": exc.wait_s, "blame": exc.blame,
                            "frozen_cpu_s": frozen_cpu, "finished": time.time()} | self.send_times()
        except (OutDirError, ProfileError) as exc:
            # The output directory's fault (ForeignFile), or a profile queued before a rule it now breaks: not the
            # browser's, so the task fails and nothing else happens.
            return reply | {"ok": False, "error": str(exc), "kind": PERMANENT, "wait_s": None, "finished": time.time()}
        except OSError as exc:
            if data and exc.errno in DISK_ERRNOS:
                # The image exists but the output cannot take it: hand it to the daemon, never make it again.
                log.warning("task %s: cannot write %s: %s", msg["key"], path, exc.strerror)
                return reply | {"ok": False, "error": f"cannot write {path.name}: {exc.strerror}", "kind": DISK,
                                "wait_s": None, "blame": SITE, "data": data, "finished": time.time()} | self.send_times()
            log.warning("task %s: %s: %s", msg["key"], type(exc).__name__, exc)
            await self.recycle_quietly()
            return reply | {"ok": False, "error": f"{type(exc).__name__}: {exc}", "kind": CRASH, "wait_s": None,
                            "blame": WORKER, "finished": time.time()}
        except Exception as exc:  # a dead browser surfaces as many pyppeteer/websockets types
            log.warning("task %s: %s: %s", msg["key"], type(exc).__name__, exc)
            await self.recycle_quietly()
            return reply | {"ok": False, "error": f"{type(exc).__name__}: {exc}", "kind": CRASH, "wait_s": None,
                            "blame": WORKER, "finished": time.time()}
        return reply | {"ok": True, "file": path.name, "sha256": hashlib.sha256(data).hexdigest(),
                        "bytes": len(data), "adopted": adopted, "finished": time.time()} | ({} if adopted else self.send_times())

    def send_times(self) -> dict[str, Any]:
        """When the prompt really went out and how long its answer took, for the daemon's pacing and deadlines."""
        adapter = self.adapter
        return {"sent_at": getattr(adapter, "sent_at", None), "answer_s": getattr(adapter, "answered_in", None)}

    def renderer_cpu_s(self) -> float | None:
        """CPU seconds the browser's renderers have used: read just before a frozen page is killed."""
        return proctree.renderer_cpu_s(self.chromium.pid)

    async def recycle_quietly(self, page_only: bool = False) -> None:
        """A fresh browser after a crash; after a timeout (a frozen page, a lost request) a fresh page is enough."""
        if self.remote is not None and self.remote.lost:
            await self.begin_reconnect(f"the connection to the remote browser at {self.remote.shown} closed")
            return
        if (self.remote is not None or page_only) and await self.replace_page():
            return
        try:
            await self.recycle_browser()
        except BrowserError as exc:
            if self.remote is not None:
                await self.begin_reconnect(str(exc))
                return
            log.error("cannot restart Chromium: %s", exc)
            raise SystemExit(EXIT_BROWSER) from None

    async def replace_page(self) -> bool:
        """A page that froze or overran: close it (the browser ends its renderer at once) and open another in the
        worker's context, which keeps the account's cookies.  Seconds cheaper than a new Chromium; False when that
        failed and more must go."""
        if self.browser is None:
            return False
        shown = self.remote.shown if self.remote is not None else "the local Chromium"
        async with self.browser_lock:
            await self.save_session(force=True)
            if self.remote is not None:
                await self.remote.close_page(self.page)
            else:
                await close_page(self.browser, self.page, PAGE_CLOSE_S)
            self.page = self.adapter = None
            try:
                timeout = self.config.browser_start_timeout_s
                if self.remote is not None:
                    self.page = await self.remote.new_page(timeout)
                else:
                    self.page = await asyncio.wait_for(self.browser.newPage(), timeout)  # with the default viewport
                await self.session.install_origins(self.page)
            except Exception as exc:  # the context or the connection is broken: the caller starts over
                error = self.remote.endpoint.scrub(str(exc)) if self.remote is not None else str(exc)
                log.warning("could not open a new page on %s: %s", shown, error)
                return False
        log.info("closed the page on %s and opened another", shown)
        return True

    # -- a remote browser that went away ---------------------------------------

    async def attached(self) -> bool:
        """Whether the browser is there to run a task; a remote one found gone starts the reconnecting."""
        if self.remote is None:
            return True
        if self.reconnector is not None and not self.reconnector.done():
            return False
        if self.browser is None or self.remote.lost:
            await self.begin_reconnect(f"the connection to the remote browser at {self.remote.shown} closed")
            return False
        return True

    def detached_reply(self) -> dict[str, Any]:
        assert self.remote is not None
        return {"ok": False, "error": f"the remote browser at {self.remote.shown} is not attached (reconnecting)",
                "kind": DETACHED, "wait_s": None, "blame": WORKER, "finished": time.time()}

    async def begin_reconnect(self, error: str) -> None:
        """Tell the daemon (before any result, so it hands this worker nothing meanwhile), then attach again in the
        background with backoff; the hello that follows puts the worker back to work."""
        if self.reconnector is not None and not self.reconnector.done():
            return
        assert self.remote is not None and self.chan is not None
        log.warning("remote browser: %s; reconnecting", error)
        await self.save_session_quietly()
        await self.remote.detach()
        self.browser = self.page = None
        self.adapter = None
        delay = RECONNECT_FIRST_S
        await self.chan.send({"t": "browser", "state": "reconnecting", "error": error, "attempt": 0, "retry_in_s": delay})
        self.reconnector = asyncio.create_task(self.reconnect(delay))

    async def save_session_quietly(self) -> None:
        if self.remote is not None and not self.remote.lost:
            await self.save_session(force=True)

    async def reconnect(self, delay: float) -> None:
        attempt = 0
        while True:
            await asyncio.sleep(delay)
            attempt += 1
            try:
                async with self.browser_lock:
                    await self.start_browser()  # its hello tells the daemon
                log.info("reattached to the remote browser after %d attempts", attempt)
                return
            except Exception as exc:  # BrowserError, or a connection that broke in the handshake
                assert self.remote is not None
                if not isinstance(exc, BrowserError):
                    exc = BrowserError(f"the remote browser at {self.remote.shown} failed: {self.remote.endpoint.scrub(str(exc))}")
                delay = random.uniform(0.5, 1.0) * min(RECONNECT_CAP_S, RECONNECT_FIRST_S * 2 ** attempt)
                assert self.chan is not None
                await self.chan.send({"t": "browser", "state": "reconnecting", "error": str(exc), "attempt": attempt,
                                      "retry_in_s": round(delay, 1)})

    async def generate(self, msg: dict[str, Any], deadline: float) -> bytes:
        """Open the site if needed and run one prompt, racing the deadline and Chromium's death."""
        adapter = adapter_for(msg["site"], self.adapter, self.config.state_dir / "snapshots" / f"worker-{self.wid}", self.wid)
        adapter.freeze_s = self.config.frozen_page_s
        adapter.sent_at = adapter.answered_in = None  # nothing from an earlier task may be reported for this one
        adapter.account = self.account
        async with self.browser_lock:  # an idle-time browser restart may still be under way
            await self.use_site_browser(adapter)
            if self.page is None:
                if self.remote is not None:
                    raise SiteError(f"the remote browser at {self.remote.shown} is not attached", DETACHED)
                await self.start_browser()
                adapter.opened_url = None
        self.adapter = adapter
        data = await self.guarded(self._generate(msg, deadline), deadline - time.monotonic() + 2, msg["deadline_s"])
        if not is_image(data):
            raise SiteError(f"the site returned {len(data)} bytes that are not an image", "transient")
        return data

    async def _generate(self, msg: dict[str, Any], deadline: float) -> bytes:
        url = msg["url"]
        adapter = self.adapter
        assert adapter is not None
        if adapter.opened_url != url:
            await adapter.open(self.page, url, min(self.config.cdp_timeout_s, max(1.0, deadline - time.monotonic())))
            await self.session.site_opened(self.page)
        return await adapter.generate(self.page, msg["prompt"], deadline, self.config.cdp_timeout_s, msg.get("answer_s"))

    async def use_site_browser(self, adapter: SiteAdapter) -> None:
        """Restart Chromium when the site needs another mode: headed (on DISPLAY, else our own Xvfb) or other arguments.

        Outside the deadline race: guarded() watches the Chromium that runs the task, not one replaced here.
        A remote browser runs as it is: its mode and switches are its owner's.
        """
        if self.remote is not None:
            return
        headless = self.config.headless and adapter.headless_allowed
        args = (*self.config.chromium_args, *adapter.browser_args)
        if not headless:
            try:
                display = self.config.display or await self.display.start()
            except BrowserError as exc:
                raise SiteError(f"site '{adapter.name}' needs a headed browser: {exc}", "permanent") from None
            args = (*args, f"--display={display}")
        if self.page is not None and (headless, args) == (self.chromium.headless, self.chromium.extra_args):
            return
        log.info("starting Chromium %s for site %s", "headless" if headless else f"headed on {args[-1][10:]}", adapter.name)
        await self.stop_browser()
        previous, adapter.opened_url = self.chromium, None
        self.chromium = Chromium(previous.executable, previous.profile, previous.log_path, headless=headless, extra_args=args)
        try:
            await self.start_browser()
        except BrowserError as exc:
            self.chromium = previous
            await self.start_browser()
            raise SiteError(f"cannot start Chromium for site '{adapter.name}': {exc}", "permanent") from None

    async def login(self, msg: dict[str, Any]) -> None:
        """Show this worker's account on the person's display until they close the window, and keep its session.

        The window is a local Chromium on the worker's profile (a remote worker's too: a person must see it), with
        the account's session applied (loginwindow.py); the last reading of its cookies becomes the account's
        session.  The worker's own browser is stopped meanwhile (a profile allows one browser), then started again;
        its hello puts the worker back to work.
        """
        await self.stop_browser()
        args = (*self.config.chromium_args, *msg.get("args", ()), f"--display={msg['display']}")
        sessions.keep_profile_to(self.chromium.profile, self.account)
        chromium = Chromium(self.chromium.executable, self.chromium.profile, self.chromium.log_path,
                            headless=False, extra_args=args)
        cookies, origins = await loginwindow.run_window(msg, chromium, self.session, self.config.browser_start_timeout_s)
        session = None
        if cookies is not None and self.chan is not None:
            session = {"cookies": cookies, "origins": origins}
            await self.chan.send({"t": "session", "account": self.account, "session": session, "source": "login"})
            log.info("login: account %s keeps %d cookies from the window", self.account, len(cookies))
        self.session.pending = session
        try:
            await self.start_browser()
        except BrowserError as exc:
            if self.remote is None:
                raise
            await self.begin_reconnect(str(exc))

    async def guarded(self, work: Any, timeout: float, deadline_s: float) -> bytes:
        """Await `work`, but give up at the deadline or as soon as Chromium dies (a remote browser: its connection closes)."""
        job = asyncio.ensure_future(work)
        death = asyncio.ensure_future(self.chromium.wait_exit() if self.remote is None else self.remote.wait_lost())
        try:
            done, _ = await asyncio.wait({job, death}, timeout=max(0.1, timeout), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in (job, death):
                if not fut.done():
                    fut.cancel()
                    # A cancelled CDP call may still end in an error; it has nobody left to hear it.
                    fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        if job in done:
            return job.result()
        if death in done:
            if self.remote is not None:
                raise SiteError(f"the connection to the remote browser at {self.remote.shown} closed during the task", CRASH)
            raise SiteError(f"Chromium died during the task (exit code {death.result()})", CRASH)
        raise SiteError(f"no image within the task deadline of {deadline_s:.0f} s", TIMEOUT)
