"""Unit tests for big jobs in bounded transactions (store.py batches, bulk.py drivers) against real LMDB."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tabfleetd.files import outputs
from tabfleetd.store.bulk import Bulk
from tabfleetd.errors import StateError, UnknownJob
from tabfleetd.states import JobState, TaskState
from tabfleetd.store.store import AsyncStore, Store, task_key

NOW = 1_700_000_000.0


def make_job(store: Store, count: int, **fields: Any) -> dict[str, Any]:
    return store.create_job(job_id=store.new_job_id(), name="", site="demo", knobs={}, out=fields.pop("out", "/tmp/out"),
                            prompts=[f"p{i}" for i in range(1, count + 1)], max_workers=0, max_attempts=3,
                            source="p.txt", **fields)


def consistent(store: Store, job_id: str) -> dict[str, Any]:
    """The job, after checking its counts against its tasks and its queue entries against their states."""
    job = store.get_job(job_id)
    tasks = store.tasks_of(job_id)
    assert len(tasks) == job["total"] == sum(job["counts"].values())
    buckets = {"pending": 0, "retry_wait": 0, "running": 0, "done": 0, "failed": 0, "cancelled": 0}
    for task in tasks:
        buckets[task["state"]] += 1
    assert job["counts"]["pending"] == buckets["pending"] + buckets["retry_wait"]
    for bucket in ("running", "done", "failed", "cancelled"):
        assert job["counts"][bucket] == buckets[bucket], (bucket, job["counts"])
    return job


def run(store: Store, fn: Any) -> Any:
    async def go() -> Any:
        async_store = AsyncStore(store)
        try:
            return await fn(async_store)
        finally:
            async_store._pool.shutdown(wait=True)  # the test closes the Store itself
            async_store._aside.shutdown(wait=True)
    return asyncio.run(go())


def test_cancel_in_batches_stops_dispatch_at_once_and_stays_consistent(store: Store) -> None:
    """A batched cancel ends dispatch of the job in its first transaction; each batch keeps the counts right."""
    big = make_job(store, 30)
    other = make_job(store, 2)
    running = store.claim(1, NOW)
    assert running is not None and running["job"] == big["id"]
    job = store.set_job_state(big["id"], JobState.CANCELLED, 3, batch=7)
    assert job["state"] == "cancelled" and job["move"]["after"]
    assert consistent(store, big["id"])["counts"]["cancelled"] == 7
    claimed = store.claim(2, NOW)  # the cancelled job's queued tasks are skipped, the other job's are not
    assert claimed is not None and claimed["job"] == other["id"]
    assert store.claim_key(task_key(big["id"], 20), 2, NOW) is None
    done = False
    while not done:
        job, done = store.move_tasks(big["id"], 7)
        consistent(store, big["id"])
    assert job["counts"]["cancelled"] == 30 and "move" not in job
    assert store.finish(task_key(big["id"], running["index"]), TaskState.DONE) is None  # a late report is ignored


def test_a_crash_between_batches_is_carried_on_at_start(tmp_path: Path) -> None:
    """A store closed mid-move reopens consistent, and resume_interrupted finishes the move."""
    path = tmp_path / "store"
    store = Store(path)
    job = make_job(store, 25)
    store.set_job_state(job["id"], JobState.PAUSED, 3, batch=10)
    store.close()  # the daemon dies here
    store = Store(path)
    try:
        assert consistent(store, job["id"])["move"]["to"] == "paused"
        assert store.claim(1, NOW) is None  # a paused job is never dispatched, moved or not
        assert [j["id"] for j in store.list_jobs(unfinished_work=True)] == [job["id"]]
        changed: list[dict[str, Any]] = []
        run(store, lambda s: Bulk(s, changed.append, lambda ids: None, batch=10).resume_interrupted())
        job = consistent(store, job["id"])
        assert "move" not in job and changed and store.list_jobs(unfinished_work=True) == []
        store.set_job_state(job["id"], JobState.ACTIVE, 3, batch=10)
        assert store.claim(1, NOW) is not None  # resuming queues the tasks again
    finally:
        store.close()


def test_resume_in_batches_does_not_end_the_job_halfway(store: Store) -> None:
    """Resuming a failed job gives fresh attempts batch by batch; the job is not settled before its tasks are back."""
    job = make_job(store, 12)
    store.set_job_state(job["id"], JobState.CANCELLED, 3)
    assert store.get_job(job["id"])["state"] == "cancelled"
    job = store.set_job_state(job["id"], JobState.ACTIVE, 3, batch=5)
    assert job["state"] == "active" and consistent(store, job["id"])["counts"]["pending"] == 5
    while not store.move_tasks(job["id"], 5)[1]:
        assert store.get_job(job["id"])["state"] == "active"
    assert consistent(store, job["id"])["counts"]["pending"] == 12
    assert len([store.claim(1, NOW) for _ in range(12)]) == 12


def test_a_loading_job_is_not_dispatched_until_it_is_whole(store: Store) -> None:
    """Tasks added in batches are invisible to claims until end_loading; state changes wait for it too."""
    job = store.create_job(job_id="abcd0001", name="", site="demo", knobs={}, out="/tmp/o", prompts=["a", "b"],
                           max_workers=0, max_attempts=3, source="p.txt", complete=False)
    store.add_tasks(job["id"], ["c", "d"], 3, 3)
    with pytest.raises(StateError):
        store.add_tasks(job["id"], ["e"], 9, 3)  # not the next index
    with pytest.raises(StateError, match="still being queued"):
        store.set_job_state(job["id"], JobState.CANCELLED, 3)
    assert store.claim(1, NOW) is None
    job = store.end_loading(job["id"])
    assert consistent(store, job["id"])["total"] == 4 and job["state"] == "active"
    assert [store.claim(1, NOW)["prompt"] for _ in range(4)] == ["a", "b", "c", "d"]


def test_bulk_create_and_cancel_in_batches(store: Store) -> None:
    """Bulk.create_job loads a big job batch by batch; Bulk.set_state cancels it batch by batch to the end."""
    changed: list[str] = []

    async def go(s: AsyncStore) -> tuple[dict[str, Any], dict[str, Any]]:
        bulk = Bulk(s, lambda job: changed.append(job["state"]), lambda ids: None, batch=40)
        job = await bulk.create_job(job_id="abcd0002", name="", site="demo", knobs={}, out="/tmp/o",
                                    prompts=[f"p{i}" for i in range(1, 101)], max_workers=0, max_attempts=3,
                                    source="p.txt")
        return job, await bulk.set_state(job["id"], JobState.CANCELLED, 3)

    created, cancelled = run(store, go)
    assert created["total"] == 100 and "loading" not in created
    assert cancelled["counts"]["cancelled"] == 100 and "move" not in cancelled
    assert len(changed) == 3  # the first transaction and two more batches
    consistent(store, "abcd0002")


def test_a_failed_load_leaves_no_job(store: Store) -> None:
    """A submit that fails halfway through loading removes the partial job: all or nothing."""
    real = store.add_tasks
    calls = 0

    def failing(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(28, "No space left on device")
        return real(*args)

    store.add_tasks = failing  # type: ignore[method-assign]

    async def go(s: AsyncStore) -> None:
        bulk = Bulk(s, lambda job: None, lambda ids: None, batch=10)
        await bulk.create_job(job_id="abcd0003", name="", site="demo", knobs={}, out="/tmp/o",
                              prompts=[f"p{i}" for i in range(50)], max_workers=0, max_attempts=3, source="p.txt")

    with pytest.raises(OSError, match="No space left"):
        run(store, go)
    with pytest.raises(UnknownJob):
        store.get_job("abcd0003")
    assert store.tasks_of("abcd0003") == [] and store.claim(1, NOW) is None


def test_an_interrupted_load_is_removed_at_start_with_its_marker(tmp_path: Path) -> None:
    """A job still loading when the daemon died is deleted at the next start, and its out dir's marker with it."""
    out = tmp_path / "out"
    outputs.claim_out_dir(out, "abcd0004")
    path = tmp_path / "store"
    store = Store(path)
    store.create_job(job_id="abcd0004", name="", site="demo", knobs={}, out=str(out), prompts=["a", "b"],
                     max_workers=0, max_attempts=3, source="p.txt", complete=False)
    store.close()
    store = Store(path)
    try:
        run(store, lambda s: Bulk(s, lambda job: None, lambda ids: None).resume_interrupted())
        assert store.list_jobs() == [] and store.list_jobs(unfinished_work=True) == []
        assert not (out / outputs.MARKER).exists()
    finally:
        store.close()


