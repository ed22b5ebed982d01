"""The scheduler: hands queued tasks to idle workers and records what comes back.

Each fault is charged to what caused it: the prompt (its attempt budget), the
worker (failures in a row restart it), the account (it cools), the site (its
dispatch pauses while it cannot be reached) or the output (its job waits for
room, and images already made are held).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from ..files import outputs
from .deadlines import answer_cap
from ..errors import OutDirError
from ..store.events import EventLog
from ..fleet.fleet import BUSY, IDLE, Fleet, WorkerHandle
from .held import HeldImages
from .limits import Limits
from .manifest import manifest_record, reconcile_manifest
from .outages import DiskWaits, SiteOutages
from .rate import moving_rate_per_min
from .retries import ABORTED, CRASH, DETACHED, DISK, PERMANENT, RATE_LIMIT, TIMEOUT, TRANSIENT, UNREACHABLE, Decision, RetryPolicy
from ..states import FINISHED_JOB_STATES, JobState, TaskState
from ..store.store import AsyncStore, task_key

log = logging.getLogger(__name__)

RATE_WINDOW_S = 120.0
# Failures that say something about the worker (not the site or the prompt); 3 in a row restart it.
WORKER_FAILURES = frozenset({TRANSIENT, TIMEOUT, CRASH})
FAILURES_BEFORE_RESTART = 3
# Outcomes that do not show the site answering (so they neither end an outage nor confirm it).
SAYS_NOTHING_OF_THE_SITE = frozenset({UNREACHABLE, TIMEOUT, CRASH, DISK, DETACHED, ABORTED})
FREE_CHECK_S = 2.0  # how often a job's output filesystem is checked for free space
PACING_SAVE_S = 5.0  # what pacing learned is saved at most this often
RECORD_RETRY_S = 2.0


class Scheduler:
    def __init__(self, store: AsyncStore, fleet: Fleet, policy: RetryPolicy, site_urls: Any, deadline_s: float,
                 events: EventLog, limits: Limits | None = None, *, min_free_mb: float = 0.0,
                 held_mb: float = 512.0, site_problems: Any = None) -> None:
        self.limits = limits or Limits(0, 0)
        self.store = store
        self.events = events
        self.fleet = fleet
        self.policy = policy
        self.site_urls = site_urls  # async (job) -> start URL of the job's site
        # async (job) -> what the site policy refuses in the job's profile now; asked once per job and daemon run,
        # since a job queued under an older policy (site_hosts, site_networks) must not go where this one forbids.
        self.site_problems = site_problems
        self.site_refusals: dict[str, str | None] = {}
        self.deadline_s = deadline_s
        self.min_free_mb = min_free_mb
        self.outages = SiteOutages()
        self.disk = DiskWaits()
        self.held = HeldImages(int(held_mb * 2**20))
        self.jobs: dict[str, dict[str, Any]] = {}
        self.running_per_job: collections.Counter[str] = collections.Counter()
        self.finish_times: dict[str, collections.deque[float]] = collections.defaultdict(lambda: collections.deque(maxlen=2000))
        self.first_dispatch: dict[str, float] = {}  # job -> monotonic time its first task went out (since this start)
        self.job_events: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)
        self.free_checked: dict[str, float] = {}  # job -> when its output's free space was last read
        self.unrecorded: list[Callable[[], Awaitable[None]]] = []  # outcomes the store could not take yet
        self.pacing_saved = 0.0
        self.dispatching = True
        self._kick = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._aborts: set[asyncio.Task[None]] = set()  # abort messages on their way to workers

    async def start(self) -> None:
        for job in await self.store("list_jobs"):
            self.jobs[job["id"]] = job
        saved = await self.store("load_pacing")
        if saved:
            self.limits.restore(saved)
            log.info("pacing learned before the restart: %s", self.limits.view(time.time())["sites"])
        self._loop_task = asyncio.create_task(self._run())
        self.kick()

    def kick(self) -> None:
        self._kick.set()

    async def stop_dispatching(self, timeout: float = 5.0) -> None:
        """Stop handing out tasks.  The loop finishes the hand-out it is in, so no task is left claimed in the
        store without a worker to account for it (a cancel between the claim and the hand-out would)."""
        self.dispatching = False
        self.kick()
        if self._loop_task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._loop_task), timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
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
        if job["state"] == JobState.CANCELLED.value and (old is None or old["state"] != job["state"]):
            self.abort_running(job["id"])
        self.kick()

    def abort_running(self, job_id: str) -> None:
        """Tell the workers generating a cancelled job's tasks to stop now, rather than when their answers come."""
        for handle in self.fleet.workers.values():
            task = handle.task
            if handle.state == BUSY and task is not None and task["job"] == job_id:
                sending = asyncio.create_task(self._abort(handle, task_key(job_id, task["index"]).decode()))
                self._aborts.add(sending)
                sending.add_done_callback(self._aborts.discard)

    async def _abort(self, handle: WorkerHandle, key: str) -> None:
        try:
            await self.fleet.send(handle, {"t": "abort", "key": key})
        except Exception as exc:  # the worker is gone: its exit puts the task back, and the store keeps it cancelled
            log.info("could not tell worker %d to abort task %s: %s", handle.wid, key, exc)

    async def _run(self) -> None:
        while self.dispatching:
            self._kick.clear()
            try:
                await self.record_leftovers()
                wake = await self.dispatch()
                retry_at = await self.store("next_retry_at")
                if retry_at is not None:
                    wake = min(wake, retry_at)
                if self.unrecorded:
                    wake = min(wake, time.time() + RECORD_RETRY_S)
                await self.save_pacing()
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
        # The worker idle longest goes first, so accounts take turns and no one account meets every limit.
        for handle in sorted(self.fleet.idle(), key=lambda h: h.last_dispatch):
            cooling = self.limits.cooling(handle.account, time.time())
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
                # A job queued before an upgrade keeps the names it was given (no "names": version 1).
                path = Path(job["out"]) / outputs.output_name(task["index"], task["prompt"], job.get("names", 1))
                try:
                    image = await loop.run_in_executor(None, outputs.read_image, path)
                except OutDirError as exc:  # ForeignFile, or a job path that is not absolute and normalised
                    await self.refuse(task, str(exc))
                    continue
                except OSError:
                    image = None  # an unreadable directory: the worker's write meets the error and reports it
                if image is not None:
                    # Finished before a crash: adopt it rather than generate it again.
                    await self.adopt(task, path, image)
                    continue
                held = self.held.get(task_key(task["job"], task["index"]))
                if held is not None:
                    await self.write_held(task, job, path, held)
                    continue
                refused = await self.site_refused(job)
                if refused:
                    await self.refuse(task, refused)
                    continue
                if handle.state != IDLE:
                    # The worker died or was blocked while we awaited the store; the task goes back.
                    await self.put_back(task)
                    break
                await self.assign(handle, task, job, path)
        return wake

    async def pick(self, handle: WorkerHandle) -> tuple[dict[str, Any], dict[str, Any]] | float | None:
        """Claim the next task this worker may start now; or the time to try again; or None when nothing is queued."""
        skip = {j for j, n in self.running_per_job.items()
                if self.jobs.get(j, {}).get("max_workers") and n >= self.jobs[j]["max_workers"]}
        wake: float | None = None
        while True:
            now = time.time()
            key = await self.store("peek", now, frozenset(skip))
            if key is None:
                return wake
            job_id = key.split(b"/")[0].decode()
            job = await self.job(job_id)
            site = site_of(job)
            wait = max(self.outages.wait(site, now), self.limits.wait(site, handle.account, now))
            if wait > 0:
                # This site must wait (for this worker's account); tasks of other sites may still go.
                skip |= {j for j, other in self.jobs.items() if site_of(other) == site}
            elif (wait := await self.disk_wait(job)) > 0:
                skip.add(job_id)
            if wait > 0:
                wake = min(wake or float("inf"), now + wait)
                continue
            task = await self.store("claim_key", key, handle.wid, now)
            if task is not None:
                return task, job

    async def disk_wait(self, job: dict[str, Any]) -> float:
        """Seconds this job's output must wait for room (0: it may write now); checks free space every few seconds."""
        job_id, now = job["id"], time.time()
        wait = self.disk.wait(job_id, now)
        if wait > 0 or (job_id not in self.disk.waiting and now - self.free_checked.get(job_id, 0.0) < FREE_CHECK_S):
            return wait
        self.free_checked[job_id] = now
        problem = await asyncio.get_running_loop().run_in_executor(None, outputs.space_problem, Path(job["out"]), self.min_free_mb)
        if problem is None:
            if self.disk.room(job_id):
                log.info("job %s: its output has room again", job_id)
                self.events.emit("job_resumed", job=job_id, reason="the output has room again")
            return 0.0
        self.output_full(job, problem)
        return self.disk.wait(job_id, time.time())

    def output_full(self, job: dict[str, Any], reason: str) -> float:
        """The job's output cannot take images: the job waits (status says why) until a check finds room."""
        new = job["id"] not in self.disk.waiting
        retry_at = self.disk.full(job["id"], reason, time.time())
        if new:
            log.warning("job %s waits for its output: %s", job["id"], reason)
            self.events.emit("job_waiting", job=job["id"], reason=reason)
        return retry_at

    def forget(self, job_ids: Iterable[str]) -> None:
        """Drop pruned jobs from every in-memory table keyed by job, so that none grows with the daemon's history."""
        for job_id in job_ids:
            for table in (self.jobs, self.finish_times, self.job_events, self.running_per_job, self.first_dispatch,
                          self.free_checked, self.disk.waiting, self.site_refusals):
                table.pop(job_id, None)
            self.held.drop_job(job_id)

    async def assign(self, handle: WorkerHandle, task: dict[str, Any], job: dict[str, Any], path: Path) -> None:
        site = site_of(job)
        key = task_key(job["id"], task["index"]).decode()
        self.limits.take(site, handle.account, key, time.time())
        self.outages.sending(site, key)
        handle.state, handle.task, handle.task_started = BUSY, task, time.monotonic()
        handle.last_dispatch = time.monotonic()
        self.first_dispatch.setdefault(job["id"], handle.last_dispatch)
        self.running_per_job[job["id"]] += 1
        try:
            url = await self.site_urls(job)
            await self.fleet.send(handle, {
                "t": "task", "key": key, "prompt": task["prompt"], "path": str(path), "site": job.get("profile") or job["site"],
                "url": url, "deadline_s": self.deadline_s,
                "answer_s": self.limits.answer_deadline(site, answer_cap(job.get("profile"), self.deadline_s))})
        except (ConnectionError, OSError) as exc:
            # The worker is going away; its exit hook puts the task back.
            log.warning("could not hand a task to worker %d: %s", handle.wid, exc)

    async def put_back(self, task: dict[str, Any], **fields: Any) -> None:
        """Return a claimed task that never reached a worker, without charging its attempt."""
        state = TaskState.RETRY_WAIT if "ready_at" in fields else TaskState.PENDING
        outcome = await self.store("finish", task_key(task["job"], task["index"]), state,
                                   worker=None, budget=task["budget"] + 1, **fields)
        if outcome:
            self.job_changed(outcome[1])

    async def site_refused(self, job: dict[str, Any]) -> str | None:
        """Why the site policy refuses the job's site now, or None; a refusal fails each task without running it."""
        if self.site_problems is None:
            return None
        if job["id"] not in self.site_refusals:
            problems = await self.site_problems(job)
            self.site_refusals[job["id"]] = None if not problems else \
                "the site policy refuses this job's site profile now: " + "; ".join(problems)
            if problems:
                log.warning("job %s: %s", job["id"], self.site_refusals[job["id"]])
        return self.site_refusals[job["id"]]

    async def refuse(self, task: dict[str, Any], error: str) -> None:
        """The task fails at once, without running: something that is not our image sits at its file name (a
        symlink, a link, another file: neither adopted nor overwritten), or its site is one the policy refuses."""
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

    async def write_held(self, task: dict[str, Any], job: dict[str, Any], path: Path, data: bytes) -> None:
        """Write an image a worker made while the output was full, now that there may be room."""
        key = task_key(task["job"], task["index"])
        try:
            await asyncio.get_running_loop().run_in_executor(None, outputs.write_atomic, path, data)
        except OSError as exc:
            reason = f"cannot write {path.name} in {job['out']}: {exc.strerror}"
            await self.put_back(task, ready_at=self.output_full(job, reason), error=reason, error_kind=DISK)
            return
        self.held.drop(key)
        log.info("task %s: wrote the image held while its output was full", key.decode())
        await self.record_done(task, None, {"file": path.name, "sha256": hashlib.sha256(data).hexdigest(),
                                            "bytes": len(data), "started": task["started"], "finished": time.time()},
                               adopted=False)

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
        job = self.jobs.get(task["job"], {})
        site, now = site_of(job), time.time()
        kind = str(msg.get("kind"))
        # A probe of a down site that fails short of an answer proves nothing of the prompt: its attempt is free.
        probe = self.outages.is_probe(site, key.decode())
        self.pace(handle, site, key.decode(), msg, now)
        if msg.get("ok"):
            handle.tasks_done += 1
            handle.failures_in_row = 0
            handle.restart_streak = 0
            work: Callable[[], Awaitable[None]] = lambda: self.record_done(
                task, handle.wid, {k: msg[k] for k in ("file", "sha256", "bytes", "started", "finished")},
                adopted=bool(msg.get("adopted")))
        else:
            handle.last_error = f"{kind}: {msg.get('error')}"
            decision = self.decide(task, job, site, msg, now)
            if probe and kind in (TRANSIENT, TIMEOUT):
                decision = Decision(TaskState.RETRY_WAIT, now + self.policy.delay(1), refund=True)
            # The worker's fate is settled before any await, so no task is handed to a worker about to restart.
            self.judge_worker(handle, decision, kind, str(msg.get("blame") or "worker"))
            work = lambda: self.record_failure(handle.wid, task, key, msg, decision)
        self.fleet.task_ended(handle)
        await self.settle(work)
        if handle.retire:
            self.fleet.retire(handle)
        self.kick()

    def pace(self, handle: WorkerHandle, site: str, key: str, msg: dict[str, Any], now: float) -> None:
        """Tell pacing what became of a send: refused, or answered (and how fast)."""
        kind = msg.get("kind")
        if msg.get("ok") or kind not in SAYS_NOTHING_OF_THE_SITE:
            if self.outages.reached(site):
                log.info("site %s answers again", site)
                self.events.emit("site_up", site=site)
        elif kind != UNREACHABLE:
            self.outages.unanswered(site)
        if msg.get("adopted"):
            return
        if kind == RATE_LIMIT:
            if self.limits.on_rate_limit(site, handle.account, key, msg.get("sent_at"), msg.get("wait_s"),
                                         str(msg.get("error") or ""), now):
                pace = self.limits.view(now)["sites"].get(site) or {}
                log.info("site %s: congestion signal %d (account %s, sent %.2f, wait %s); learned %s, scope %s",
                         site, pace.get("signals"), handle.account, msg.get("sent_at") or 0.0, msg.get("wait_s"),
                         pace.get("window"), pace.get("scope"))
                self.events.emit("pace_signal", site=site, worker=handle.wid, pace=pace)
        elif kind not in (UNREACHABLE, ABORTED):  # an aborted send's answer never came: nothing to learn from it
            self.limits.on_answer(site, handle.account, key, msg.get("sent_at"),
                                  msg.get("answer_s") if msg.get("ok") or kind == DISK else None, now, bool(msg.get("ok")))
            if kind == TIMEOUT and msg.get("blame") == "site" and msg.get("frozen_cpu_s") is None:
                self.limits.on_answer_timeout(site)

    def decide(self, task: dict[str, Any], job: dict[str, Any], site: str, msg: dict[str, Any], now: float) -> Decision:
        kind = str(msg.get("kind"))
        wait = msg.get("wait_s")
        if kind == UNREACHABLE:
            first = site not in self.outages.down
            wait = self.outages.failed(site, str(msg.get("error")), now) - now
            if first:
                log.warning("site %s cannot be reached; its tasks wait %.0f s: %s", site, wait, msg.get("error"))
                self.events.emit("site_down", site=site, reason=msg.get("error"), retry_in_s=round(wait, 1))
        elif kind == DISK:
            if isinstance(msg.get("data"), bytes):
                self.held.hold(task_key(task["job"], task["index"]), msg["data"])
            wait = self.output_full(job, str(msg.get("error"))) - now
        return self.policy.decide(task, kind, wait, now)

    def judge_worker(self, handle: WorkerHandle, decision: Decision, kind: str, blame: str) -> None:
        """A failure's consequence for the worker: blocked, restarted after 3 of its own in a row, or none."""
        if decision.block_worker:
            self.fleet.block(handle, handle.last_error)
            self.events.emit("worker_blocked", worker=handle.wid, reason=handle.last_error)
            # The account is signed out (or challenged), not just this browser: its other workers stop too.
            for other in self.fleet.block_account(handle.account, f"account {handle.account}: {handle.last_error}"):
                self.events.emit("worker_blocked", worker=other.wid, reason=other.blocked_reason)
        elif kind in WORKER_FAILURES and blame != "site":
            handle.failures_in_row += 1
            if handle.failures_in_row >= FAILURES_BEFORE_RESTART:
                log.warning("worker %d failed %d tasks in a row; restarting it", handle.wid, handle.failures_in_row)
                self.fleet.restart(handle, f"{handle.failures_in_row} failures in a row")

    async def settle(self, work: Callable[[], Awaitable[None]]) -> None:
        """Record an outcome; one the store cannot take now is kept and tried again, never lost or left running."""
        try:
            await work()
        except Exception:
            log.exception("could not record a task's outcome; trying again in %.0f s", RECORD_RETRY_S)
            self.unrecorded.append(work)

    async def record_leftovers(self) -> None:
        pending, self.unrecorded = self.unrecorded, []
        for work in pending:
            await self.settle(work)

    async def record_done(self, task: dict[str, Any], worker: int | None, fields: dict[str, Any], adopted: bool) -> None:
        """Write the manifest line, then mark the task done in the store.

        In that order, a job seen as ended (by status or --wait) always has its
        whole manifest; a crash in between leaves a line that the start-up
        reconciliation removes, or keeps once the image is adopted.  A manifest
        that cannot be written sends the task back (its image stays, to be
        adopted) and the job waits for room.
        """
        loop = asyncio.get_running_loop()
        job = await self.job(task["job"])
        record = manifest_record(task | fields | {"worker": worker})
        key = task_key(task["job"], task["index"])
        try:
            intact = await loop.run_in_executor(None, outputs.append_manifest, Path(job["out"]), record)
        except OSError as exc:
            reason = f"cannot write the manifest in {job['out']}: {exc.strerror}"
            outcome = await self.store("finish", key, TaskState.RETRY_WAIT, ready_at=self.output_full(job, reason),
                                       budget=task["budget"] + 1, error=reason, error_kind=DISK, worker=None)
            if outcome:
                self.job_changed(outcome[1])
            return
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
        took = None if adopted or not (fields.get("started") and fields.get("finished")) else \
            round(fields["finished"] - fields["started"], 3)
        self.events.emit("task_done", job=job["id"], index=task["index"], prompt=task["prompt"], file=task["file"],
                         worker=worker, attempts=task["attempts"], adopted=adopted, seconds=took)
        self.job_changed(job)

    async def record_failure(self, wid: int, task: dict[str, Any], key: bytes, msg: dict[str, Any],
                             decision: Decision) -> None:
        kind = str(msg.get("kind"))
        log.info("task %s failed on worker %d (%s: %s); now %s", key.decode(), wid, kind, msg.get("error"),
                 decision.state.value)
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
                             index=failed["index"], prompt=failed["prompt"], worker=wid, attempts=failed["attempts"],
                             error=msg.get("error"), error_kind=kind, retry_at=decision.ready_at,
                             frozen_cpu_s=msg.get("frozen_cpu_s"))
            self.job_changed(job)

    async def on_exit(self, handle: WorkerHandle) -> None:
        """A worker died: its task goes back to pending (its attempt refunded when we stopped it on purpose)."""
        self.events.emit("worker_exited", worker=handle.wid, pid=handle.pid, code=handle.proc.exitcode if handle.proc else None,
                         reason=handle.last_error)
        task = handle.task
        if task is None:
            return
        self._release(handle)
        self.outages.unanswered(site_of(self.jobs.get(task["job"], {})))
        fields: dict[str, Any] = {"worker": None}
        if self.fleet.stopping or handle.retire or handle.deliberate:
            fields["budget"] = task["budget"] + 1  # we ended it on purpose
        outcome = await self.store("finish", task_key(task["job"], task["index"]), TaskState.PENDING, **fields)
        if outcome:
            self.job_changed(outcome[1])

    def _release(self, handle: WorkerHandle) -> None:
        if handle.task is not None:
            self.running_per_job[handle.task["job"]] -= 1
        handle.task = None
        handle.task_started = None

    async def save_pacing(self, force: bool = False) -> None:
        """Keep what pacing learned in the store, so a restart starts from it."""
        if not (force or (self.limits.changed and time.monotonic() - self.pacing_saved >= PACING_SAVE_S)):
            return
        self.pacing_saved = time.monotonic()
        self.limits.prune(time.time())
        await self.store("save_pacing", self.limits.state())

    def rate_per_min(self, job_id: str) -> float:
        return moving_rate_per_min(self.finish_times.get(job_id, ()), time.monotonic(), RATE_WINDOW_S,
                                   self.first_dispatch.get(job_id))

    def pacing_view(self, now: float) -> dict[str, Any]:
        view = self.limits.view(now)
        for site, outage in self.outages.view(now).items():
            view["sites"].setdefault(site, {})["unreachable"] = outage
        return view

    def waiting_view(self, job_id: str) -> dict[str, Any] | None:
        return self.disk.view(job_id, time.time())


def site_of(job: dict[str, Any]) -> str:
    profile = job.get("profile")
    return str(profile.get("name")) if isinstance(profile, dict) and profile.get("name") else str(job.get("site", ""))
