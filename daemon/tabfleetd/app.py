"""The daemon: wires store, scheduler, fleet, control server and demo site, and runs them."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlencode

import psutil

from . import outputs
from .browser import kill_group, kill_profile_processes
from .commands import Commands
from .config import Config
from .errors import AlreadyRunning
from .events import EventLog
from .fleet import Fleet
from .retries import RetryPolicy
from .scheduler import Scheduler, manifest_record
from .server import ControlServer
from .states import TaskState
from .store import AsyncStore, Store

log = logging.getLogger(__name__)


class StateLock:
    """An flock on the state dir, so two daemons never share one store."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "tabfleetd.lock"
        self.file: TextIO | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
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

    def release(self) -> None:
        if self.file:
            self.file.close()
            self.file = None


class Daemon:
    def __init__(self, config: Config, chromium: str) -> None:
        self.config = config
        self.chromium = chromium
        self.started = time.monotonic()
        self.lock = StateLock(config.state_dir)
        self.stop_event = asyncio.Event()
        self.submit_lock = asyncio.Lock()
        self.events = EventLog()
        self.demo: Any = None
        self.store: AsyncStore
        self.fleet: Fleet
        self.scheduler: Scheduler
        self.server: ControlServer

    def request_stop(self) -> None:
        self.stop_event.set()

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
        self.store = AsyncStore(Store(cfg.state_dir / "store", cfg.map_size_mb << 20))
        moved = await self.store("requeue_running")
        if moved:
            log.info("%d tasks left running by the last daemon are pending again", moved)
        await self.end_leftover_browsers()
        await loop.run_in_executor(None, self.reconcile_manifests_sync)
        self.fleet = Fleet(cfg, self.chromium, self.on_worker_message, self.on_worker_exit)
        self.scheduler = Scheduler(self.store, self.fleet, RetryPolicy(cfg.retry_base_s, cfg.retry_cap_s),
                                   self.site_url, cfg.task_deadline_s, self.events)
        self.server = ControlServer(cfg.socket, cfg, Commands(self))
        await self.server.start()
        try:
            await self.scheduler.start()
            await self.fleet.start(cfg.workers)
            log.info("tabfleetd ready: %d workers, state in %s", cfg.workers, cfg.state_dir)
            await self.stop_event.wait()
            log.info("stopping")
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        self.scheduler.stop_dispatching()
        await self.fleet.stop(self.config.grace_s)
        await self.server.close()
        if self.demo is not None:
            await self.demo.stop()
        await self.store("record_browser_clear")
        self.store.close()
        log.info("stopped")

    # -- workers -------------------------------------------------------------

    async def on_worker_message(self, handle: Any, msg: dict[str, Any]) -> None:
        if msg.get("t") == "hello" and msg.get("browser"):
            await self.store("record_browser", handle.wid, msg["browser"])
        await self.scheduler.on_message(handle, msg)

    async def on_worker_exit(self, handle: Any) -> None:
        await self.scheduler.on_exit(handle)
        await self.store("record_browser", handle.wid, None)

    async def end_leftover_browsers(self) -> None:
        """End Chromium processes that a previous daemon started and did not end."""
        for wid, info in (await self.store("recorded_browsers")).items():
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
        profiles = str(self.config.state_dir / "profiles")
        return any(a.startswith("--user-data-dir=" + profiles) for a in cmd)

    # -- sites and outputs ---------------------------------------------------

    async def site_url(self, job: dict[str, Any]) -> str:
        if self.demo is None:
            from .demosite import DemoSite

            demo = DemoSite()
            await demo.start(self.config.demo_host, self.config.demo_port)
            self.demo = demo
            log.info("demo site at %s", demo.base_url)
        query = dict(job["knobs"]) | {"scope": job["id"]}
        return f"{self.demo.base_url}/?{urlencode(query)}"

    def reconcile_manifests_sync(self) -> None:
        """Make each job's manifest match the store after a crash between the two writes."""
        store = self.store.store
        for job in store.list_jobs():
            out = Path(job["out"])
            if not out.is_dir():
                continue
            for temp in outputs.find_leftover_temps(out):
                temp.unlink(missing_ok=True)
            try:
                listed = {r.get("file") for r in outputs.read_manifest(out)}
            except Exception as exc:
                log.warning("manifest of job %s unreadable (%s); rewriting it", job["id"], exc)
                listed = set()
            done = [t for t in store.tasks_of(job["id"]) if t["state"] == TaskState.DONE.value]
            if listed != {t["file"] for t in done}:
                done.sort(key=lambda t: (t["finished"] or 0, t["index"]))
                outputs.rewrite_manifest(out, [manifest_record(t) for t in done])
                log.info("manifest of job %s rewritten from the store (%d lines)", job["id"], len(done))
