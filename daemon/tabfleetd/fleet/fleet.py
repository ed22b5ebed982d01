"""The fleet: spawns worker processes, reads their messages, restarts the dead.

The process model lives here and only here: one spawn-context Process per
worker (never a fork of the live daemon, which holds LMDB), a Channel to each,
and the Chromium process group each one reports, killed when the worker ends.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import random
import time
from pathlib import Path
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from . import reaper
from . import worker as worker_module
from .browser import kill_group, kill_profile_processes
from .channel import Channel
from ..settings.config import Config
from .memory import GROW, HOLD, SHRINK, Governor, Reading, probe_from_config

log = logging.getLogger(__name__)

STARTING, IDLE, BUSY, BLOCKED, STOPPING, RESTARTING, DEAD, RETIRING, RECONNECTING = (
    "starting", "idle", "busy", "blocked", "stopping", "restarting", "dead", "retiring", "reconnecting")
CONNECTING, CONNECTED = "connecting", "connected"  # a worker's connection to its browser (or RECONNECTING)
RESTART_BACKOFF_CAP_S = 60.0
REAP_EVERY_S = 2.0  # how often the daemon reaps the orphans it adopted (a killed worker's Chromium helpers)
MP = multiprocessing.get_context("spawn")
# What a worker process runs.  Only tests/bench/coordinator_daemon.py puts another here: a benchmark worker that
# answers every task at once, to measure the coordinator alone.  Nothing in tabfleetd ever changes it.
WORKER_MAIN = worker_module.main


@dataclass
class WorkerHandle:
    wid: int
    proc: Any = None
    chan: Channel | None = None
    state: str = STARTING
    pid: int | None = None
    browser: dict[str, Any] | None = None
    task: dict[str, Any] | None = None
    task_started: float | None = None
    tasks_done: int = 0
    failures_in_row: int = 0
    last_error: str | None = None
    restarts: int = 0
    restart_streak: int = 0  # restarts since the worker last finished a task; sets the backoff
    restart_at: float | None = None  # wall-clock time of the next start while RESTARTING
    blocked_reason: str | None = None
    retire: bool = False  # leave the fleet once the current task ends (the fleet shrank)
    rotations: int = 0  # browser restarts after rotate_after_tasks tasks
    last_dispatch: float = 0.0  # monotonic time this worker was last handed a task: idle workers take turns
    deliberate: bool = False  # we are ending it on purpose (a restart asked for): its task's attempt is refunded
    last_heartbeat: float = field(default_factory=time.monotonic)
    rss_mb: float = 0.0
    profile_mb: float | None = None  # its local browser profile's size (None: not measured yet, or a remote browser)
    account_name: str = ""  # from its [[workers]] entry; default worker-N
    browser_kind: str = "local"
    endpoint: str | None = None  # a remote browser's scheme://host:port, never more
    connection: str = CONNECTING
    reconnects: int = 0  # times it attached its browser again after losing it
    browser_error: str | None = None  # why the browser is not attached, while reconnecting (secrets already scrubbed)
    reconnect_at: float | None = None  # wall-clock time of the next attempt while reconnecting
    last_error_at: float | None = None  # wall-clock time of last_error, so status shows its age

    def __setattr__(self, name: str, value: Any) -> None:
        # Every place that records an error stamps its time too, without each of them having to remember to.
        if name == "last_error" and value is not None:
            object.__setattr__(self, "last_error_at", time.time())
        object.__setattr__(self, name, value)

    @property
    def account(self) -> str:
        """The account this worker signs in with."""
        return self.account_name or f"worker-{self.wid}"

    def health(self) -> str:
        if self.state == BLOCKED:
            return f"blocked: {self.blocked_reason}"
        if self.state == RESTARTING and self.restart_at is not None:
            return f"restarting in {max(0.0, self.restart_at - time.time()):.0f} s"
        if self.state == RECONNECTING:
            left = "" if self.reconnect_at is None else f"; next try in {max(0.0, self.reconnect_at - time.time()):.0f} s"
            return f"reconnecting to {self.endpoint}: {self.browser_error or 'connection closed'}{left}"
        silent = time.monotonic() - self.last_heartbeat
        if self.state in (IDLE, BUSY) and silent > 5:
            return f"silent for {silent:.0f} s"
        return "ok" if self.state in (IDLE, BUSY) else self.state

    def view(self) -> dict[str, Any]:
        return {"id": self.wid, "pid": self.pid, "state": self.state, "health": self.health(),
                "tasks_done": self.tasks_done,
                "current_task": None if self.task is None else f"{self.task['job']}/{self.task['index']}",
                "current_prompt": None if self.task is None else self.task["prompt"],
                "rss_mb": self.rss_mb, "profile_mb": self.profile_mb, "last_error": self.last_error, "last_error_at": self.last_error_at,
                "restarts": self.restarts,
                "failures_in_row": self.failures_in_row, "restart_at": self.restart_at, "rotations": self.rotations,
                "browser": {"kind": self.browser_kind, "endpoint": self.endpoint, "connection": self.connection,
                            "reconnects": self.reconnects, "error": self.browser_error}}


MessageHook = Callable[[WorkerHandle, dict[str, Any]], Awaitable[None]]
ExitHook = Callable[[WorkerHandle], Awaitable[None]]


class Fleet:
    def __init__(self, config: Config, chromium: str, on_message: MessageHook, on_exit: ExitHook) -> None:
        self.config = config
        self.chromium = chromium
        self.on_message = on_message
        self.on_exit = on_exit
        self.workers: dict[int, WorkerHandle] = {}
        self.stopping = False
        self._readers: set[asyncio.Task[None]] = set()
        self.desired = config.workers
        self.cap: int | None = None  # set by the memory governor while memory is short
        self.hold = False  # memory is high: no worker starts, no task starts
        self.probe = probe_from_config(config.memory_probe)
        self.governor = Governor(config.memory_high, config.memory_critical, config.memory_low)
        self.memory: Reading | None = None
        self.on_capacity: Callable[[], None] = lambda: None
        # A remote browser lost ("lost") or attached again ("back"): the daemon makes an event of it.
        self.on_browser_change: Callable[[WorkerHandle, str], None] = lambda handle, change: None
        self._sizer: asyncio.Task[None] | None = None
        self._resize_again = False
        self._governor: asyncio.Task[None] | None = None
        self._reader_of: dict[asyncio.Task[None], WorkerHandle] = {}
        self.rng = random.Random()
        self._watchdog: asyncio.Task[None] | None = None
        self._reaper: asyncio.Task[None] | None = None

    @property
    def target(self) -> int:
        """How many workers should run: the size asked for, less what the memory governor took away."""
        return self.desired if self.cap is None else min(self.desired, self.cap)

    async def start(self, count: int) -> None:
        self.desired = count
        # Before the first worker: what a killed worker's Chromium leaves is adopted here (and reaped), not by PID 1.
        # Only a timer, no SIGCHLD handler: the daemon's own children (workers) are multiprocessing's to wait for.
        reaper.become_subreaper()
        self._reaper = asyncio.create_task(reaper.reap_forever(REAP_EVERY_S, on_sigchld=False))
        self._watchdog = asyncio.create_task(self.watch())
        self._governor = asyncio.create_task(self.govern())
        self.resize()

    def resize(self, count: int | None = None) -> None:
        """Start missing workers (staggered) and retire those over the target."""
        if count is not None:
            self.desired = count
        if self._sizer is None or self._sizer.done():
            self._sizer = asyncio.create_task(self._resize())
        else:
            self._resize_again = True

    async def _resize(self) -> None:
        while True:
            self._resize_again = False
            live = sorted(h.wid for h in self.workers.values() if not h.retire)
            for wid in live[self.target:]:
                self.retire(self.workers[wid])
            first = True
            for wid in range(1, self.target + 1):
                if self.stopping or self.hold:
                    break
                if wid in self.workers:
                    continue
                if not first and self.config.stagger_s:
                    await asyncio.sleep(self.config.stagger_s)  # one browser start at a time eases the CPU and the site
                if self.stopping or self.hold or wid > self.target or wid in self.workers:
                    continue
                spec = self.config.worker_spec(wid)
                await self.spawn(WorkerHandle(wid, account_name=spec.account_of(wid), browser_kind=spec.browser,
                                              endpoint=spec.remote.shown if spec.remote else None))
                first = False
            if not self._resize_again:
                return

    def retire(self, handle: WorkerHandle) -> None:
        """Take a worker out of the fleet: at once when idle, after its task when busy."""
        handle.retire = True
        if handle.state != BUSY:
            handle.state = RETIRING
            self.kill(handle)

    async def spawn(self, handle: WorkerHandle) -> None:
        parent, child = MP.Pipe(duplex=True)
        proc = MP.Process(target=WORKER_MAIN, args=(handle.wid, child, self.config, self.chromium),
                          name=f"tabfleet-worker-{handle.wid}", daemon=False)
        proc.start()
        child.close()
        handle.proc, handle.pid, handle.state = proc, proc.pid, STARTING
        handle.task = handle.browser = handle.restart_at = handle.blocked_reason = None
        handle.failures_in_row = 0
        handle.deliberate = False
        handle.connection, handle.reconnect_at = CONNECTING, None
        handle.last_heartbeat = time.monotonic()
        handle.chan = await Channel.open(parent)
        self.workers[handle.wid] = handle
        reader = asyncio.create_task(self._read(handle))
        self._readers.add(reader)
        self._reader_of[reader] = handle
        reader.add_done_callback(self._forget_reader)
        log.info("worker %d started (pid %d)", handle.wid, proc.pid)

    def _forget_reader(self, reader: asyncio.Task[None]) -> None:
        self._readers.discard(reader)
        self._reader_of.pop(reader, None)

    def idle(self) -> list[WorkerHandle]:
        return [h for h in self.workers.values() if h.state == IDLE and not h.retire]

    async def _read(self, handle: WorkerHandle) -> None:
        assert handle.chan is not None
        try:
            while True:
                msg = await handle.chan.recv()
                handle.last_heartbeat = time.monotonic()
                kind = msg.get("t")
                if kind == "hb":
                    handle.rss_mb = float(msg.get("rss_mb") or 0.0)
                    profile_mb = msg.get("profile_mb")
                    handle.profile_mb = None if profile_mb is None else float(profile_mb)
                    continue
                if kind == "hello":
                    handle.browser = msg.get("browser")
                    handle.rotations = int(msg.get("rotations") or 0)
                    back = handle.connection == RECONNECTING
                    if back:
                        handle.reconnects += 1
                        log.info("worker %d: attached to %s again", handle.wid, handle.endpoint)
                    handle.connection, handle.browser_error, handle.reconnect_at = CONNECTED, None, None
                    if back:
                        self.on_browser_change(handle, "back")
                    if handle.state in (STARTING, BUSY, RECONNECTING) and handle.task is None:
                        handle.state = IDLE
                elif kind == "browser" and msg.get("state") == RECONNECTING:
                    self.reconnecting(handle, msg)
                elif kind == "fatal":
                    handle.last_error = str(msg.get("error"))
                    log.error("worker %d cannot run: %s", handle.wid, handle.last_error)
                await self.on_message(handle, msg)
        except EOFError:
            pass
        except Exception:
            log.exception("worker %d sent a message we could not handle", handle.wid)
            self.kill(handle)
        await self._reap(handle)

    async def _reap(self, handle: WorkerHandle) -> None:
        proc = handle.proc
        await asyncio.get_running_loop().run_in_executor(None, proc.join, 10)
        if proc.is_alive():
            proc.kill()
            await asyncio.get_running_loop().run_in_executor(None, proc.join, 5)
        if handle.browser and handle.browser.get("pgid"):
            # The worker may have died by SIGKILL without ending its Chromium.
            kill_group(int(handle.browser["pgid"]))
            await asyncio.get_running_loop().run_in_executor(None, kill_profile_processes, Path(handle.browser["profile"]))
        if handle.chan:
            handle.chan.close()
        log.info("worker %d exited (%r)", handle.wid, proc.exitcode)
        handle.state = DEAD
        await self.on_exit(handle)
        handle.task = handle.browser = None
        if handle.retire or handle.wid > self.target:
            self.workers.pop(handle.wid, None)
            log.info("worker %d left the fleet (target %d)", handle.wid, self.target)
            return
        if not self.stopping:
            delay = self.restart_delay(handle)
            handle.restarts += 1
            handle.restart_streak += 1
            handle.state, handle.restart_at = RESTARTING, time.time() + delay
            log.info("worker %d starts again in %.1f s", handle.wid, delay)
            await asyncio.sleep(delay)
            while self.hold and not self.stopping:
                await asyncio.sleep(1.0)
            if not self.stopping and handle.wid <= self.target and not handle.retire:
                await self.spawn(handle)
            elif not self.stopping:
                self.workers.pop(handle.wid, None)

    def reconnecting(self, handle: WorkerHandle, msg: dict[str, Any]) -> None:
        """The worker lost its remote browser: it takes no task until its next hello (a task in flight ends first)."""
        lost = handle.connection != RECONNECTING
        if lost:
            log.warning("worker %d lost its browser at %s: %s", handle.wid, handle.endpoint, msg.get("error"))
        handle.connection = RECONNECTING
        handle.browser_error = str(msg.get("error") or "")[:300] or None
        if lost:
            self.on_browser_change(handle, "lost")
        handle.reconnect_at = time.time() + float(msg.get("retry_in_s") or 0)
        if handle.state in (IDLE, STARTING):
            handle.state = RECONNECTING

    def task_ended(self, handle: WorkerHandle) -> None:
        """A busy worker's task is over: it is idle again, or reconnecting if its browser went meanwhile."""
        if handle.state == BUSY:
            handle.state = RECONNECTING if handle.connection == RECONNECTING else IDLE

    def restart_delay(self, handle: WorkerHandle) -> float:
        """1 s growing to 60 s while a worker keeps dying without finishing a task, with jitter."""
        ceiling = min(RESTART_BACKOFF_CAP_S, self.config.restart_delay_s * 2 ** handle.restart_streak)
        return self.rng.uniform(ceiling / 2, ceiling)

    def block(self, handle: WorkerHandle, reason: str | None) -> None:
        """Take a worker out of service (e.g. its account is logged out) until it is restarted."""
        handle.state, handle.blocked_reason = BLOCKED, reason
        log.warning("worker %d takes no more tasks: %s", handle.wid, reason)

    def block_account(self, account: str, reason: str | None) -> list[WorkerHandle]:
        """Every idle worker of a signed-out account stops too (its other workers share the session); those blocked."""
        blocked = [h for h in self.workers.values() if h.account == account and h.state in (IDLE, RECONNECTING)]
        for handle in blocked:
            self.block(handle, reason)
        return blocked

    def unblock_account(self, account: str) -> list[WorkerHandle]:
        """The account has a new session: its blocked workers take tasks again."""
        freed = [h for h in self.workers.values() if h.account == account and h.state == BLOCKED]
        for handle in freed:
            handle.state = RECONNECTING if handle.connection == RECONNECTING else IDLE
            handle.blocked_reason = None
            log.info("worker %d takes tasks again: account %s has a new session", handle.wid, account)
        if freed:
            self.on_capacity()
        return freed

    def of_account(self, account: str) -> list[WorkerHandle]:
        return sorted((h for h in self.workers.values() if h.account == account and h.state not in (DEAD, RESTARTING)),
                      key=lambda h: h.wid)

    def restart(self, handle: WorkerHandle, reason: str) -> None:
        """Kill a worker and its Chromium; the reader notices and starts it again.

        It leaves the idle list at once, so no task is handed to it in the moment before its
        process is gone, and a task it was running goes back without costing an attempt.
        """
        handle.last_error = reason
        handle.deliberate = True
        if handle.state in (IDLE, BUSY, BLOCKED, STARTING, RECONNECTING):
            handle.state = STOPPING
        self.kill(handle)

    def kill(self, handle: WorkerHandle) -> None:
        if handle.proc is not None and handle.proc.is_alive():
            handle.proc.kill()
        if handle.browser and handle.browser.get("pgid"):  # a remote browser is not ours to kill
            kill_group(int(handle.browser["pgid"]))

    async def watch(self) -> None:
        """Kill workers whose heartbeats stopped or whose task overran its deadline."""
        while not self.stopping:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for handle in list(self.workers.values()):
                if handle.state == DEAD:
                    continue
                silent = now - handle.last_heartbeat
                limit = self.config.heartbeat_timeout_s + (self.config.browser_start_timeout_s if handle.state == STARTING else 0)
                overran = handle.task_started is not None and handle.state == BUSY and \
                    now - handle.task_started > self.config.task_deadline_s + self.config.cdp_timeout_s + 10
                if silent > limit or overran:
                    why = f"no heartbeat for {silent:.0f} s" if silent > limit else "task overran its deadline"
                    log.warning("worker %d: %s; killing it", handle.wid, why)
                    handle.last_error = why
                    self.kill(handle)

    async def govern(self) -> None:
        """Read memory use and size the fleet with hysteresis (see memory.py)."""
        while not self.stopping:
            try:
                self.memory = self.probe.read()
                self.apply(self.governor.decide(self.memory))
            except Exception:
                log.exception("memory governor failed; trying again")
            await asyncio.sleep(self.config.memory_check_s)

    def apply(self, decision: str) -> None:
        was_held = self.hold
        if decision == SHRINK:
            self.hold = True
            live = [h for h in self.workers.values() if not h.retire and h.state != DEAD]
            if len(live) > 1 and not any(h.state == RETIRING for h in self.workers.values()):
                largest = max(live, key=lambda h: h.rss_mb)
                self.cap = len(live) - 1
                log.warning("memory at %.0f %% of the limit: recycling worker %d (%.0f MB); fleet target %d",
                            100 * self.memory.fraction if self.memory else 0, largest.wid, largest.rss_mb, self.target)
                largest.retire = True
                largest.state = RETIRING
                self.kill(largest)  # its task goes back to pending
        elif decision == HOLD:
            self.hold = True
        else:
            self.hold = False
            if decision == GROW and self.cap is not None:
                self.cap += 1
                if self.cap >= self.desired:
                    self.cap = None
                log.info("memory back under the low mark: fleet target %d", self.target)
                self.resize()
            elif decision == GROW and len([h for h in self.workers.values() if not h.retire]) < self.target:
                self.resize()
        if was_held != self.hold:
            log.info("memory governor: %s", "holding new work" if self.hold else "new work may start")
            self.on_capacity()

    def memory_view(self) -> dict[str, Any]:
        reading = self.memory
        return {"used_mb": round(reading.used / 2**20) if reading else None,
                "limit_mb": round(reading.limit / 2**20) if reading else None,
                "percent": round(100 * reading.fraction, 1) if reading else None,
                "source": reading.source if reading else None,
                "target_workers": self.target, "desired_workers": self.desired, "holding": self.hold}

    async def send(self, handle: WorkerHandle, msg: dict[str, Any]) -> None:
        assert handle.chan is not None
        await handle.chan.send(msg)

    async def stop(self, grace: float) -> None:
        """Let busy workers finish for up to `grace` seconds, then end every worker and its Chromium."""
        self.stopping = True
        for task in (self._watchdog, self._governor, self._sizer):
            if task is not None:
                task.cancel()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(h.state == BUSY for h in self.workers.values()):
            await asyncio.sleep(0.1)
        for handle in self.workers.values():
            if handle.state in (IDLE, STARTING, BLOCKED, RECONNECTING) and handle.chan is not None:
                try:
                    await asyncio.wait_for(handle.chan.send({"t": "stop"}), 1)
                except (ConnectionError, asyncio.TimeoutError):
                    pass
            elif handle.state == BUSY and handle.proc is not None and handle.proc.is_alive():
                handle.proc.terminate()
        for reader, handle in list(self._reader_of.items()):
            if handle.state in (RESTARTING, DEAD):
                reader.cancel()  # it is only waiting out a restart delay
        if self._readers:
            await asyncio.wait(set(self._readers), timeout=15)
        for handle in self.workers.values():
            self.kill(handle)
        if self._reaper is not None:
            self._reaper.cancel()
        reaper.reap_orphans()
