"""The fleet: spawns worker processes, reads their messages, restarts the dead.

The process model lives here and only here: one spawn-context Process per
worker (never a fork of the live daemon, which holds LMDB), a Channel to each,
and the Chromium process group each one reports, killed when the worker ends.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from pathlib import Path
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from . import worker as worker_module
from .browser import kill_group, kill_profile_processes
from .channel import Channel
from .config import Config

log = logging.getLogger(__name__)

STARTING, IDLE, BUSY, STOPPING, DEAD = "starting", "idle", "busy", "stopping", "dead"
MP = multiprocessing.get_context("spawn")


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
    last_heartbeat: float = field(default_factory=time.monotonic)
    rss_mb: float = 0.0

    def view(self) -> dict[str, Any]:
        return {"id": self.wid, "pid": self.pid, "state": self.state, "tasks_done": self.tasks_done,
                "current_task": None if self.task is None else f"{self.task['job']}/{self.task['index']}",
                "current_prompt": None if self.task is None else self.task["prompt"],
                "rss_mb": self.rss_mb, "last_error": self.last_error, "restarts": self.restarts,
                "failures_in_row": self.failures_in_row}


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
        self._watchdog: asyncio.Task[None] | None = None

    async def start(self, count: int) -> None:
        for wid in range(1, count + 1):
            await self.spawn(WorkerHandle(wid))
        self._watchdog = asyncio.create_task(self.watch())

    async def spawn(self, handle: WorkerHandle) -> None:
        parent, child = MP.Pipe(duplex=True)
        proc = MP.Process(target=worker_module.main, args=(handle.wid, child, self.config, self.chromium),
                          name=f"tabfleet-worker-{handle.wid}", daemon=False)
        proc.start()
        child.close()
        handle.proc, handle.pid, handle.state = proc, proc.pid, STARTING
        handle.task = handle.browser = None
        handle.last_heartbeat = time.monotonic()
        handle.chan = await Channel.open(parent)
        self.workers[handle.wid] = handle
        reader = asyncio.create_task(self._read(handle))
        self._readers.add(reader)
        reader.add_done_callback(self._readers.discard)
        log.info("worker %d started (pid %d)", handle.wid, proc.pid)

    def idle(self) -> list[WorkerHandle]:
        return [h for h in self.workers.values() if h.state == IDLE]

    async def _read(self, handle: WorkerHandle) -> None:
        assert handle.chan is not None
        try:
            while True:
                msg = await handle.chan.recv()
                handle.last_heartbeat = time.monotonic()
                kind = msg.get("t")
                if kind == "hb":
                    handle.rss_mb = float(msg.get("rss_mb") or 0.0)
                    continue
                if kind == "hello":
                    handle.browser = msg.get("browser")
                    if handle.state in (STARTING, BUSY) and handle.task is None:
                        handle.state = IDLE
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
        if handle.browser:
            # The worker may have died by SIGKILL without ending its Chromium.
            kill_group(int(handle.browser["pgid"]))
            await asyncio.get_running_loop().run_in_executor(None, kill_profile_processes, Path(handle.browser["profile"]))
        if handle.chan:
            handle.chan.close()
        log.info("worker %d exited (%r)", handle.wid, proc.exitcode)
        handle.state = DEAD
        await self.on_exit(handle)
        handle.task = handle.browser = None
        if not self.stopping:
            handle.restarts += 1
            await asyncio.sleep(self.config.restart_delay_s)
            if not self.stopping:
                await self.spawn(handle)

    def kill(self, handle: WorkerHandle) -> None:
        if handle.proc is not None and handle.proc.is_alive():
            handle.proc.kill()
        if handle.browser:
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

    async def send(self, handle: WorkerHandle, msg: dict[str, Any]) -> None:
        assert handle.chan is not None
        await handle.chan.send(msg)

    async def stop(self, grace: float) -> None:
        """Let busy workers finish for up to `grace` seconds, then end every worker and its Chromium."""
        self.stopping = True
        if self._watchdog:
            self._watchdog.cancel()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(h.state == BUSY for h in self.workers.values()):
            await asyncio.sleep(0.1)
        for handle in self.workers.values():
            if handle.state in (IDLE, STARTING) and handle.chan is not None:
                try:
                    await asyncio.wait_for(handle.chan.send({"t": "stop"}), 1)
                except (ConnectionError, asyncio.TimeoutError):
                    pass
            elif handle.state == BUSY and handle.proc is not None and handle.proc.is_alive():
                handle.proc.terminate()
        if self._readers:
            await asyncio.wait(set(self._readers), timeout=15)
        for handle in self.workers.values():
            self.kill(handle)