def test_tasks_page_walks_in_index_order_with_a_bounded_scan(store: Store) -> None:
    """tasks_page returns index order with a cursor; a state filter looks at no more than `scan` tasks per page."""
    job = make_job(store, 30)
    for _ in range(3):
        task = store.claim(1, NOW)
        store.finish(task_key(job["id"], task["index"]), TaskState.FAILED, error="x")
    page, nxt = store.tasks_page(job["id"], 0, 12)
    assert [t["index"] for t in page] == list(range(1, 13)) and nxt == 12
    page, nxt = store.tasks_page(job["id"], 24, 12)
    assert [t["index"] for t in page] == list(range(25, 31)) and nxt is None
    page, nxt = store.tasks_page(job["id"], 3, 5, state="failed", scan=10)
    assert page == [] and nxt == 13  # nothing failed after index 3 in the scanned window, but more to look at
    page, nxt = store.tasks_page(job["id"], 0, 5, state="failed", scan=10)
    assert [t["index"] for t in page] == [1, 2, 3] and nxt == 10
    with pytest.raises(UnknownJob):
        store.tasks_page("nosuch", 0, 5)


def test_the_dashboard_gallery_pages_through_done_tasks_for_the_newest(store: Store) -> None:
    """After a start the gallery's older images come from paging the store, newest first, at most GALLERY_SIZE."""
    from types import SimpleNamespace

    from tabfleetd.web.dashboard import GALLERY_SIZE, Dashboard

    job = make_job(store, 60)
    for n in range(40):
        task = store.claim(1, NOW)
        store.finish(task_key(job["id"], task["index"]), TaskState.DONE, file=f"{task['index']:05d}.png",
                     finished=NOW + (n * 7) % 40)  # finish times out of index order

    async def go(s: AsyncStore) -> list[dict[str, Any]]:
        dashboard = Dashboard(SimpleNamespace(store=s))  # type: ignore[arg-type]
        return await dashboard._read_older()

    gallery = run(store, go)
    finished = [p["finished"] for p in gallery]
    assert len(gallery) == GALLERY_SIZE and finished == sorted(finished, reverse=True)
    assert finished[0] == NOW + 39 and finished[-1] == NOW + 40 - GALLERY_SIZE
