"""The scheduler: hands queued tasks to idle workers and records what comes back."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import time
from pathlib import Path
from typing import Any

from . import outputs
from .errors import OutDirError
from .events import EventLog
from .rate import moving_rate_per_min
from .fleet import BUSY, IDLE, Fleet, WorkerHandle
from .limits import Limits
from .retries import CRASH, PERMANENT, RATE_LIMIT, TIMEOUT, TRANSIENT, RetryPolicy
from .states import FINISHED_JOB_STATES, TaskState
from .store import AsyncStore, Store, task_key

log = logging.getLogger(__name__)

RATE_WINDOW_S = 120.0
# Failures that say something about the worker (not the site or the prompt); 3 in a row restart it.
WORKER_FAILURES = frozenset({TRANSIENT, TIMEOUT, CRASH})
FAILURES_BEFORE_RESTART = 3


class Scheduler:
    def __init__(self, store: AsyncStore, fleet: Fleet, policy: RetryPolicy, site_urls: Any, deadline_s: float,
                 events: EventLog, limits: Limits | None = None) -> None:
        self.limits = limits or Limits(0, 0)
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

    async def job(self, job_id: str) -> dict[str, Any]:
        """A job from the cache, read from the store the first time."""
        if job_id not in self.jobs:
            self.jobs[job_id] = await self.store("get_job", job_id)
        return self.jobs[job_id]

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
                wake = await self.dispatch()
                retry_at = await self.store("next_retry_at")
                if retry_at is not None:
                    wake = min(wake, retry_at)
            except Exception:
                log.exception("dispatch failed; trying again shortly")
                wake = time.time() + 1
            timeout = None if wake == float("inf") else max(0.01, wake - time.time())
            try:
                await asyncio.wait_for(self._kick.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def dispatch(self) -> float:
        """Start tasks on idle workers as pacing allows; return the wall-clock time worth trying again."""
        wake = float("inf")
        if self.fleet.hold:
            return wake  # memory is short: the governor kicks us when it is not
        loop = asyncio.get_running_loop()
        for handle in self.fleet.idle():
            cooling = self.limits.cooling(handle.wid, time.time())
            if cooling > 0:
                wake = min(wake, time.time() + cooling)
                continue
            while self.dispatching and handle.state == IDLE and not self.fleet.hold:
                picked = await self.pick(handle)
                if isinstance(picked, float):
                    wake = min(wake, picked)
                    break
                if picked is None:
                    return wake
                task, job = picked
                path = Path(job["out"]) / outputs.output_name(task["index"], task["prompt"])
                try:
                    image = await loop.run_in_executor(None, outputs.read_image, path)
                except OutDirError as exc:  # ForeignFile, or a job path that is not absolute and normalised
                    await self.refuse_output(task, str(exc))
                    continue
                except OSError:
                    image = None  # an unreadable directory: the worker's write meets the error and reports it
                if image is not None:
                    # Finished before a crash: adopt it rather than generate it again.
                    await self.adopt(task, path, image)
                    continue
                if handle.state != IDLE:
                    # The worker died or was blocked while we awaited the store; the task goes back.
                    await self.put_back(task)
                    break
                self.limits.take(site_of(job), handle.wid, time.monotonic())
                await self.assign(handle, task, job, path)
        return wake

    async def pick(self, handle: WorkerHandle) -> tuple[dict[str, Any], dict[str, Any]] | float | None:
        """Claim the next task this worker may start now; or the time to try again; or None when nothing is queued."""
        skip = {j for j, n in self.running_per_job.items()
                if self.jobs.get(j, {}).get("max_workers") and n >= self.jobs[j]["max_workers"]}
        wake: float | None = None
        while True:
            key = await self.store("peek", time.time(), frozenset(skip))
            if key is None:
                return wake
            job_id = key.split(b"/")[0].decode()
            job = await self.job(job_id)
            site = site_of(job)
            wait = self.limits.wait(site, handle.wid, time.monotonic())
            if wait > 0:
                # This site must wait; tasks of other sites may still go.
                skip |= {j for j, other in self.jobs.items() if site_of(other) == site}
                wake = min(wake or float("inf"), time.time() + wait)
                continue
            task = await self.store("claim_key", key, handle.wid, time.time())
            if task is not None:
                return task, job

    async def assign(self, handle: WorkerHandle, task: dict[str, Any], job: dict[str, Any], path: Path) -> None:
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

    async def put_back(self, task: dict[str, Any]) -> None:
        """Return a claimed task that never reached a worker, without charging its attempt."""
        outcome = await self.store("finish", task_key(task["job"], task["index"]), TaskState.PENDING,
                                   worker=None, budget=task["budget"] + 1)
        if outcome:
            self.job_changed(outcome[1])

    async def refuse_output(self, task: dict[str, Any], error: str) -> None:
        """Something that is not our image sits at the task's file name (a symlink, a link, another file): the task
        fails, and that file is neither adopted nor overwritten."""
        outcome = await self.store("finish", task_key(task["job"], task["index"]), TaskState.FAILED, error=error,
                                   error_kind=PERMANENT, worker=None, finished=time.time())
        if outcome:
            failed, job = outcome
            self.events.emit("task_failed", job=job["id"], index=failed["index"], prompt=failed["prompt"], worker=None,
                             attempts=failed["attempts"], error=error, error_kind=PERMANENT, retry_at=None)
            self.job_changed(job)

    async def adopt(self, task: dict[str, Any], path: Path, data: bytes) -> None:
        await self.record_done(task, None, {
            "file": path.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
            "started": task["started"], "finished": time.time()}, adopted=True)

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
        if handle.state == BUSY:
            handle.state = IDLE
        if msg.get("ok"):
            handle.tasks_done += 1
            handle.failures_in_row = 0
            handle.restart_streak = 0
            fields = {k: msg[k] for k in ("file", "sha256", "bytes", "started", "finished")}
            self.limits.on_success(site_of(self.jobs.get(task["job"], {})))
            await self.record_done(task, handle.wid, fields, adopted=bool(msg.get("adopted")))
        else:
            await self.record_failure(handle, task, key, msg)
        if handle.retire:
            self.fleet.retire(handle)
        self.kick()

    async def record_done(self, task: dict[str, Any], worker: int | None, fields: dict[str, Any], adopted: bool) -> None:
        """Write the manifest line, then mark the task done in the store.

        In that order, a job seen as ended (by status or --wait) always has its
        whole manifest; a crash in between leaves a line that the start-up
        reconciliation removes, or keeps once the image is adopted.
        """
        loop = asyncio.get_running_loop()
        job = await self.job(task["job"])
        record = manifest_record(task | fields | {"worker": worker})
        intact = await loop.run_in_executor(None, outputs.append_manifest, Path(job["out"]), record)
        key = task_key(task["job"], task["index"])
        outcome = await self.store("finish", key, TaskState.DONE, error=None, error_kind=None, worker=worker, **fields)
        if not outcome or not intact:
            # The task was no longer running (its job was cancelled, say): take the line back out; or the
            # manifest's name held a symlink, now replaced: write every line again.
            await loop.run_in_executor(None, reconcile_manifest, self.store.store, job)
            if not outcome:
                return
        task, job = outcome
        if not adopted:  # an adopted image was made before; counting it would inflate the rate
            self.finish_times[job["id"]].append(time.monotonic())
        self.events.emit("task_done", job=job["id"], index=task["index"], prompt=task["prompt"], file=task["file"],
                         worker=worker, attempts=task["attempts"], adopted=adopted)
        self.job_changed(job)

    async def record_failure(self, handle: WorkerHandle, task: dict[str, Any], key: bytes, msg: dict[str, Any]) -> None:
        kind = str(msg.get("kind"))
        handle.last_error = f"{kind}: {msg.get('error')}"
        decision = self.policy.decide(task, kind, msg.get("wait_s"), time.time())
        if kind == RATE_LIMIT:
            cool = (decision.ready_at or time.time()) - time.time()
            self.limits.on_rate_limit(site_of(self.jobs.get(task["job"], {})), handle.wid, cool, time.monotonic(), time.time())
        log.info("task %s failed on worker %d (%s); now %s", key.decode(), handle.wid, handle.last_error, decision.state.value)
        fields: dict[str, Any] = {"error": msg.get("error"), "error_kind": kind, "ready_at": decision.ready_at,
                                  "finished": msg.get("finished")}
        if decision.refund:
            fields["budget"] = task["budget"] + 1
        if kind == RATE_LIMIT:
            fields["rate_limits"] = task.get("rate_limits", 0) + 1
        outcome = await self.store("finish", key, decision.state, **fields)
        if outcome:
            failed, job = outcome
            self.events.emit("task_failed" if decision.state == TaskState.FAILED else "task_retry", job=job["id"],
                             index=failed["index"], prompt=failed["prompt"], worker=handle.wid, attempts=failed["attempts"],
                             error=msg.get("error"), error_kind=kind, retry_at=decision.ready_at)
            self.job_changed(job)
        if decision.block_worker:
            self.fleet.block(handle, handle.last_error)
            self.events.emit("worker_blocked", worker=handle.wid, reason=handle.last_error)
        elif kind in WORKER_FAILURES:
            handle.failures_in_row += 1
            if handle.failures_in_row >= FAILURES_BEFORE_RESTART:
                log.warning("worker %d failed %d tasks in a row; restarting it", handle.wid, handle.failures_in_row)
                self.fleet.restart(handle, f"{handle.failures_in_row} failures in a row")
        else:
            handle.failures_in_row = 0

    async def on_exit(self, handle: WorkerHandle) -> None:
        """A worker died: its task goes back to pending (its attempt refunded when we stopped it on purpose)."""
        self.events.emit("worker_exited", worker=handle.wid, pid=handle.pid, code=handle.proc.exitcode if handle.proc else None,
                         reason=handle.last_error)
        task = handle.task
        if task is None:
            return
        self._release(handle)
        fields: dict[str, Any] = {"worker": None}
        if self.fleet.stopping or handle.retire:
            fields["budget"] = task["budget"] + 1  # we ended it on purpose
        outcome = await self.store("finish", task_key(task["job"], task["index"]), TaskState.PENDING, **fields)
        if outcome:
            self.job_changed(outcome[1])

    def _release(self, handle: WorkerHandle) -> None:
        if handle.task is not None:
            self.running_per_job[handle.task["job"]] -= 1
        handle.task = None
        handle.task_started = None

    def rate_per_min(self, job_id: str) -> float:
        return moving_rate_per_min(self.finish_times.get(job_id, ()), time.monotonic(), RATE_WINDOW_S)


def site_of(job: dict[str, Any]) -> str:
    profile = job.get("profile")
    return str(profile.get("name")) if isinstance(profile, dict) and profile.get("name") else str(job.get("site", ""))


def reconcile_manifest(store: Store, job: dict[str, Any]) -> bool:
    """Rewrite a job's manifest from the store when the two disagree; True when it was rewritten."""
    out = Path(job["out"])
    if not outputs.dir_exists(out):
        return False
    try:
        listed = {r.get("file") for r in outputs.manifest_records(out)}
    except Exception as exc:
        log.warning("manifest of job %s unreadable (%s); rewriting it", job["id"], exc)
        listed = set()
    if listed == store.done_files(job["id"]):  # file names only: a job may hold a million tasks
        return False
    done = [t for t in store.tasks_of(job["id"]) if t["state"] == TaskState.DONE.value]
    done.sort(key=lambda t: (t["finished"] or 0, t["index"]))
    outputs.rewrite_manifest(out, [manifest_record(t) for t in done])
    log.info("manifest of job %s rewritten from the store (%d lines)", job["id"], len(done))
    return True


def manifest_record(task: dict[str, Any]) -> dict[str, Any]:
    return {"index": task["index"], "prompt": task["prompt"], "file": task["file"], "sha256": task["sha256"],
            "bytes": task["bytes"], "attempts": task["attempts"], "worker": task["worker"],
            "started": task["started"], "finished": task["finished"]}
