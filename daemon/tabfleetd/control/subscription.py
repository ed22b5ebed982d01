"""A subscription: the fleet's state pushed to one client as snapshots, with the events since the last one."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from ..store.events import EventLog
from ..states import FINISHED_JOB_STATES

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 0.1
MAX_INTERVAL_S = 60.0
# After an event, wait this long for the rest of its burst, so ten results finishing together make one frame.
BURST_S = 0.15
EVENT_QUEUE = 500
MAX_EVENTS_PER_FRAME = 50
# With no job named, finished jobs beyond this many (newest kept) are left out: a daemon's history grows for months.
FINISHED_JOBS_SHOWN = 5

Snapshot = Callable[[], Awaitable[dict[str, Any]]]
_FINISHED = frozenset(s.value for s in FINISHED_JOB_STATES)


class Subscription:
    """Pushes a snapshot at least every `interval_s`, and soon after any event about the watched job.

    Snapshots are built when the client is ready for one, never queued: a slow
    client gets fewer, fresher snapshots.  Events wait on a bounded queue that
    loses its oldest when full; a frame says so with "missed_events".
    """

    def __init__(self, events: EventLog, snapshot: Snapshot, job: str | None, interval_s: float,
                 after: int | None = None) -> None:
        self.events = events
        self.snapshot = snapshot
        self.job = job
        self.after = after  # a client that has read events up to this seq gets the later ones in its first frame
        self.interval_s = min(max(interval_s, MIN_INTERVAL_S), MAX_INTERVAL_S)

    async def items(self) -> AsyncGenerator[dict[str, Any], None]:
        queue = self.events.subscribe(EVENT_QUEUE)
        log.debug("subscription to %s opened (%d open)", self.job or "all jobs", len(self.events.subscribers))
        last_seq = self.events.events[-1]["seq"] if self.events.events else 0
        try:
            fresh = [e for e in self.events.recent(None, 0, None, self.after) if self._wanted(e)] \
                if self.after is not None else []
            missed = False
            while True:
                frame = await self.snapshot()
                if self.job is None:
                    frame["jobs"] = trim_finished(frame["jobs"])
                frame["events"] = fresh[-MAX_EVENTS_PER_FRAME:]
                frame["missed_events"] = missed or len(fresh) > MAX_EVENTS_PER_FRAME
                frame["time"] = time.time()
                yield frame
                if self.job is not None and frame["jobs"] and frame["jobs"][0]["state"] in _FINISHED:
                    return
                fresh, last_seq, missed = await self._wait(queue, last_seq)
        finally:
            self.events.unsubscribe(queue)
            log.debug("subscription to %s closed (%d open)", self.job or "all jobs", len(self.events.subscribers))

    async def _wait(self, queue: asyncio.Queue[dict[str, Any]], last_seq: int) -> tuple[list[dict[str, Any]], int, bool]:
        """Wait out the interval or until an event about our job (and its burst); return the events taken."""
        deadline = time.monotonic() + self.interval_s
        taken: list[dict[str, Any]] = []
        while not any(self._wanted(e) for e in taken):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                taken.append(await asyncio.wait_for(queue.get(), left))
            except asyncio.TimeoutError:
                break
        else:
            if taken:
                await asyncio.sleep(BURST_S)
        while not queue.empty():
            taken.append(queue.get_nowait())
        # Every event passes through this queue in seq order, so a gap means the queue overflowed.
        missed = bool(taken) and taken[0]["seq"] != last_seq + 1
        if taken:
            last_seq = taken[-1]["seq"]
        return [e for e in taken if self._wanted(e)], last_seq, missed

    def _wanted(self, event: dict[str, Any]) -> bool:
        # Worker events (no job) matter to every watcher: they explain a stall.
        return self.job is None or event.get("job") in (None, self.job)


def trim_finished(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Unfinished jobs, plus the few that finished last, in their original order."""
    finished = sorted((j for j in jobs if j["state"] in _FINISHED), key=lambda j: j.get("finished") or 0)
    keep = {j["id"] for j in finished[-FINISHED_JOBS_SHOWN:]}
    return [j for j in jobs if j["state"] not in _FINISHED or j["id"] in keep]
