"""The LMDB store: jobs, tasks and the queues, opened only by the daemon's main process.

Named databases:
    meta    counters and the browsers the workers started
    jobs    job id -> job map (with per-state counts, so status never scans tasks)
    tasks   "JOB/NNNNNN" -> task map
    fresh   job seq (8 bytes) + index (4 bytes) -> task key; pending tasks in input order
    retry   ready time in ms (8) + job seq (8) + index (4) -> task key; tasks in retry_wait
    events, event_jobs   the event log (eventstore.py); events ride along with the next write transaction

Every state change is one synced write transaction, checked against states.py.
All methods are synchronous; the daemon calls them on one dedicated thread.

Work on many tasks at once (creating, pausing, resuming, cancelling or deleting a
big job) is split into bounded transactions that bulk.py drives, so other calls
interleave. The job record says what is under way, so a crash between two
batches leaves a consistent store that the next start carries on from:
    "loading": true    a submit is still adding tasks; not dispatched, not settled
    "move": {...}      a pause/resume/cancel is moving tasks; "after" is the last task key done
    "deleting": true   the job is being deleted (retention, or a submit that failed); invisible
The store file is checked before LMDB opens it (storefile.py).
Claiming off the queues is TaskQueue's (queue.py, mixed in); records and keys are packed as records.py says.

meta's "format" is the store's format (FORMAT).  A change that only adds
fields keeps it (a newer tabfleetd reads them with defaults, an older one
ignores them); one an older tabfleetd would misread raises it, and then an
older tabfleetd refuses the store instead of damaging it.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from . import eventstore, storefile
from .eventstore import StoredEvents
from .queue import TaskQueue
from .records import SEQ_IDX as _SEQ_IDX, pack as _pack, task_key, unpack as _unpack
from .storethread import AsyncStore  # noqa: F401 - callers import it from here
from ..errors import IllegalTransition, StateError, StoreFormatError, UnknownJob
from ..states import BUCKETS, FINISHED_JOB_STATES, TASK_BUCKET, JobState, TaskState, check_job, check_task

log = logging.getLogger(__name__)
R = TypeVar("R")

FORMAT = 1


class Store(StoredEvents, TaskQueue):
    pending_events: eventstore.Pending

    def __init__(self, path: Path, map_size: int = 64 << 20, *, verify: bool = True) -> None:
        """Open the store, refusing a damaged one with StoreDamaged; verify=False skips the full file walk."""
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.commits = 0  # write transactions since open (metrics, the coordinator benchmark)
        self.events_stored = 0  # events in the store after the last write (metrics)
        # Compaction runs __init__ again on this same object: events waiting for a write must survive it.
        # (The daemon's listener holds this very buffer, so it is never replaced, empty or not.)
        if getattr(self, "pending_events", None) is None:
            self.pending_events = eventstore.Pending()
        if verify:
            storefile.check_before_open(path)
        try:
            self.env = lmdb.open(str(path), map_size=map_size, max_dbs=8, subdir=True, sync=True, metasync=True, readahead=False)
            stale = self.env.reader_check()
            if stale:
                log.warning("cleared %d stale LMDB reader slots", stale)
            self.meta = self.env.open_db(b"meta")
            self.jobs = self.env.open_db(b"jobs")
            self.tasks = self.env.open_db(b"tasks")
            self.fresh = self.env.open_db(b"fresh")
            self.retry = self.env.open_db(b"retry")
            self.event_dbs = eventstore.EventDbs(self.env)  # made on first open of an older store: format 1 still
        except lmdb.Error as exc:
            raise storefile.damaged(path, f"LMDB cannot open it ({exc})") from None
        storefile.check_readable(path, lambda: (self.list_jobs(), self.recorded_browsers()))
        storefile.mark_initialised(path)
        self.format = self._check_format()

    def _check_format(self) -> int:
        """Stamp a store that has no format yet (new, or made before formats were kept) with FORMAT; refuse a newer one."""
        def txn_fn(txn: lmdb.Transaction) -> int:
            raw = txn.get(b"format", db=self.meta)
            if raw is None:
                txn.put(b"format", _pack(FORMAT), db=self.meta)
                return FORMAT
            return int(_unpack(raw))

        found = self._write(txn_fn)
        if found > FORMAT:
            self.env.close()
            raise StoreFormatError(f"the store in {self.path} has format {found}, written by a newer tabfleetd; this one "
                                   f"reads format {FORMAT} at most. Install that newer version again, or start from a "
                                   "backup made before the upgrade (README: Upgrades)")
        return found

    def close(self) -> None:
        self.env.close()

    # -- transactions ------------------------------------------------------

    def _write(self, fn: Callable[[lmdb.Transaction], R]) -> R:
        """Run fn in one synced write transaction, growing the map when it is full; waiting events ride along."""
        while True:
            events: list[dict[str, Any]] = []
            try:
                with self.env.begin(write=True) as txn:
                    result = fn(txn)
                    events = self.pending_events.take()
                    self.event_dbs.put(txn, events)
                    stored = self.event_dbs.count(txn)
                self.events_stored = stored  # for the metrics, like commits
                self.commits += 1  # read by the metrics from another thread: an int, a torn read is impossible
                return result
            except BaseException as exc:
                self.pending_events.put_back(events)  # their transaction did not commit; the next one takes them
                if not isinstance(exc, lmdb.MapFullError):
                    raise
                new_size = self.env.info()["map_size"] * 2
                log.info("LMDB map full; growing it to %.1f MiB", new_size / 2**20)
                self.env.set_mapsize(new_size)

    def _read(self, fn: Callable[[lmdb.Transaction], R]) -> R:
        with self.env.begin() as txn:
            return fn(txn)

    # -- jobs --------------------------------------------------------------

    def new_job_id(self) -> str:
        return self._read(self._new_job_id)

    def create_job(self, *, job_id: str, name: str, site: str, knobs: dict[str, str], out: str, prompts: list[str],
                   max_workers: int, max_attempts: int, source: str, profile: dict[str, Any] | None = None,
                   uid: int | None = None, complete: bool = True, names: int = 1) -> dict[str, Any]:
        """Queue a new job with these tasks in one transaction; `names` is the output name version (outputs.py).

        With complete=False the job is "loading": add_tasks brings the rest and end_loading makes it dispatchable.
        """
        now = time.time()

        def txn_fn(txn: lmdb.Transaction) -> dict[str, Any]:
            seq = _unpack(txn.get(b"job_seq", db=self.meta) or _pack(0)) + 1
            txn.put(b"job_seq", _pack(seq), db=self.meta)
            if txn.get(job_id.encode(), db=self.jobs) is not None:
                raise ValueError(f"job id {job_id} is taken")
            job = {
                "id": job_id, "seq": seq, "name": name or job_id, "site": site, "profile": profile, "knobs": knobs,
                "out": out, "source": source, "state": JobState.ACTIVE.value, "total": 0,
                "counts": dict.fromkeys(BUCKETS, 0), "max_workers": max_workers, "created": now, "finished": None,
                "uid": uid, "names": names,
            }
            if not complete:
                job["loading"] = True
            self._add_tasks(txn, job, prompts, 1, max_attempts)
            return job

        return self._write(txn_fn)

    def add_tasks(self, job_id: str, prompts: list[str], first_index: int, max_attempts: int) -> dict[str, Any]:
        """Add the next prompts of a loading job, numbered from first_index, in one transaction."""

        def txn_fn(txn: lmdb.Transaction) -> dict[str, Any]:
            job = self._job(txn, job_id)
            if not job.get("loading") or first_index != job["total"] + 1:
                raise StateError(f"job {job_id} is not loading tasks from index {first_index}")
            self._add_tasks(txn, job, prompts, first_index, max_attempts)
            return job

        return self._write(txn_fn)

    def end_loading(self, job_id: str) -> dict[str, Any]:
        """Every task of a loading job is in: from now on it is dispatched like any other."""

        def txn_fn(txn: lmdb.Transaction) -> dict[str, Any]:
            job = self._job(txn, job_id)
            job.pop("loading", None)
            self._settle_job(txn, job, time.time())
            txn.put(job_id.encode(), _pack(job), db=self.jobs)
            return job

        return self._write(txn_fn)

    def _add_tasks(self, txn: lmdb.Transaction, job: dict[str, Any], prompts: list[str], first: int,
                   max_attempts: int) -> None:
        job_id, seq = job["id"], job["seq"]
        for index, prompt in enumerate(prompts, start=first):
            key = task_key(job_id, index)
            task = {"job": job_id, "index": index, "prompt": prompt, "state": TaskState.PENDING.value,
                    "attempts": 0, "budget": max_attempts, "worker": None, "started": None,
                    "finished": None, "error": None, "error_kind": None, "file": None,
                    "sha256": None, "bytes": None}
            txn.put(key, _pack(task), db=self.tasks)
            txn.put(_SEQ_IDX.pack(seq, index), key, db=self.fresh)
        job["total"] += len(prompts)
        job["counts"]["pending"] += len(prompts)
        txn.put(job_id.encode(), _pack(job), db=self.jobs)

    def _new_job_id(self, txn: lmdb.Transaction) -> str:
        while True:
            job_id = secrets.token_hex(4)
            if txn.get(job_id.encode(), db=self.jobs) is None:
                return job_id

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._read(lambda txn: self._job(txn, job_id))

    def list_jobs(self, *, unfinished_work: bool = False) -> list[dict[str, Any]]:
        """Every job in submit order; with unfinished_work, jobs being loaded, moved or deleted, which a start
        carries on (bulk.py), deleting ones included."""
        def txn_fn(txn: lmdb.Transaction) -> list[dict[str, Any]]:
            jobs = [_unpack(v) for _, v in txn.cursor(db=self.jobs)]
            if unfinished_work:
                return [j for j in jobs if j.get("loading") or j.get("move") or j.get("deleting")]
            return [j for j in jobs if not j.get("deleting")]
        return sorted(self._read(txn_fn), key=lambda j: j["seq"])

    def tasks_page(self, job_id: str, after: int, limit: int, state: str | None = None,
                   scan: int = 20_000) -> tuple[list[dict[str, Any]], int | None]:
        """Up to ``limit`` tasks with index > after (of ``state`` if given), in index order, looking at no more
        than ``scan`` tasks; returns them and the index to continue after, or None at the end."""

        def txn_fn(txn: lmdb.Transaction) -> tuple[list[dict[str, Any]], int | None]:
            total = self._job(txn, job_id)["total"]
            found: list[dict[str, Any]] = []
            index = after
            end = min(total, after + max(scan, limit))
            while index < end and len(found) < limit:
                index += 1
                raw = txn.get(task_key(job_id, index), db=self.tasks)
                if raw is not None:
                    task = _unpack(raw)
                    if state is None or task["state"] == state:
                        found.append(task)
            return found, (index if index < total else None)

        return self._read(txn_fn)

    def tasks_of(self, job_id: str) -> list[dict[str, Any]]:
        return self._read(lambda txn: [_unpack(raw) for _, raw in self._scan(txn, job_id)])

    def done_files(self, job_id: str) -> set[str]:
        """The file names of a job's done tasks, without keeping the tasks."""
        def txn_fn(txn: lmdb.Transaction) -> set[str]:
            tasks = (_unpack(raw) for _, raw in self._scan(txn, job_id))
            return {t["file"] for t in tasks if t["state"] == TaskState.DONE.value}
        return self._read(txn_fn)

    def get_task(self, key: bytes) -> dict[str, Any] | None:
        raw = self._read(lambda txn: txn.get(key, db=self.tasks))
        return None if raw is None else _unpack(raw)

    def set_job_state(self, job_id: str, state: JobState, max_attempts: int, batch: int | None = None) -> dict[str, Any]:
        """Pause, resume or cancel a job, moving its tasks and queue entries along.

        The job's state changes at once; its tasks move ``batch`` at a time (all at once when None), here and
        in move_tasks, so a big job never holds the store in one long transaction.
        """
        now = time.time()

        def txn_fn(txn: lmdb.Transaction) -> dict[str, Any]:
            job = self._job(txn, job_id)
            if job.get("loading"):
                raise StateError(f"job {job_id} is still being queued; try again once its submit has returned")
            old = job["state"]
            if old == state.value:
                return job
            check_job(old, state.value)
            job["state"] = state.value
            job["finished"] = now if state == JobState.CANCELLED else None
            job["move"] = {"to": state.value, "after": None, "attempts": max_attempts}
            self._move_batch(txn, job, batch, now)
            return job

        return self._write(txn_fn)

    def move_tasks(self, job_id: str, batch: int) -> tuple[dict[str, Any], bool]:
        """Move the next ``batch`` tasks of a job whose state changed; returns the job and whether all are moved."""

        def txn_fn(txn: lmdb.Transaction) -> tuple[dict[str, Any], bool]:
            job = self._job(txn, job_id)
            if not job.get("move"):
                return job, True
            return job, self._move_batch(txn, job, batch, time.time())

        return self._write(txn_fn)

    def _move_batch(self, txn: lmdb.Transaction, job: dict[str, Any], limit: int | None, now: float) -> bool:
        move = job["move"]
        target = JobState(move["to"])
        prefix = f"{job['id']}/".encode()
        after = move["after"].encode() if move["after"] else None
        cur = txn.cursor(db=self.tasks)
        found = cur.set_range(after or prefix)
        if found and cur.key() == after:
            found = cur.next()
        batch: list[tuple[bytes, bytes]] = []
        while found and cur.key().startswith(prefix) and (limit is None or len(batch) < limit):
            batch.append((cur.key(), cur.value()))
            found = cur.next()
        more = found and cur.key().startswith(prefix)
        for key, raw in batch:  # read first: writing to the tasks db moves the cursor's ground
            self._apply_job_state(txn, job, key, _unpack(raw), target, move["attempts"], now)
        if more:
            move["after"] = batch[-1][0].decode()
        else:
            del job["move"]
            self._settle_job(txn, job, now)
        txn.put(job["id"].encode(), _pack(job), db=self.jobs)
        return not more

    def _apply_job_state(self, txn: lmdb.Transaction, job: dict[str, Any], key: bytes, task: dict[str, Any],
                         state: JobState, max_attempts: int, now: float) -> None:
        st = TaskState(task["state"])
        if state == JobState.PAUSED and st in (TaskState.PENDING, TaskState.RETRY_WAIT):
            self._unqueue(txn, job, task)
        elif state == JobState.ACTIVE and st in (TaskState.PENDING, TaskState.RETRY_WAIT):
            self._enqueue(txn, job, task, key)
        elif state == JobState.ACTIVE and st in (TaskState.FAILED, TaskState.CANCELLED):
            task["budget"] = task["attempts"] + max_attempts  # fresh attempts
            self._move(txn, job, key, task, TaskState.PENDING, save_job=False, error=None, error_kind=None)
        elif state == JobState.CANCELLED and st in (TaskState.PENDING, TaskState.RETRY_WAIT, TaskState.RUNNING):
            self._move(txn, job, key, task, TaskState.CANCELLED, save_job=False, finished=now)

    # -- tasks ---------------------------------------------------------------

    def finish(self, key: bytes, state: TaskState, **fields: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Record a task's outcome; returns (task, job), or None when the outcome no longer applies."""
        now = time.time()

        def txn_fn(txn: lmdb.Transaction) -> tuple[dict[str, Any], dict[str, Any]] | None:
            raw = txn.get(key, db=self.tasks)
            if raw is None:
                return None
            task = _unpack(raw)
            if task["state"] in (TaskState.FAILED.value, TaskState.CANCELLED.value):
                return None  # a late report from a worker; only resume (set_job_state) reopens these
            job = self._job(txn, task["job"])
            try:
                task = self._move(txn, job, key, task, state, **fields)
            except IllegalTransition as exc:
                log.warning("ignored outcome %s for task %s: %s", state.value, key.decode(), exc)
                return None
            self._settle_job(txn, job, now)
            return task, job

        return self._write(txn_fn)

    def requeue_running(self) -> int:
        """At start, put tasks left running by a previous daemon back to pending, attempts kept."""

        def txn_fn(txn: lmdb.Transaction) -> int:
            moved = 0
            for _, raw in list(txn.cursor(db=self.jobs)):
                job = _unpack(raw)
                if not job["counts"]["running"]:
                    continue
                for key, task in self._job_tasks(txn, job["id"]):
                    if task["state"] == TaskState.RUNNING.value:
                        self._move(txn, job, key, task, TaskState.PENDING, worker=None)
                        moved += 1
            return moved

        return self._write(txn_fn)

    # -- bookkeeping shared by the transactions above -------------------------

    def _job(self, txn: lmdb.Transaction, job_id: str) -> dict[str, Any]:
        raw = txn.get(job_id.encode(), db=self.jobs)
        job = None if raw is None else _unpack(raw)
        if job is None or job.get("deleting"):
            raise UnknownJob(f"no job '{job_id}'")
        return job

    def _scan(self, txn: lmdb.Transaction, job_id: str) -> Iterator[tuple[bytes, bytes]]:
        """A job's task records in key order, read lazily."""
        prefix = f"{job_id}/".encode()
        cur = txn.cursor(db=self.tasks)
        if cur.set_range(prefix):
            for key, raw in cur:
                if not key.startswith(prefix):
                    return
                yield key, raw

    def _job_tasks(self, txn: lmdb.Transaction, job_id: str) -> Iterator[tuple[bytes, dict[str, Any]]]:
        for key, raw in list(self._scan(txn, job_id)):  # all read first: writes move the cursor's ground
            yield key, _unpack(raw)

    def _move(self, txn: lmdb.Transaction, job: dict[str, Any], key: bytes, task: dict[str, Any],
              new: TaskState, save_job: bool = True, **fields: Any) -> dict[str, Any]:
        """Change one task's state, its queue entries and its job's counts."""
        old = TaskState(task["state"])
        check_task(old.value, new.value)
        if old in (TaskState.PENDING, TaskState.RETRY_WAIT):
            self._unqueue(txn, job, task)
        task.update(fields)
        task["state"] = new.value
        if new in (TaskState.PENDING, TaskState.RETRY_WAIT) and job["state"] == JobState.ACTIVE.value:
            self._enqueue(txn, job, task, key)
        counts = job["counts"]
        counts[TASK_BUCKET[old]] -= 1
        counts[TASK_BUCKET[new]] += 1
        txn.put(key, _pack(task), db=self.tasks)
        if save_job:  # a batch saves its job once at the end
            txn.put(job["id"].encode(), _pack(job), db=self.jobs)
        return task

    def _settle_job(self, txn: lmdb.Transaction, job: dict[str, Any], now: float) -> None:
        """End an active job once none of its tasks is pending or running."""
        counts = job["counts"]
        if job["state"] != JobState.ACTIVE.value or counts["pending"] or counts["running"] or job.get("loading") or job.get("move"):
            return
        job["state"] = JobState.FAILED.value if counts["failed"] or counts["cancelled"] else JobState.DONE.value
        job["finished"] = now
        txn.put(job["id"].encode(), _pack(job), db=self.jobs)

    # -- browsers the workers started (so a new daemon can end leftovers) -----

    def record_browser(self, worker: int, info: dict[str, Any] | None) -> None:
        def txn_fn(txn: lmdb.Transaction) -> None:
            browsers = _unpack(txn.get(b"browsers", db=self.meta) or _pack({}))
            if info is None:
                browsers.pop(str(worker), None)
            else:
                browsers[str(worker)] = info
            txn.put(b"browsers", _pack(browsers), db=self.meta)
        self._write(txn_fn)

    def save_pacing(self, state: dict[str, Any]) -> None:
        """What pacing learned (limits.Limits.state()), so a restart starts from it."""
        self._write(lambda txn: txn.put(b"pacing", _pack(state), db=self.meta))

    def load_pacing(self) -> dict[str, Any] | None:
        raw = self._read(lambda txn: txn.get(b"pacing", db=self.meta))
        return None if raw is None else _unpack(raw)

    def record_browser_clear(self) -> None:
        self._write(lambda txn: txn.put(b"browsers", _pack({}), db=self.meta))

    def recorded_browsers(self) -> dict[str, dict[str, Any]]:
        return _unpack(self._read(lambda txn: txn.get(b"browsers", db=self.meta)) or _pack({}))

    # -- retention: the policy is in retention.py; these run it on the store thread --

    def delete_tasks(self, job_id: str, limit: int, finished_only: bool = True) -> tuple[int, bool] | None:
        """Delete up to ``limit`` of a job's events and tasks (events first), then the job itself; returns
        (tasks deleted, job gone).

        The first batch marks the job "deleting", which hides it at once. None when there is no such job, or
        with finished_only when it is not done, failed or cancelled (resumed since retention picked it).
        """
        finished = {s.value for s in FINISHED_JOB_STATES}

        def txn_fn(txn: lmdb.Transaction) -> tuple[int, bool] | None:
            raw = txn.get(job_id.encode(), db=self.jobs)
            if raw is None:
                return None
            job = _unpack(raw)
            counts = job["counts"]
            if finished_only and not job.get("deleting") and (
                    job["state"] not in finished or counts["pending"] or counts["running"]):
                return None
            job["deleting"] = True
            events = self.event_dbs.delete_job(txn, job_id, limit)  # its events leave first, a batch at a time
            room = limit - events
            batch = list(itertools.islice(self._scan(txn, job_id), room))
            for key, value in batch:
                if counts["pending"]:  # a failed submit's tasks are still queued
                    task = _unpack(value)
                    if task["state"] in (TaskState.PENDING.value, TaskState.RETRY_WAIT.value):
                        self._unqueue(txn, job, task)
                txn.delete(key, db=self.tasks)
            gone = len(batch) < room
            if gone:
                txn.delete(job_id.encode(), db=self.jobs)
            else:
                txn.put(job_id.encode(), _pack(job), db=self.jobs)
            return len(batch), gone

        return self._write(txn_fn)

    def reader_check(self) -> int:
        return self.env.reader_check()

    def usage(self) -> dict[str, int]:
        return storefile.usage(self.env, self.path, (self.meta, self.jobs, self.tasks, self.fresh, self.retry, *self.event_dbs.all()))

    def compact(self) -> dict[str, int]:
        """Rewrite the data file without its free pages (storefile), then reopen through Store's own opening code.

        Reopening this way keeps the LMDB flags and named databases exactly Store's, without the full file walk:
        LMDB itself just wrote this file.
        """
        map_size = self.env.info()["map_size"]
        sizes = storefile.compact(self.env, self.path)
        type(self).__init__(self, self.path, map_size, verify=False)
        return sizes

    def backup_age_s(self) -> float | None:
        return storefile.backup_age_s(self.path, time.time())

    def backup(self) -> int:
        """Write a compacted copy to data.mdb.prev (storefile); safe beside other calls, as LMDB copies from a read snapshot."""
        return storefile.backup(self.env, self.path)
