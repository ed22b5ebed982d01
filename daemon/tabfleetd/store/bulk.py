"""Work on a big job's tasks as a series of short store transactions, so every other call interleaves.

Creating, pausing, resuming, cancelling or deleting a job touches each of its
tasks; with a million of them one transaction held the store thread for half a
minute, and status, claims and the watchdog's probe all waited. Here each batch
of BATCH tasks is its own transaction. The job record says what is under way
(store.py), so a crash between two batches leaves a consistent store, and the
next start carries the work on (Bulk.resume_interrupted): moves are finished,
deletions completed, and a submit that never finished loading is removed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..files import outputs
from ..states import JobState
from .store import AsyncStore

log = logging.getLogger(__name__)

BATCH = 2000  # tasks per transaction: a few milliseconds of store time each


async def delete_job(store: AsyncStore, job_id: str, batch: int = BATCH, finished_only: bool = True) -> int | None:
    """Delete a job and its tasks a batch at a time; the number of tasks deleted, or None when it was left alone."""
    deleted = 0
    while True:
        outcome = await store("delete_tasks", job_id, batch, finished_only)
        if outcome is None:
            return None
        count, gone = outcome
        deleted += count
        if gone:
            return deleted


class Bulk:
    """Drives the batches; a move runs in its own task, so a client that hangs up does not leave it half done."""

    def __init__(self, store: AsyncStore, on_job: Callable[[dict[str, Any]], None],
                 forget: Callable[[list[str]], None], batch: int = BATCH) -> None:
        self.store = store
        self.on_job = on_job  # the scheduler's job_changed: its cache, events and wake-up
        self.forget = forget  # drops deleted jobs from the scheduler's maps
        self.batch = batch
        self._moves: dict[str, asyncio.Task[dict[str, Any]]] = {}

    async def create_job(self, *, prompts: list[str], max_attempts: int, **fields: Any) -> dict[str, Any]:
        """Create a job with all its tasks; a big one loads a batch per transaction and is dispatched once whole."""
        complete = len(prompts) <= self.batch
        job = await self.store("create_job", prompts=prompts[:self.batch], max_attempts=max_attempts,
                               complete=complete, **fields)
        if complete:
            return job
        try:
            for start in range(self.batch, len(prompts), self.batch):
                job = await self.store("add_tasks", job["id"], prompts[start:start + self.batch], start + 1, max_attempts)
            return await self.store("end_loading", job["id"])
        except Exception:
            # A submit is all or nothing. (Cancelled by a shutdown, it is removed at the next start instead.)
            await delete_job(self.store, job["id"], self.batch, finished_only=False)
            raise

    async def set_state(self, job_id: str, state: JobState, max_attempts: int) -> dict[str, Any]:
        """Pause, resume or cancel: the state changes in the first transaction, the tasks follow in batches."""
        job = await self.store("set_job_state", job_id, state, max_attempts, self.batch)
        self.on_job(job)
        if job.get("move"):
            job = await asyncio.shield(self._move(job_id))
        return job

    def _move(self, job_id: str) -> asyncio.Task[dict[str, Any]]:
        task = self._moves.get(job_id)
        if task is None or task.done():
            task = asyncio.create_task(self._run_move(job_id), name=f"move-{job_id}")
            self._moves[job_id] = task
        return task

    async def _run_move(self, job_id: str) -> dict[str, Any]:
        try:
            while True:
                job, done = await self.store("move_tasks", job_id, self.batch)
                self.on_job(job)
                if done:
                    return job
        finally:
            if self._moves.get(job_id) is asyncio.current_task():
                del self._moves[job_id]

    async def delete(self, job_id: str, finished_only: bool = True) -> int | None:
        deleted = await delete_job(self.store, job_id, self.batch, finished_only)
        if deleted is not None:
            self.forget([job_id])
        return deleted

    async def resume_interrupted(self) -> None:
        """At start: finish the moves and deletions a stop interrupted, and remove jobs whose submit never finished."""
        loop = asyncio.get_running_loop()
        for job in await self.store("list_jobs", unfinished_work=True):
            try:
                if job.get("deleting"):
                    await self.delete(job["id"], finished_only=False)
                elif job.get("loading"):
                    log.warning("job %s was still being queued (%d tasks in) when the daemon stopped; it is removed, "
                                "submit it again", job["id"], job["total"])
                    await self.delete(job["id"], finished_only=False)
                    await loop.run_in_executor(None, outputs.release_out_dir, Path(job["out"]), job["id"], False)
                elif job.get("move"):
                    log.info("carrying on moving job %s's tasks to %s", job["id"], job["move"]["to"])
                    await self._move(job["id"])
            except Exception:
                log.exception("could not finish the interrupted work on job %s; trying again at the next start", job["id"])
