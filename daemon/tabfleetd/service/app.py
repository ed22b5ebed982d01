"""The daemon: wires store, scheduler, fleet, control server and demo site, and runs them."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import psutil

from .. import malloctune
from . import memtrace, reload
from ..files import outputs, statedir
from ..sites import profiles
from ..fleet.browser import kill_group, kill_profile_processes, names_path
from ..store.bulk import Bulk
from ..control import accountops  # noqa: F401 - registers the account ops with commands.OPS
from ..control.commands import Commands
from ..settings.config import Config
from ..errors import AlreadyRunning, ConfigError
from ..store.eventkeeper import EventKeeper
from ..store.events import EventLog
from ..fleet.fleet import Fleet
from ..schedule.limits import Limits
from .notify import ServiceLink, status_line
from ..store.retention import Housekeeper
from ..schedule.retries import RetryPolicy
from ..fleet.roster import Roster
from ..schedule.manifest import reconcile_manifest
from ..schedule.scheduler import Scheduler
from ..control.server import ControlServer
from ..sites.sitepolicy import SitePolicy
from ..store.store import AsyncStore, Store
from ..web.webserver import WebServer, start_web

log = logging.getLogger(__name__)

STOP_MARGIN_S = 30.0  # beyond grace_s: workers get 15 s to exit, then they and their browsers are killed


class StateLock:
    """An flock on the state dir, so two daemons never share one store; taking it first makes the state dir private."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "tabfleetd.lock"
        self.file: TextIO | None = None

    def acquire(self) -> None:
        if self.file is not None:
            # --detach takes the lock before it forks; keep it and record the daemon's own pid.
            self.file.seek(0)
            self.file.truncate()
            self.file.write(f"{os.getpid()}\n")
            self.file.flush()
            return
        statedir.prepare(self.path.parent)
        f = open(self.path, "a+", opener=statedir.private_opener)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            raise AlreadyRunning(f"another tabfleetd (pid {holder}) is already running on the state dir "
                                 f"{self.path.parent}; stop it first or use another --state-dir") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self.file = f
        statedir.tighten(self.path.parent)  # what an older version or another umask left readable

    def release(self) -> None:
        if self.file:
            self.file.close()
            self.file = None


