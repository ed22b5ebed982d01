"""The Store's queues: which task a worker takes next, and how a task goes into and out of them.

fresh holds pending tasks in input order (job seq + index); retry holds tasks in retry_wait by the time they are
ready (ms + job seq + index).  Mixed into Store, run on the store thread like the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import lmdb

from .records import READY_SEQ_IDX as _READY_SEQ_IDX, SEQ_IDX as _SEQ_IDX, unpack as _unpack
from ..states import JobState, TaskState

R = TypeVar("R")


class TaskQueue:
    """Claiming tasks off the queues (mixed into Store)."""

    jobs: Any
    tasks: Any
    fresh: Any
    retry: Any

    if TYPE_CHECKING:  # Store's own
        def _write(self, fn: Callable[[lmdb.Transaction], R]) -> R: ...
        def _read(self, fn: Callable[[lmdb.Transaction], R]) -> R: ...
        def _job(self, txn: lmdb.Transaction, job_id: str) -> dict[str, Any]: ...
        def _move(self, txn: lmdb.Transaction, job: dict[str, Any], key: bytes, task: dict[str, Any],
                  new: TaskState, save_job: bool = True, **fields: Any) -> dict[str, Any]: ...

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
            if not self._dispatchable(txn, key.split(b"/")[0]):
                return None  # paused or cancelled since it was peeked; its move takes care of it
            return self._claim(txn, key, worker, now)

        return self._write(txn_fn)

    def _claim(self, txn: lmdb.Transaction, key: bytes, worker: int, now: float) -> dict[str, Any]:
        task = _unpack(txn.get(key, db=self.tasks))
        job = self._job(txn, task["job"])
        task["attempts"] += 1  # counted before the attempt runs, so a crash cannot hide it
        return self._move(txn, job, key, task, TaskState.RUNNING, worker=worker, started=now, finished=None)

    def _next_key(self, txn: lmdb.Transaction, now: float, skip_jobs: frozenset[str]) -> bytes | None:
        now_ms = int(now * 1000)
        verdicts: dict[bytes, bool] = {}

        def wanted(key: bytes) -> bool:
            job_id = key.split(b"/")[0]
            if job_id not in verdicts:
                verdicts[job_id] = job_id.decode() not in skip_jobs and self._dispatchable(txn, job_id)
            return verdicts[job_id]

        for ready_key, key in txn.cursor(db=self.retry):
            if _READY_SEQ_IDX.unpack(ready_key)[0] > now_ms:
                break
            if wanted(key):
                return key
        cur = txn.cursor(db=self.fresh)
        found = cur.first()
        while found:
            key = cur.value()
            if wanted(key):
                return key
            # Jump past the rest of that job's tasks: a skipped job may have a million of them.
            found = cur.set_range(_SEQ_IDX.pack(_SEQ_IDX.unpack(cur.key())[0] + 1, 0))
        return None

    def _dispatchable(self, txn: lmdb.Transaction, job_id: bytes) -> bool:
        raw = txn.get(job_id, db=self.jobs)
        if raw is None:
            return False
        job = _unpack(raw)
        return job["state"] == JobState.ACTIVE.value and not job.get("loading") and not job.get("deleting")

    def next_retry_at(self) -> float | None:
        def txn_fn(txn: lmdb.Transaction) -> float | None:
            cur = txn.cursor(db=self.retry)
            return _READY_SEQ_IDX.unpack(cur.key())[0] / 1000 if cur.first() else None
        return self._read(txn_fn)

    def has_queued(self) -> bool:
        return self._read(lambda txn: txn.cursor(db=self.fresh).first() or txn.cursor(db=self.retry).first())

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
