"""Keeps the event log in the store: hands events over, flushes, reads past memory, prunes, marks starts and stops.

The in-memory log (events.py) serves live readers; this puts every event in
the store too (eventstore.py), so `events` after a restart shows what came
before it. The restart itself is two events: `daemon_stopped` at a clean stop,
and `daemon_started`, which says whether the run before it ended cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import __version__

if TYPE_CHECKING:
    from ..settings.config import Config
    from .events import EventLog
    from .store import AsyncStore

log = logging.getLogger(__name__)

FLUSH_S = 1.0  # events no other write took along are written this often: a crash loses at most this much
READ_MAX = 5000  # events one `events` call returns at most; a client pages back with `before`
PRUNE_BATCH = 2000  # events deleted per transaction, so pruning never holds the store for long


class EventKeeper:
    """The daemon's link between its event log and the store."""

    def __init__(self, events: EventLog, store: AsyncStore, config: Config) -> None:
        self.events = events
        self.store = store
        self.config = config

    async def open(self) -> None:
        """Carry on the seqs of the stored events, keep every new event, and say that the daemon started."""
        self.events.continue_after(await self.store("last_event_seq"))
        previous = await self.store("mark_started", {"pid": os.getpid(), "started": time.time(), "version": __version__})
        if self.config.events_max:
            self.events.listen(self.store.store.pending_events.add)
        fields: dict[str, Any] = {"version": __version__, "pid": os.getpid(), "previous_clean": previous["clean"]}
        if previous["clean"] is False:
            fields["previous_pid"] = previous.get("pid")
            log.warning("the previous tabfleetd (pid %s) did not stop cleanly", previous.get("pid"))
        self.events.emit("daemon_started", **fields)

    async def run(self) -> None:
        """Write what waits about once a second, when no other store write took it along."""
        while True:
            await asyncio.sleep(FLUSH_S)
            try:
                await self.store("flush_events")
            except Exception:
                log.exception("could not write events to the store; trying again")

    async def close(self) -> None:
        """A clean stop: daemon_stopped, written with every waiting event and the mark of a clean end."""
        self.events.emit("daemon_stopped", pid=os.getpid())
        await self.store("mark_stopped", time.time())

    async def read(self, job: str | None, limit: int, kinds: list[str] | None, after: int,
                   before: int | None) -> list[dict[str, Any]]:
        """The newest `limit` (0 or over READ_MAX: READ_MAX) events with after < seq < before, oldest first:
        from memory, and from the store for what memory no longer (or never) held."""
        limit = min(limit or READ_MAX, READ_MAX)
        memory = self.events.recent(job, limit, kinds, after, before)
        floor = self.events.floor()  # memory holds every event from this seq on, stored or still waiting
        upto = floor if before is None else min(before, floor)
        if len(memory) >= limit or after + 1 >= upto:
            return memory
        stored = await self.store("read_events", job, limit - len(memory), kinds, after, upto)
        return stored + memory


async def prune_stored(store: AsyncStore, config: Config, clock: Callable[[], float] = time.time,
                       batch: int = PRUNE_BATCH) -> int:
    """Delete stored events beyond `events_max` or older than `events_max_age_h`, a batch per transaction."""
    older_than = clock() - config.events_max_age_h * 3600 if config.events_max_age_h else 0.0
    pruned = 0
    while True:
        deleted, more = await store("prune_events", config.events_max, older_than, batch)
        pruned += deleted
        if not more:
            return pruned