class Daemon:
    def __init__(self, config: Config, chromium: str, service: ServiceLink | None = None,
                 lock: StateLock | None = None, read_config: Callable[[], Config] | None = None) -> None:
        self.config = config
        self.read_config = read_config  # reads the config again (cli.py), for SIGHUP
        self.chromium = chromium
        self.started = time.monotonic()
        self.lock = lock or StateLock(config.state_dir)
        self.service = service or ServiceLink()  # sd_notify (systemd, or the --detach parent)
        self.background: list[asyncio.Task[None]] = []  # service link and housekeeping
        self.stop_event = asyncio.Event()
        self.submit_lock = asyncio.Lock()
        self.events = EventLog()
        self.site_policy = SitePolicy.configured(config.site_hosts, config.site_networks)
        self.demo: Any = None
        self.web: WebServer | None = None  # dashboard and metrics, when configured
        self.roster = Roster(config.state_dir / "accounts")
        self.memory_growth = memtrace.GrowthTracker()
        self.store: AsyncStore
        self.keeper: EventKeeper
        self.fleet: Fleet
        self.scheduler: Scheduler
        self.bulk: Bulk
        self.server: ControlServer

    def request_stop(self) -> None:
        self.stop_event.set()

    def request_reload(self) -> None:
        if self.read_config is None or not hasattr(self, "scheduler"):
            log.warning("SIGHUP: nothing to reload yet")
            return
        self.background.append(asyncio.create_task(self.reload_config()))

    async def reload_config(self) -> None:
        """Read the config again and apply what can change live; a bad file changes nothing and says why."""
        assert self.read_config is not None
        self.service.reloading(time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
        try:
            new = await asyncio.get_running_loop().run_in_executor(None, self.read_config)
        except ConfigError as exc:
            log.error("config not reloaded, the running one stays: %s", exc)
        else:
            reload.apply(self, new)
        finally:
            self.service.ready(self.status_line())

    async def run(self) -> int:
        self.lock.acquire()
        try:
            await self._run()
        finally:
            self.lock.release()
        return 0

    async def _run(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        if not malloctune.limit_arenas():
            log.debug("malloc arenas not limited (not glibc)")
        if memtrace.start(cfg.trace_memory_frames):
            log.info("tracing allocations with tracemalloc (%d frames each)", cfg.trace_memory_frames)
        self.store = AsyncStore(Store(cfg.state_dir / "store", cfg.map_size_mb << 20))
        statedir.tighten(cfg.state_dir / "store", depth=1)  # LMDB makes its files by the umask
        self.keeper = EventKeeper(self.events, self.store, cfg)
        await self.keeper.open()  # before anything emits: seqs carry on from the stored events
        self.background.append(asyncio.create_task(self.keeper.run()))
        moved = await self.store("requeue_running")
        if moved:
            log.info("%d tasks left running by the last daemon are pending again", moved)
        await self.end_leftover_browsers()
        await loop.run_in_executor(None, self.reconcile_manifests_sync)
        await self.roster.load()
        self.fleet = Fleet(cfg, self.chromium, self.on_worker_message, self.on_worker_exit)
        self.limits = Limits(cfg.site_rate_per_min, cfg.account_rate_per_min)
        self.scheduler = Scheduler(self.store, self.fleet, RetryPolicy(cfg.retry_base_s, cfg.retry_cap_s),
                                   self.site_url, cfg.task_deadline_s, self.events, self.limits,
                                   min_free_mb=cfg.min_free_mb, held_mb=cfg.held_images_mb,
                                   site_problems=self.site_problems)
        self.fleet.on_capacity = self.scheduler.kick
        self.fleet.on_browser_change = self.browser_changed
        self.bulk = Bulk(self.store, self.scheduler.job_changed, self.forget_jobs)
        self.server = ControlServer(cfg.socket, cfg, Commands(self))
        await self.server.start()
        # READY=1 only now: a client started after it (systemctl start returns) finds the socket answering.
        self.service.ready(self.status_line())
        self.background.append(asyncio.create_task(self.service.run(self.status_line, self.health_probe)))
        try:
            self.web = await start_web(self)
            await self.scheduler.start()
            await self.fleet.start(cfg.workers)
            self.background.append(asyncio.create_task(self.bulk.resume_interrupted()))
            self.background.append(asyncio.create_task(Housekeeper(self.store, cfg, self.forget_jobs).run()))
            log.info("tabfleetd ready: %d workers, state in %s", cfg.workers, cfg.state_dir)
            await self.stop_event.wait()
            log.info("stopping")
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        # Ask for the grace period plus time to end workers and browsers, whatever TimeoutStopSec says.
        self.service.stopping(self.config.grace_s + STOP_MARGIN_S)
        for task in self.background:
            task.cancel()
        await self.scheduler.stop_dispatching()
        await self.fleet.stop(self.config.grace_s)
        try:
            await self.scheduler.save_pacing(force=True)
        except Exception:  # what pacing learned is a help, not a must; the store may be the problem
            log.exception("could not save what pacing learned")
        await self.roster.flush()
        if self.web is not None:
            await self.web.stop()
        await self.server.close()
        if self.demo is not None:
            await self.demo.stop()
        await self.store("record_browser_clear")
        try:
            await self.keeper.close()
        except Exception:  # the next start then says this run did not end cleanly, which is true enough
            log.exception("could not record the clean stop in the store")
        self.store.close()
        log.info("stopped")

    # -- service manager and housekeeping --------------------------------------

    def status_line(self) -> str:
        return status_line(self.scheduler.jobs.values(), [h.state for h in self.fleet.workers.values()])

    async def health_probe(self) -> None:
        """A store read: the watchdog is fed only while the store thread answers, not just the loop."""
        await self.store("has_queued")

    def forget_jobs(self, job_ids: list[str]) -> None:
        """Drop pruned jobs from the scheduler's in-memory maps, so they do not grow over days."""
        self.scheduler.forget(job_ids)

    # -- workers -------------------------------------------------------------

    def worker_views(self) -> list[dict[str, Any]]:
        """Each worker's view with its account's pacing state."""
        now = time.time()
        return [h.view() | {"account": self.limits.account_view(h.account, now)
                            | {"sign_in": self.roster.state(h.account), "sign_in_reason": self.roster.get(h.account).reason}}
                for h in sorted(self.fleet.workers.values(), key=lambda h: h.wid)]

    async def on_worker_message(self, handle: Any, msg: dict[str, Any]) -> None:
        kind = msg.get("t")
        if kind == "hello" and (msg.get("browser") or {}).get("pid"):
            await self.store("record_browser", handle.wid, msg["browser"])  # a local Chromium, to end after a crash
        elif kind == "session":
            await self.on_session(handle, msg)
            return
        await self.scheduler.on_message(handle, msg)
        if kind == "result":
            await self.roster.outcome(handle.account, msg)

    def browser_changed(self, handle: Any, change: str) -> None:
        """A worker lost its remote browser, or attached it again: an event (the endpoint's host only)."""
        if change == "lost":
            self.events.emit("browser_lost", worker=handle.wid, endpoint=handle.endpoint, reason=handle.browser_error)
        else:
            self.events.emit("browser_back", worker=handle.wid, endpoint=handle.endpoint, reconnects=handle.reconnects)

    async def on_session(self, handle: Any, msg: dict[str, Any]) -> None:
        """A worker read its account's session from its browser: the account keeps it."""
        session = msg.get("session")
        if msg.get("account") != handle.account or not isinstance(session, dict):
            log.warning("worker %d sent a session that is not its account's; ignored", handle.wid)
            return
        await self.roster.save_session(handle.account, session, str(msg.get("source") or f"worker {handle.wid}"))
        if msg.get("source") == "login":
            await self.session_changed(handle.account, but=handle)

    async def session_changed(self, account: str, but: Any = None, unblock: bool = True) -> list[int]:
        """The account's stored session was replaced or removed: its workers take it, and (unblock) blocked ones work again."""
        told = []
        for handle in self.fleet.of_account(account):
            if handle is but or handle.chan is None:
                continue
            try:
                await self.fleet.send(handle, {"t": "session"})
                told.append(handle.wid)
            except (ConnectionError, OSError):
                pass  # it is going away; a new one reads the file when it attaches
        if unblock:
            self.fleet.unblock_account(account)
        return told

    async def on_worker_exit(self, handle: Any) -> None:
        await self.scheduler.on_exit(handle)
        await self.store("record_browser", handle.wid, None)

    async def end_leftover_browsers(self) -> None:
        """End Chromium processes that a previous daemon started and did not end."""
        for wid, info in (await self.store("recorded_browsers")).items():
            if not info.get("pid"):
                continue  # a remote browser: not ours to end
            if self._is_our_chromium(int(info["pid"])) and kill_group(int(info["pgid"])):
                log.warning("ended leftover Chromium of worker %s (pgid %s)", wid, info["pgid"])
        killed = await asyncio.get_running_loop().run_in_executor(
            None, kill_profile_processes, self.config.state_dir / "profiles")
        if killed:
            log.warning("ended %d leftover Chromium processes", killed)
        await self.store("record_browser_clear")

    def _is_our_chromium(self, pid: int) -> bool:
        try:
            cmd = psutil.Process(pid).cmdline()
        except psutil.Error:
            return False
        profiles = os.path.normpath(self.config.state_dir / "profiles")
        return any(a.startswith("--user-data-dir=") and names_path(a, profiles) for a in cmd)

    # -- sites and outputs ---------------------------------------------------

    async def site_url(self, job: dict[str, Any]) -> str:
        """The start URL of the job's site profile; the demo site starts on first use."""
        profile = job.get("profile") or profiles.builtin(job["site"])  # jobs queued before profiles name a built-in
        if profiles.needs_demo(profile) and self.demo is None:
            from ..demo.demosite import DemoSite

            demo = DemoSite()
            await demo.start(self.config.demo_host, self.config.demo_port)
            self.demo = demo
            log.info("demo site at %s", demo.base_url)
        return profiles.start_url(profile, job["id"], job["knobs"], self.demo.base_url if self.demo else None)

    async def site_problems(self, job: dict[str, Any]) -> list[str]:
        """What the site policy refuses in the job's stored profile (it was checked at submit, maybe under another)."""
        try:
            return await self.site_policy.problems(job.get("profile") or profiles.builtin(job["site"]))
        except Exception as exc:  # a profile stored by an older tabfleet, say: its worker will say what is wrong
            log.warning("job %s: its site profile could not be checked against the site policy: %r", job["id"], exc)
            return []

    def reconcile_manifests_sync(self) -> None:
        """Make each job's manifest match the store after a crash between the two writes, and delete stray temp files."""
        store = self.store.store
        for job in store.list_jobs():
            try:
                outputs.remove_leftover_temps(Path(job["out"]))
                reconcile_manifest(store, job)
            except Exception as exc:  # one client's odd directory must not stop the daemon from starting
                log.warning("could not reconcile the output directory of job %s: %s", job["id"], exc)
