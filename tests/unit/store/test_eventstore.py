"""Unit tests for events kept in a real LMDB store: writes ride along, reads page, pruning by count, age and job."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tabfleetd.settings.config import Config
from tabfleetd.store.eventkeeper import EventKeeper, prune_stored
from tabfleetd.store.events import EventLog
from tabfleetd.store.retention import Housekeeper
from tabfleetd.states import TaskState
from tabfleetd.store.store import AsyncStore, Store, task_key

HOUR = 3600.0


def add(store: Store, first: int, count: int, job: str | None = None, at: float | None = None,
        kind: str = "task_done") -> None:
    """Hand `count` events from seq `first` to the store's pending buffer, as the daemon's listener does."""
    for seq in range(first, first + count):
        store.pending_events.add({"seq": seq, "time": time.time() if at is None else at, "kind": kind,
                                  **({"job": job, "index": seq} if job else {})})


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [e["seq"] for e in events]


def test_events_ride_along_with_the_next_write_and_survive_reopening(tmp_path: Path) -> None:
    """Pending events are written by the next store write, not one transaction each, and are there after reopening."""
    store = Store(tmp_path / "store")
    add(store, 1, 50, job="j")
    commits = store.commits
    store.save_pacing({"x": 1})  # any write takes the waiting events along
    assert store.commits == commits + 1 and len(store.pending_events) == 0
    assert store.flush_events() == 0  # nothing waited: no empty transaction
    assert store.commits == commits + 1
    add(store, 51, 3)
    assert store.flush_events() == 3
    store.close()
    reopened = Store(tmp_path / "store")
    try:
        assert reopened.last_event_seq() == 53 and reopened.event_count() == 53
        assert seqs(reopened.read_events(limit=5000)) == list(range(1, 54))
    finally:
        reopened.close()


def test_a_failed_write_keeps_its_events_for_the_next(store: Store) -> None:
    """Events taken by a transaction that raised go back, in order, and the next write stores them."""
    add(store, 1, 4)

    def fails(txn: Any) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store._write(fails)
    assert len(store.pending_events) == 4
    add(store, 5, 1)
    store.flush_events()
    assert seqs(store.read_events(limit=100)) == [1, 2, 3, 4, 5]


def test_read_events_pages_back_by_job_kind_and_seq(store: Store) -> None:
    """read_events gives the newest `limit` of a job or some kinds between two seqs, oldest first."""
    for seq in range(1, 21):
        add(store, seq, 1, job="a" if seq % 2 else "b", kind="task_done" if seq % 3 else "task_retry")
    store.flush_events()
    assert seqs(store.read_events(limit=3)) == [18, 19, 20]
    assert seqs(store.read_events(limit=3, before=18)) == [15, 16, 17]
    assert seqs(store.read_events("a", limit=3)) == [15, 17, 19]
    assert seqs(store.read_events("b", limit=100, after=14, before=20)) == [16, 18]
    assert seqs(store.read_events(limit=100, kinds=["task_retry"], after=10)) == [12, 15, 18]
    assert store.read_events("nosuchjob", limit=10) == []


def test_prune_by_count_keeps_the_newest_in_small_batches(store: Store) -> None:
    """Beyond `keep` events the oldest go, at most `limit` per transaction, and with them their job index entries."""
    add(store, 1, 25, job="j")
    store.flush_events()
    assert store.prune_events(10, 0.0, 6) == (6, True)
    assert store.prune_events(10, 0.0, 6) == (6, True)
    assert store.prune_events(10, 0.0, 6) == (3, False)
    assert store.event_count() == 10
    assert seqs(store.read_events(limit=100)) == list(range(16, 26))
    assert seqs(store.read_events("j", limit=100)) == list(range(16, 26))
    assert store.prune_events(10, 0.0, 6) == (0, False)


def test_prune_by_age_drops_only_the_old(store: Store) -> None:
    """Events from before the cut-off go even under the count cap; newer ones stay."""
    now = time.time()
    add(store, 1, 5, at=now - 10 * HOUR)
    add(store, 6, 3, job="j", at=now - 2 * HOUR)
    add(store, 9, 2, at=now)
    store.flush_events()
    assert store.prune_events(1000, now - 5 * HOUR, 100) == (5, False)
    assert seqs(store.read_events(limit=100)) == [6, 7, 8, 9, 10]


def test_housekeeper_prunes_events_by_config_count_and_age(tmp_path: Path) -> None:
    """A housekeeping pass applies events_max and events_max_age_h through the store thread, in batches."""
    store = Store(tmp_path / "store")
    now = time.time()
    add(store, 1, 30, at=now - 100 * HOUR)
    add(store, 31, 70, at=now)
    store.flush_events()
    config = Config(state_dir=tmp_path, events_max=50, events_max_age_h=48.0, job_retention_h=0)

    async def passes() -> tuple[dict[str, Any], int]:
        async_store = AsyncStore(store)
        try:
            report = await Housekeeper(async_store, config, lambda ids: None).once()
            again = await prune_stored(async_store, config, batch=7)
            return report, again
        finally:
            async_store.close()

    report, again = asyncio.run(passes())
    assert report["pruned_events"] == 50 and again == 0
    reopened = Store(tmp_path / "store")
    try:
        assert seqs(reopened.read_events(limit=1000)) == list(range(51, 101))
    finally:
        reopened.close()


def test_a_deleted_job_takes_its_events_along_in_batches(store: Store) -> None:
    """Deleting a finished job deletes its events (a batch per transaction) but not other jobs' or daemon events."""
    job = store.create_job(job_id="j1", name="", site="demo", knobs={}, out="/tmp/o", prompts=["a", "b", "c"],
                           max_workers=0, max_attempts=3, source="p.txt")
    for _ in range(3):
        task = store.claim(1, time.time())
        assert task is not None
        store.finish(task_key(job["id"], task["index"]), TaskState.DONE, file="f.png", finished=time.time())
    add(store, 1, 7, job="j1")
    add(store, 8, 2, job="other")
    add(store, 10, 1, kind="daemon_started")
    store.flush_events()
    outcomes = []
    while not outcomes or not outcomes[-1][1]:
        outcomes.append(store.delete_tasks("j1", 4))
    assert outcomes == [(0, False), (1, False), (2, True)]  # 4 events, then 3 events and a task, then 2 tasks
    assert store.read_events("j1", limit=100) == []
    assert seqs(store.read_events(limit=100)) == [8, 9, 10]


