"""The scheduler: hands queued tasks to idle workers and records what comes back."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from pathlib import Path
from typing import Any

from . import outputs
from .events import EventLog
from .fleet import BUSY, IDLE, Fleet, WorkerHandle
from .retries import RetryPolicy
from .states import FINISHED_JOB_STATES, TaskState
from .store import AsyncStore, task_key

log = logging.getLogger(__name__)

RATE_WINDOW_S = 120.0


class Scheduler:
    def __init__(self, store: AsyncStore, fleet: Fleet, policy: RetryPolicy, site_urls: Any, deadline_s: float,
                 events: EventLog) -> None:
        self.store = store
        self.events = events
        self.fleet = fleet
        self.policy = policy
        self.site_urls = site_urls  # async (job) -> start URL of the job's site
        self.deadline_s = deadline_s
        self.jobs: dict[str, dict[str, Any]] = {}
        self.running_per_job: collections.Counter[str] = collections.Counter()
        self.finish_times: dict[str, collections.deque[float]] = collections.defaultdict(lambda: collections.deque(maxlen=2000))
        self.job_events: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)
        self.dispatching = True
        self._kick = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for job in await self.store("list_jobs"):
            self.jobs[job["id"]] = job
        self._loop_task = asyncio.create_task(self._run())
        self.kick()

    def kick(self) -> None:
        self._kick.set()

    def stop_dispatching(self) -> None:
        self.dispatching = False
        if self._loop_task:
            self._loop_task.cancel()

    def job_changed(self, job: dict[str, Any]) -> None:
        old = self.jobs.get(job["id"])
        self.jobs[job["id"]] = job
        if old is None or old["state"] != job["state"]:
            self.events.emit("job_" + job["state"], job=job["id"], name=job["name"])
        if job["state"] in FINISHED_JOB_STATES:
            self.job_events[job["id"]].set()
        self.kick()

    async def _run(self) -> None:
        while self.dispatching:
            self._kick.clear()
            try:
                await self.dispatch()
                wake = await self.store("next_retry_at")
            except Exception:
                log.exception("dispatch failed; trying again shortly")
                wake = time.time() + 1
            timeout = None if wake is None else max(0.01, wake - time.time())
            try:
                await asyncio.wait_for(self._kick.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def dispatch(self) -> None:
        for handle in self.fleet.idle():
            if not self.dispatching:
                return
            full = frozenset(j for j, n in self.running_per_job.items()
                             if self.jobs.get(j, {}).get("max_workers") and n >= self.jobs[j]["max_workers"])
            task = await self.store("claim", handle.wid, time.time(), full)
            if task is None:
                return
            job = self.jobs.get(task["job"]) or await self.store("get_job", task["job"])
            self.jobs[job["id"]] = job
            path = Path(job["out"]) / outputs.output_name(task["index"], task["prompt"])
            handle.state, handle.task, handle.task_started = BUSY, task, time.monotonic()
            self.running_per_job[job["id"]] += 1
            try:
                url = await self.site_urls(job)
                await self.fleet.send(handle, {
                    "t": "task", "key": task_key(job["id"], task["index"]).decode(), "prompt": task["prompt"],
                    "path": str(path), "site": job.get("profile") or job["site"], "url": url,
                    "deadline_s": self.deadline_s})
            except (ConnectionError, OSError) as exc:
                # The worker is going away; its exit hook puts the task back.
                log.warning("could not hand a task to worker %d: %s", handle.wid, exc)

    async def on_message(self, handle: WorkerHandle, msg: dict[str, Any]) -> None:
        if msg.get("t") == "hello":
            self.kick()
        elif msg.get("t") == "result":
            await self.on_result(handle, msg)

    async def on_result(self, handle: WorkerHandle, msg: dict[str, Any]) -> None:
        task = handle.task
        key = str(msg.get("key", "")).encode()
        if task is None or task_key(task["job"], task["index"]) != key:
            log.warning("worker %d reported a task it was not given (%r)", handle.wid, key)
            return
        self._release(handle)
        if msg.get("ok"):
            handle.tasks_done += 1
            handle.failures_in_row = 0
            fields = {k: msg[k] for k in ("file", "sha256", "bytes", "started", "finished")}
            outcome = await self.store("finish", key, TaskState.DONE, error=None, error_kind=None, worker=handle.wid, **fields)
            if outcome:
                done_task, job = outcome
                await asyncio.get_running_loop().run_in_executor(None, outputs.append_manifest, Path(job["out"]), manifest_record(done_task))
                self.finish_times[job["id"]].append(time.monotonic())
                self.events.emit("task_done", job=job["id"], index=done_task["index"], prompt=done_task["prompt"],
                                 file=done_task["file"], worker=handle.wid, attempts=done_task["attempts"],
                                 adopted=bool(msg.get("adopted")))
                self.job_changed(job)
        else:
            handle.failures_in_row += 1
            handle.last_error = f"{msg.get('kind')}: {msg.get('error')}"
            decision = self.policy.decide(task, str(msg.get("kind")), msg.get("wait_s"), time.time())
            log.info("task %s failed on worker %d (%s); now %s", key.decode(), handle.wid, handle.last_error, decision.state.value)
            outcome = await self.store("finish", key, decision.state, error=msg.get("error"), error_kind=msg.get("kind"),
                                       ready_at=decision.ready_at, finished=msg.get("finished"))
            if outcome:
                failed_task, job = outcome
                self.events.emit("task_failed" if decision.state == TaskState.FAILED else "task_retry", job=job["id"],
                                 index=failed_task["index"], prompt=failed_task["prompt"], worker=handle.wid,
                                 attempts=failed_task["attempts"], error=msg.get("error"), error_kind=msg.get("kind"),
                                 retry_at=decision.ready_at)
                self.job_changed(job)
        if handle.state == BUSY:
            handle.state = IDLE
        self.kick()

    async def on_exit(self, handle: WorkerHandle) -> None:
        """A worker died: its task goes back to pending with its attempt counted."""
        task = handle.task
        if task is None:
            return
        self._release(handle)
        outcome = await self.store("finish", task_key(task["job"], task["index"]), TaskState.PENDING, worker=None)
        if outcome:
            self.job_changed(outcome[1])

    def _release(self, handle: WorkerHandle) -> None:
        if handle.task is not None:
            self.running_per_job[handle.task["job"]] -= 1
        handle.task = None
        handle.task_started = None

    def rate_per_min(self, job_id: str) -> float:
        times = self.finish_times.get(job_id)
        if not times:
            return 0.0
        now = time.monotonic()
        recent = [t for t in times if now - t <= RATE_WINDOW_S]
        if len(recent) < 2:
            return 0.0
        span = max(now - recent[0], 1.0)
        return round(len(recent) * 60.0 / span, 2)


def manifest_record(task: dict[str, Any]) -> dict[str, Any]:
    return {"index": task["index"], "prompt": task["prompt"], "file": task["file"], "sha256": task["sha256"],
            "bytes": task["bytes"], "attempts": task["attempts"], "worker": task["worker"],
            "started": task["started"], "finished": task["finished"]}
