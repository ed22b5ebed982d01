"""The LMDB store: jobs, tasks and the queues, opened only by the daemon's main process.

Named databases:
    meta    counters and the browsers the workers started
    jobs    job id -> job map (with per-state counts, so status never scans tasks)
    tasks   "JOB/NNNNNN" -> task map
    fresh   job seq (8 bytes) + index (4 bytes) -> task key; pending tasks in input order
    retry   ready time in ms (8) + job seq (8) + index (4) -> task key; tasks in retry_wait

Every state change is one synced write transaction, checked against states.py.
All methods are synchronous; the daemon calls them on one dedicated thread.

meta's "format" is the store's format (FORMAT).  A change that only adds
fields keeps it (a newer tabfleetd reads them with defaults, an older one
ignores them); one an older tabfleetd would misread raises it, and then an
older tabfleetd refuses the store instead of damaging it.
"""

from __future__ import annotations

import logging
import secrets
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import lmdb
import msgpack

from .errors import IllegalTransition, StoreFormatError, UnknownJob
from .states import BUCKETS, TASK_BUCKET, JobState, TaskState, check_job, check_task

log = logging.getLogger(__name__)
R = TypeVar("R")

FORMAT = 1
_SEQ_IDX = struct.Struct(">QI")
_READY_SEQ_IDX = struct.Struct(">QQI")


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False)


def task_key(job_id: str, index: int) -> bytes:
    return f"{job_id}/{index:06d}".encode()