def test_keeper_reads_memory_then_the_store_and_marks_clean_and_unclean_ends(tmp_path: Path) -> None:
    """After a restart the keeper carries on the seqs, answers from memory and the store together, and says
    whether the run before ended cleanly."""
    config = Config(state_dir=tmp_path)

    async def run(store: Store, body: Any) -> Any:
        async_store = AsyncStore(store)
        try:
            log = EventLog(capacity=5)
            keeper = EventKeeper(log, async_store, config)
            await keeper.open()
            return await body(log, keeper)
        finally:
            async_store.close()

    async def first(log: EventLog, keeper: EventKeeper) -> None:
        for i in range(20):
            log.emit("task_done", job="j", index=i)
        await keeper.close()

    async def second(log: EventLog, keeper: EventKeeper) -> list[list[dict[str, Any]]]:
        log.emit("task_done", job="j", index=100)
        return [await keeper.read(None, 0, None, 0, None), await keeper.read("j", 3, None, 0, None),
                await keeper.read(None, 4, None, 0, 20)]

    async def third(log: EventLog, keeper: EventKeeper) -> dict[str, Any]:
        return log.recent(kinds=["daemon_started"])[-1]

    asyncio.run(run(Store(tmp_path / "store"), first))
    everything, of_job, page = asyncio.run(run(Store(tmp_path / "store"), second))
    kinds = [e["kind"] for e in everything]
    assert seqs(everything) == list(range(1, 25))
    assert kinds[0] == "daemon_started" and kinds[21:] == ["daemon_stopped", "daemon_started", "task_done"]
    assert everything[22]["previous_clean"] is True and everything[0]["previous_clean"] is None
    assert [e["index"] for e in of_job] == [18, 19, 100]
    assert seqs(page) == [16, 17, 18, 19]
    # The second run ended without close() (as after kill -9): the third start says so.
    started = asyncio.run(run(Store(tmp_path / "store"), third))
    assert started["previous_clean"] is False and started["previous_pid"] is not None


def test_the_pending_buffer_outlives_a_compaction(store: Store) -> None:
    """Compaction reopens the store on the same object; the buffer the daemon's listener holds still gets written."""
    buffer = store.pending_events
    add(store, 1, 3)
    store.flush_events()
    store.compact()
    assert store.pending_events is buffer
    add(store, 4, 2)
    store.flush_events()
    assert seqs(store.read_events(limit=100)) == [1, 2, 3, 4, 5]
