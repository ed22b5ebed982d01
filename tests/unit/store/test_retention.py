"""Unit tests for tabfleetd.store.retention: pruning finished jobs and compacting a real LMDB store."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any


from tabfleetd.settings.config import Config
from tabfleetd.store.retention import Housekeeper, expired_jobs, should_compact
from tabfleetd.states import JobState, TaskState
from tabfleetd.store.store import AsyncStore, Store, task_key

HOUR = 3600.0


def finished_job(store: Store, prompts: int, prompt_size: int = 20) -> dict[str, Any]:
    """A job whose every task is done."""
    job = store.create_job(job_id=store.new_job_id(), name="", site="demo", knobs={}, out="/tmp/out",
                           prompts=[f"p{i} " + "x" * prompt_size for i in range(prompts)], max_workers=0,
                           max_attempts=3, source="p.txt")
    for _ in range(prompts):
        task = store.claim(1, time.time())
        assert task is not None
        store.finish(task_key(job["id"], task["index"]), TaskState.DONE, file="f.png", sha256="0", bytes=1,
                     started=time.time(), finished=time.time())
    return store.get_job(job["id"])


def test_expired_jobs_picks_only_old_finished_jobs() -> None:
    """Only done, failed or cancelled jobs that ended before the retention period are picked."""
    now = 100 * HOUR
    idle = {"pending": 0, "running": 0}
    jobs = [
        {"id": "old-done", "state": "done", "finished": now - 3 * HOUR, "counts": idle},
        {"id": "old-failed", "state": "failed", "finished": now - 3 * HOUR, "counts": idle},
        {"id": "new-done", "state": "done", "finished": now - 1 * HOUR, "counts": idle},
        {"id": "paused", "state": "paused", "finished": None, "counts": {"pending": 3, "running": 0}},
        {"id": "active", "state": "active", "finished": None, "counts": {"pending": 1, "running": 1}},
    ]
    assert expired_jobs(jobs, now, 2.0) == ["old-done", "old-failed"]
    assert expired_jobs(jobs, now, 0) == []


def test_should_compact_needs_size_and_free_share() -> None:
    """A store is compacted only when big enough and mostly free."""
    mib = 1 << 20
    assert should_compact({"file_bytes": 20 * mib, "used_bytes": 5 * mib}, 0.5, 16)
    assert not should_compact({"file_bytes": 20 * mib, "used_bytes": 15 * mib}, 0.5, 16)
    assert not should_compact({"file_bytes": 8 * mib, "used_bytes": 1 * mib}, 0.5, 16)
    assert not should_compact({"file_bytes": 20 * mib, "used_bytes": 0}, 0, 16)


def delete(store: Store, job_id: str) -> int:
    deleted = 0
    while (outcome := store.delete_tasks(job_id, 1000)) is not None:
        deleted += outcome[0]
        if outcome[1]:
            break
    return deleted


def test_delete_tasks_removes_the_job_and_all_its_tasks_in_batches(store: Store) -> None:
    """delete_tasks removes a finished job a batch at a time, hiding it from the first batch; other jobs stay whole."""
    gone = finished_job(store, 30)
    kept = finished_job(store, 5)
    active = store.create_job(job_id=store.new_job_id(), name="", site="demo", knobs={}, out="/tmp/o",
                              prompts=["a", "b"], max_workers=0, max_attempts=3, source="p.txt")
    assert store.delete_tasks(gone["id"], 12) == (12, False)
    assert {j["id"] for j in store.list_jobs()} == {kept["id"], active["id"]}  # hidden while it is being deleted
    assert store.delete_tasks(gone["id"], 12) == (12, False)
    assert store.delete_tasks(gone["id"], 12) == (6, True)
    assert store.delete_tasks(active["id"], 12) is None  # not finished: left alone
    assert store.delete_tasks("nosuchjob", 12) is None
    assert {j["id"] for j in store.list_jobs(unfinished_work=True)} == set()
    assert store.tasks_of(gone["id"]) == []
    assert len(store.tasks_of(kept["id"])) == 5
    assert store.claim(1, time.time()) is not None  # the active job still dispatches


def test_compact_shrinks_the_file_and_keeps_the_data(store: Store) -> None:
    """After most jobs are deleted, compaction shrinks data.mdb and the store still reads and writes."""
    jobs = [finished_job(store, 200, prompt_size=400) for _ in range(8)]
    for job in jobs[1:]:
        delete(store, job["id"])
    use = store.usage()
    assert should_compact(use, 0.5, 1), use
    sizes = store.compact()
    assert sizes["after_bytes"] < sizes["before_bytes"] / 2
    assert store.usage()["file_bytes"] == sizes["after_bytes"]
    assert len(store.tasks_of(jobs[0]["id"])) == 200
    assert store.get_job(jobs[0]["id"])["counts"]["done"] == 200
    fresh = finished_job(store, 3)
    assert store.get_job(fresh["id"])["state"] == JobState.DONE.value


def test_housekeeper_prunes_forgets_and_compacts(tmp_path: Path) -> None:
    """One pass prunes expired jobs through the store thread, tells the scheduler, and compacts a mostly free store."""
    store = Store(tmp_path / "store")
    old = [finished_job(store, 200, prompt_size=800) for _ in range(6)]
    forgotten: list[str] = []
    config = Config(state_dir=tmp_path, job_retention_h=1.0, compact_min_mb=1, compact_free_ratio=0.5)
    later = time.time() + 2 * HOUR

    async def one_pass() -> dict[str, Any]:
        async_store = AsyncStore(store)
        try:
            return await Housekeeper(async_store, config, forgotten.extend, clock=lambda: later).once()
        finally:
            async_store.close()

    report = asyncio.run(one_pass())
    assert report["pruned_jobs"] == 6 and report["pruned_tasks"] == 1200
    assert sorted(forgotten) == sorted(j["id"] for j in old)
    assert report["compacted"] is not None
    assert report["compacted"]["after_bytes"] < report["compacted"]["before_bytes"]
    # The compacted store is also kept as the copy a damaged store is restored from.
    assert report["backup_bytes"] == (tmp_path / "store" / "data.mdb.prev").stat().st_size > 0


def test_housekeeper_copies_the_store_when_the_copy_is_old(tmp_path: Path) -> None:
    """Without a compaction, a pass writes data.mdb.prev when there is none or it is older than backup_interval_h."""
    store = Store(tmp_path / "store")
    finished_job(store, 3)
    config = Config(state_dir=tmp_path, job_retention_h=0, backup_interval_h=1.0)
    backup = tmp_path / "store" / "data.mdb.prev"

    async def passes() -> list[Any]:
        async_store = AsyncStore(store)
        keeper = Housekeeper(async_store, config, lambda ids: None)
        try:
            first = (await keeper.once())["backup_bytes"]
            second = (await keeper.once())["backup_bytes"]  # a fresh copy exists: none made
            old = time.time() - 2 * HOUR
            os.utime(backup, (old, old))
            third = (await keeper.once())["backup_bytes"]
            return [first, second, third]
        finally:
            async_store.close()

    first, second, third = asyncio.run(passes())
    assert first and second is None and third
    copy = Store(tmp_path / "copy")
    copy.close()
    os.replace(backup, tmp_path / "copy" / "data.mdb")
    copy = Store(tmp_path / "copy")
    assert [j["counts"]["done"] for j in copy.list_jobs()] == [3]
    copy.close()
