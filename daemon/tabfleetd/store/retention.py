"""Housekeeping for long runs: prune finished jobs, clear stale LMDB readers, compact a mostly free store.

Operators leave the daemon up for days, so nothing may grow without bound:

- a job that ended (done, failed, cancelled) more than `job_retention_h` hours
  ago is deleted from the store with all its tasks (its images and manifest
  stay on disk), and forgotten by the scheduler;
- LMDB never shrinks its file, so once free pages make up more than
  `compact_free_ratio` of a file over `compact_min_mb`, the store compacts it
  (Store.compact, which storefile.py carries out: here is only the decision);
- stored events beyond `events_max`, or older than `events_max_age_h`, are
  pruned oldest first, a batch per transaction (a job's own events leave with the job);
- stale reader slots left by a killed process are cleared, as they pin old pages;
- malloc's free pages go back to the system after each pass (malloctune.py);
- a compacted copy of the store, data.mdb.prev, is written at each compaction and
  whenever the last one is older than `backup_interval_h`, so a damaged store can
  be restored (storefile.py).

Jobs are deleted a batch of tasks per transaction (bulk.py), so pruning a huge
job never holds the store thread for long; the copy runs beside the store thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .. import malloctune
from .bulk import delete_job
from .eventkeeper import prune_stored
from ..states import FINISHED_JOB_STATES

if TYPE_CHECKING:
    from ..settings.config import Config
    from .store import AsyncStore

log = logging.getLogger(__name__)

FIRST_PASS_DELAY_S = 60.0  # let a restarted daemon recover and start its workers first
_FINISHED = frozenset(s.value for s in FINISHED_JOB_STATES)


def expired_jobs(jobs: Iterable[Mapping[str, Any]], now: float, retention_h: float) -> list[str]:
    """Ids of jobs that ended more than retention_h hours before now; none when retention_h is 0."""
    if retention_h <= 0:
        return []
    before = now - retention_h * 3600
    return [j["id"] for j in jobs
            if j["state"] in _FINISHED and j.get("finished") is not None and j["finished"] < before
            and not j["counts"].get("pending") and not j["counts"].get("running")]


def should_compact(use: Mapping[str, int], free_ratio: float, min_mb: int) -> bool:
    """Compact when the file is big enough to matter and mostly free pages."""
    if free_ratio <= 0 or use["file_bytes"] < min_mb << 20:
        return False
    return (use["file_bytes"] - use["used_bytes"]) >= free_ratio * use["file_bytes"]


class Housekeeper:
    """Runs one housekeeping pass every `housekeeping_interval_s` on the daemon's loop."""

    def __init__(self, store: AsyncStore, config: Config, forget: Callable[[list[str]], None],
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.config = config
        self.forget = forget  # drops pruned jobs from the scheduler's in-memory maps
        self.clock = clock
        self.pruned_jobs = 0
        self.compactions = 0

    async def run(self) -> None:
        await asyncio.sleep(min(FIRST_PASS_DELAY_S, self.config.housekeeping_interval_s))
        while True:
            try:
                await self.once()
            except Exception:
                log.exception("housekeeping failed; trying again next time")
            await asyncio.sleep(self.config.housekeeping_interval_s)

    async def once(self) -> dict[str, Any]:
        """Prune expired jobs, clear stale readers, compact if mostly free; returns what was done."""
        cfg = self.config
        expired = expired_jobs(await self.store("list_jobs"), self.clock(), cfg.job_retention_h)
        tasks = 0
        pruned = []
        for job_id in expired:
            deleted = await delete_job(self.store, job_id)
            if deleted is not None:  # None: resumed since it was picked
                tasks += deleted
                pruned.append(job_id)
        self.forget(pruned)
        if pruned:
            self.pruned_jobs += len(pruned)
            log.info("pruned %d finished jobs (%d tasks) older than %g h", len(pruned), tasks, cfg.job_retention_h)
        events = await prune_stored(self.store, cfg, self.clock)
        if events:
            log.info("pruned %d stored events (beyond %d, or older than %g h)", events, cfg.events_max,
                     cfg.events_max_age_h)
        stale = await self.store("reader_check")
        if stale:
            log.warning("cleared %d stale LMDB reader slots", stale)
        use = await self.store("usage")
        compacted = None
        if should_compact(use, cfg.compact_free_ratio, cfg.compact_min_mb):
            compacted = await self.store("compact")
            self.compactions += 1
        backup = None
        age = await self.store("backup_age_s")
        if compacted or age is None or (cfg.backup_interval_h and age > cfg.backup_interval_h * 3600):
            # Beside the store thread: LMDB copies from a read snapshot while writes go on.
            backup = await self.store.aside("backup")
            log.info("store copied to data.mdb.prev (%.1f MiB)", backup / 2**20)
        # What the pass (and the time since the last) freed goes back to the system, not only to malloc's free lists.
        trimmed = await asyncio.get_running_loop().run_in_executor(None, malloctune.trim)
        return {"pruned_jobs": len(pruned), "pruned_tasks": tasks, "pruned_events": events, "stale_readers": stale,
                "usage": use, "compacted": compacted, "backup_bytes": backup, "trimmed": trimmed}