class Store:
    def __init__(self, path: Path, map_size: int = 64 << 20) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.env = lmdb.open(str(path), map_size=map_size, max_dbs=8, subdir=True, sync=True, metasync=True, readahead=False)
        stale = self.env.reader_check()
        if stale:
            log.warning("cleared %d stale LMDB reader slots", stale)
        self.meta = self.env.open_db(b"meta")
        self.jobs = self.env.open_db(b"jobs")
        self.tasks = self.env.open_db(b"tasks")
        self.fresh = self.env.open_db(b"fresh")
        self.retry = self.env.open_db(b"retry")
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
        """Run fn in one synced write transaction, growing the map when it is full."""
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    return fn(txn)
            except lmdb.MapFullError:
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
                   names: int = 1) -> dict[str, Any]:
        """Queue a new job and all its tasks in one transaction; `names` is the output name version (outputs.py)."""
        now = time.time()

        def txn_fn(txn: lmdb.Transaction) -> dict[str, Any]:
            seq = _unpack(txn.get(b"job_seq", db=self.meta) or _pack(0)) + 1
            txn.put(b"job_seq", _pack(seq), db=self.meta)
            if txn.get(job_id.encode(), db=self.jobs) is not None:
                raise ValueError(f"job id {job_id} is taken")
            job = {
                "id": job_id, "seq": seq, "name": name or job_id, "site": site, "profile": profile, "knobs": knobs,
                "out": out, "source": source, "state": JobState.ACTIVE.value, "total": len(prompts),
                "counts": dict.fromkeys(BUCKETS, 0) | {"pending": len(prompts)},
                "max_workers": max_workers, "created": now, "finished": None, "names": names,
            }
            for index, prompt in enumerate(prompts, start=1):
                key = task_key(job_id, index)
                task = {"job": job_id, "index": index, "prompt": prompt, "state": TaskState.PENDING.value,
                        "attempts": 0, "budget": max_attempts, "worker": None, "started": None,
                        "finished": None, "error": None, "error_kind": None, "file": None,
                        "sha256": None, "bytes": None}
                txn.put(key, _pack(task), db=self.tasks)
                txn.put(_SEQ_IDX.pack(seq, index), key, db=self.fresh)
            txn.put(job_id.encode(), _pack(job), db=self.jobs)
            return job

        return self._write(txn_fn)

    def _new_job_id(self, txn: lmdb.Transaction) -> str:
        while True:
            job_id = secrets.token_hex(4)
            if txn.get(job_id.encode(), db=self.jobs) is None:
                return job_id

    def get_job(self, job_id: str) -> dict[str, Any]:
        raw = self._read(lambda txn: txn.get(job_id.encode(), db=self.jobs))
        if raw is None:
            raise UnknownJob(f"no job '{job_id}'")
        return _unpack(raw)

    def list_jobs(self) -> list[dict[str, Any]]:
        def txn_fn(txn: lmdb.Transaction) -> list[dict[str, Any]]:
            return [_unpack(v) for _, v in txn.cursor(db=self.jobs)]
        return sorted(self._read(txn_fn), key=lambda j: j["seq"])

    def tasks_of(self, job_id: str) -> list[dict[str, Any]]:
        prefix = f"{job_id}/".encode()

        def txn_fn(txn: lmdb.Transaction) -> list[dict[str, Any]]:
            cur = txn.cursor(db=self.tasks)
            out = []
            if cur.set_range(prefix):
                for key, value in cur:
                    if not key.startswith(prefix):
                        break
                    out.append(_unpack(value))
            return out
        return self._read(txn_fn)

    def get_task(self, key: bytes) -> dict[str, Any] | None:
        raw = self._read(lambda txn: txn.get(key, db=self.tasks))
        return None if raw is None else _unpack(raw)

    def set_job_state(self, job_id: str, state: JobState, max_attempts: int) -> dict[str, Any]:
        """Pause, resume or cancel a job, moving its tasks and queue entries along."""
        now = time.time()

        def txn_fn(txn: lmdb.Transaction) -> dict[str, Any]:
            job = self._job(txn, job_id)
            old = job["state"]
            if old == state.value:
                return job
            check_job(old, state.value)
            job["state"] = state.value
            job["finished"] = now if state == JobState.CANCELLED else None
            txn.put(job_id.encode(), _pack(job), db=self.jobs)
            for key, task in self._job_tasks(txn, job_id):
                st = TaskState(task["state"])
                if state == JobState.PAUSED and st in (TaskState.PENDING, TaskState.RETRY_WAIT):
                    self._unqueue(txn, job, task)
                elif state == JobState.ACTIVE and st in (TaskState.PENDING, TaskState.RETRY_WAIT):
                    self._enqueue(txn, job, task, key)
                elif state == JobState.ACTIVE and st in (TaskState.FAILED, TaskState.CANCELLED):
                    task["budget"] = task["attempts"] + max_attempts  # fresh attempts
                    self._move(txn, job, key, task, TaskState.PENDING, error=None, error_kind=None)
                elif state == JobState.CANCELLED and st in (TaskState.PENDING, TaskState.RETRY_WAIT, TaskState.RUNNING):
                    self._move(txn, job, key, task, TaskState.CANCELLED, finished=now)
            self._settle_job(txn, job, now)
            return job

        return self._write(txn_fn)

    # -- tasks ---------------------------------------------------------------

    def claim(self, worker: int, now: float, skip_jobs: frozenset[str] = frozenset()) -> dict[str, Any] | None:
        """Take the next task for a worker: a retry whose time has come, else the oldest fresh task."""

        def txn_fn(txn: lmdb.Transaction) -> dict[str, Any] | None:
            key = self._next_key(txn, now, skip_jobs)
            return None if key is None else self._claim(txn, key, worker, now)

        return self._write(txn_fn)

    def peek(self, now: float, skip_jobs: frozenset[str] = frozenset()) -> bytes | None:
        """The key claim() would take next, without taking it."""
        return self._read(lambda txn: self._next_key(txn, now, skip_jobs))

    def claim_key(self, key: bytes, worker: int, now: float) -> dict[str, Any] | None:
        """Take one given task if it is still queued."""

        def txn_fn(txn: lmdb.Transaction) -> dict[str, Any] | None:
            raw = txn.get(key, db=self.tasks)
            if raw is None or _unpack(raw)["state"] not in (TaskState.PENDING.value, TaskState.RETRY_WAIT.value):
                return None
            return self._claim(txn, key, worker, now)

        return self._write(txn_fn)

    def _claim(self, txn: lmdb.Transaction, key: bytes, worker: int, now: float) -> dict[str, Any]:
        task = _unpack(txn.get(key, db=self.tasks))
        job = self._job(txn, task["job"])
        task["attempts"] += 1  # counted before the attempt runs, so a crash cannot hide it
        return self._move(txn, job, key, task, TaskState.RUNNING, worker=worker, started=now, finished=None)

    def _next_key(self, txn: lmdb.Transaction, now: float, skip_jobs: frozenset[str]) -> bytes | None:
        now_ms = int(now * 1000)
        for ready_key, key in txn.cursor(db=self.retry):
            if _READY_SEQ_IDX.unpack(ready_key)[0] > now_ms:
                break
            if key.split(b"/")[0].decode() not in skip_jobs:
                return key
        for _, key in txn.cursor(db=self.fresh):
            if key.split(b"/")[0].decode() not in skip_jobs:
                return key
        return None

    def next_retry_at(self) -> float | None:
        def txn_fn(txn: lmdb.Transaction) -> float | None:
            cur = txn.cursor(db=self.retry)
            return _READY_SEQ_IDX.unpack(cur.key())[0] / 1000 if cur.first() else None
        return self._read(txn_fn)

    def has_queued(self) -> bool:
        return self._read(lambda txn: txn.cursor(db=self.fresh).first() or txn.cursor(db=self.retry).first())

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
        if raw is None:
            raise UnknownJob(f"no job '{job_id}'")
        return _unpack(raw)

    def _job_tasks(self, txn: lmdb.Transaction, job_id: str) -> Iterator[tuple[bytes, dict[str, Any]]]:
        prefix = f"{job_id}/".encode()
        cur = txn.cursor(db=self.tasks)
        if not cur.set_range(prefix):
            return
        for key, raw in list(cur):
            if not key.startswith(prefix):
                break
            yield key, _unpack(raw)

    def _move(self, txn: lmdb.Transaction, job: dict[str, Any], key: bytes, task: dict[str, Any],
              new: TaskState, **fields: Any) -> dict[str, Any]:
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
        txn.put(job["id"].encode(), _pack(job), db=self.jobs)
        return task

    def _enqueue(self, txn: lmdb.Transaction, job: dict[str, Any], task: dict[str, Any], key: bytes) -> None:
        if task["state"] == TaskState.RETRY_WAIT.value:
            ready_ms = int(task.get("ready_at", 0) * 1000)
            txn.put(_READY_SEQ_IDX.pack(ready_ms, job["seq"], task["index"]), key, db=self.retry)
        else:
            txn.put(_SEQ_IDX.pack(job["seq"], task["index"]), key, db=self.fresh)

    def _unqueue(self, txn: lmdb.Transaction, job: dict[str, Any], task: dict[str, Any]) -> None:
        if task["state"] == TaskState.RETRY_WAIT.value:
            ready_ms = int(task.get("ready_at", 0) * 1000)
            txn.delete(_READY_SEQ_IDX.pack(ready_ms, job["seq"], task["index"]), db=self.retry)
        else:
            txn.delete(_SEQ_IDX.pack(job["seq"], task["index"]), db=self.fresh)

    def _settle_job(self, txn: lmdb.Transaction, job: dict[str, Any], now: float) -> None:
        """End an active job once none of its tasks is pending or running."""
        counts = job["counts"]
        if job["state"] != JobState.ACTIVE.value or counts["pending"] or counts["running"]:
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

    def delete_jobs(self, job_ids: list[str]) -> int:
        """Delete finished jobs and all their tasks in one transaction; returns the tasks deleted."""
        finished = {JobState.DONE.value, JobState.FAILED.value, JobState.CANCELLED.value}

        def txn_fn(txn: lmdb.Transaction) -> int:
            deleted = 0
            for job_id in job_ids:
                raw = txn.get(job_id.encode(), db=self.jobs)
                if raw is None or _unpack(raw)["state"] not in finished:
                    continue  # gone already, or resumed since it was picked
                prefix = f"{job_id}/".encode()
                cur = txn.cursor(db=self.tasks)
                if cur.set_range(prefix):
                    while cur.key().startswith(prefix):
                        deleted += 1
                        if not cur.delete():  # delete() moves to the next record; False past the end
                            break
                txn.delete(job_id.encode(), db=self.jobs)
            return deleted
        return self._write(txn_fn)

    def reader_check(self) -> int:
        return self.env.reader_check()

    def usage(self) -> dict[str, int]:
        from .retention import usage
        return usage(self)

    def compact(self) -> dict[str, int]:
        from .retention import compact
        return compact(self)


class AsyncStore:
    """Runs Store methods on one dedicated thread so LMDB's fsyncs never block the event loop."""

    def __init__(self, store: Store) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")

    async def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        import asyncio
        import functools

        fn = functools.partial(getattr(self.store, method), *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.store.close()
