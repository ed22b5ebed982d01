"""Unit tests for tabfleetd.store.store against a real LMDB environment in a temporary directory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lmdb
import msgpack
import pytest

from tabfleetd.errors import IllegalTransition, StoreFormatError, UnknownJob
from tabfleetd.states import BUCKETS, JobState, TaskState
from tabfleetd.store.store import FORMAT, Store, task_key

NOW = 1_700_000_000.0


def make_job(store: Store, prompts: list[str], max_attempts: int = 3, name: str = "") -> dict[str, Any]:
    return store.create_job(job_id=store.new_job_id(), name=name, site="demo", knobs={"seed": "1"}, out="/tmp/out",
                            prompts=prompts, max_workers=2, max_attempts=max_attempts, source="prompts.txt")


def counts(store: Store, job_id: str) -> dict[str, int]:
    job = store.get_job(job_id)
    assert sum(job["counts"].values()) == job["total"], job["counts"]
    return job["counts"]


def states(store: Store, job_id: str) -> list[str]:
    return [t["state"] for t in store.tasks_of(job_id)]


def claim_all(store: Store, now: float = NOW, worker: int = 0) -> list[dict[str, Any]]:
    out = []
    while (task := store.claim(worker, now)) is not None:
        out.append(task)
    return out


# --- create_job -------------------------------------------------------------------


def test_new_job_ids_are_distinct_hex(store: Store) -> None:
    """new_job_id returns 8-character hex ids not used by an existing job."""
    job = make_job(store, ["a"])
    ids = {store.new_job_id() for _ in range(50)}
    assert all(len(i) == 8 and int(i, 16) >= 0 for i in ids)
    assert job["id"] not in ids


def test_create_job_writes_tasks_in_order(store: Store) -> None:
    """A new job holds one pending task per prompt, numbered from 1 in input order."""
    prompts = ["first", "second", "third", "fourth"]
    job = make_job(store, prompts, max_attempts=4, name="batch")
    assert job["state"] == "active" and job["name"] == "batch" and job["total"] == 4
    tasks = store.tasks_of(job["id"])
    assert [t["prompt"] for t in tasks] == prompts
    assert [t["index"] for t in tasks] == [1, 2, 3, 4]
    assert all(t["state"] == "pending" and t["attempts"] == 0 and t["budget"] == 4 for t in tasks)
    assert counts(store, job["id"]) == {"done": 0, "failed": 0, "running": 0, "pending": 4, "cancelled": 0}
    assert store.get_task(task_key(job["id"], 2))["prompt"] == "second"
    assert store.has_queued()


def test_create_job_name_defaults_to_id(store: Store) -> None:
    """A job created without a name is named after its id."""
    job = make_job(store, ["x"])
    assert store.get_job(job["id"])["name"] == job["id"]


def test_create_job_refuses_taken_id(store: Store) -> None:
    """Creating a job under an id already in use fails and leaves the first job intact."""
    job = make_job(store, ["a", "b"])
    with pytest.raises(ValueError, match="taken"):
        store.create_job(job_id=job["id"], name="", site="demo", knobs={}, out="/o", prompts=["z"],
                         max_workers=1, max_attempts=1, source="s")
    assert [t["prompt"] for t in store.tasks_of(job["id"])] == ["a", "b"]
    assert len(store.list_jobs()) == 1


def test_list_jobs_in_creation_order(store: Store) -> None:
    """list_jobs returns jobs in the order they were created, each with a rising seq."""
    jobs = [make_job(store, [f"p{i}"]) for i in range(5)]
    listed = store.list_jobs()
    assert [j["id"] for j in listed] == [j["id"] for j in jobs]
    assert [j["seq"] for j in listed] == [1, 2, 3, 4, 5]


def test_tasks_of_does_not_leak_other_jobs(store: Store) -> None:
    """tasks_of returns only the named job's tasks even with several jobs stored."""
    a = make_job(store, ["a1", "a2"])
    b = make_job(store, ["b1", "b2", "b3"])
    assert [t["prompt"] for t in store.tasks_of(a["id"])] == ["a1", "a2"]
    assert [t["prompt"] for t in store.tasks_of(b["id"])] == ["b1", "b2", "b3"]


def test_unknown_job_raises(store: Store) -> None:
    """Asking for a job that does not exist raises UnknownJob naming it."""
    with pytest.raises(UnknownJob, match="nosuch"):
        store.get_job("nosuch")
    with pytest.raises(UnknownJob):
        store.set_job_state("nosuch", JobState.PAUSED, 3)


# --- claim ------------------------------------------------------------------------


def test_claim_takes_tasks_in_input_order(store: Store) -> None:
    """Tasks are claimed in input order, each one marked running with the worker and time."""
    job = make_job(store, ["a", "b", "c"])
    first = store.claim(7, NOW)
    assert first["prompt"] == "a" and first["state"] == "running"
    assert first["attempts"] == 1 and first["worker"] == 7 and first["started"] == NOW
    assert [store.claim(1, NOW)["prompt"] for _ in range(2)] == ["b", "c"]
    assert store.claim(1, NOW) is None
    assert not store.has_queued()
    assert counts(store, job["id"]) == {"done": 0, "failed": 0, "running": 3, "pending": 0, "cancelled": 0}


def test_claim_follows_job_creation_order(store: Store) -> None:
    """An older job's tasks are claimed before a newer job's."""
    make_job(store, ["old1", "old2"])
    make_job(store, ["new1"])
    assert [t["prompt"] for t in claim_all(store)] == ["old1", "old2", "new1"]


def test_claim_on_empty_store_is_none(store: Store) -> None:
    """With nothing queued claim returns None."""
    assert store.claim(0, NOW) is None
    assert store.next_retry_at() is None


def test_claim_persists_running_state(store: Store) -> None:
    """A claimed task reads back from the store as running with its attempt counted."""
    job = make_job(store, ["a"])
    store.claim(3, NOW)
    task = store.get_task(task_key(job["id"], 1))
    assert task["state"] == "running" and task["attempts"] == 1 and task["worker"] == 3


def test_skip_jobs_skips_a_jobs_tasks(store: Store) -> None:
    """A job named in skip_jobs gives no task; the next job's task is claimed instead."""
    a = make_job(store, ["a1", "a2"])
    make_job(store, ["b1"])
    assert store.claim(0, NOW, frozenset({a["id"]}))["prompt"] == "b1"
    assert store.claim(0, NOW, frozenset({a["id"]})) is None
    assert store.claim(0, NOW)["prompt"] == "a1"
    assert counts(store, a["id"])["pending"] == 1


# --- finish -----------------------------------------------------------------------


def test_finish_done_updates_counts_and_settles_done(store: Store) -> None:
    """Finishing every task done moves the counts and ends the job done."""
    job = make_job(store, ["a", "b"])
    t1, t2 = claim_all(store)
    task, j = store.finish(task_key(job["id"], t1["index"]), TaskState.DONE, file="a.png", sha256="00", bytes=3)
    assert task["state"] == "done" and task["file"] == "a.png"
    assert j["state"] == "active"
    assert counts(store, job["id"]) == {"done": 1, "failed": 0, "running": 1, "pending": 0, "cancelled": 0}
    _, j = store.finish(task_key(job["id"], t2["index"]), TaskState.DONE)
    assert j["state"] == "done" and j["finished"] is not None
    assert store.get_job(job["id"])["state"] == "done"
    assert counts(store, job["id"])["done"] == 2


def test_finish_failed_settles_job_failed(store: Store) -> None:
    """One failed task and the rest done ends the job failed."""
    job = make_job(store, ["a", "b", "c"])
    tasks = claim_all(store)
    store.finish(task_key(job["id"], 1), TaskState.DONE)
    store.finish(task_key(job["id"], 2), TaskState.FAILED, error="boom", error_kind="permanent")
    assert store.get_job(job["id"])["state"] == "active"  # task 3 still running
    store.finish(task_key(job["id"], 3), TaskState.DONE)
    assert len(tasks) == 3
    assert store.get_job(job["id"])["state"] == "failed"
    assert counts(store, job["id"]) == {"done": 2, "failed": 1, "running": 0, "pending": 0, "cancelled": 0}
    failed = store.get_task(task_key(job["id"], 2))
    assert failed["error"] == "boom" and failed["error_kind"] == "permanent"


def test_finish_retry_wait_counts_as_pending(store: Store) -> None:
    """A task sent to retry_wait counts as pending and keeps the job active."""
    job = make_job(store, ["a"])
    store.claim(0, NOW)
    task, j = store.finish(task_key(job["id"], 1), TaskState.RETRY_WAIT, ready_at=NOW + 10, error="busy")
    assert task["state"] == "retry_wait" and j["state"] == "active"
    assert counts(store, job["id"]) == {"done": 0, "failed": 0, "running": 0, "pending": 1, "cancelled": 0}
    assert store.next_retry_at() == pytest.approx(NOW + 10, abs=0.001)
    assert store.has_queued()


def test_due_retry_claimed_before_fresh_tasks(store: Store) -> None:
    """A retry whose ready time has passed is claimed before any fresh task, attempts counting up."""
    job = make_job(store, ["a", "b", "c"])
    store.claim(0, NOW)  # a
    store.finish(task_key(job["id"], 1), TaskState.RETRY_WAIT, ready_at=NOW + 5)
    retried = store.claim(1, NOW + 6)
    assert retried["prompt"] == "a" and retried["attempts"] == 2 and retried["state"] == "running"
    assert store.claim(1, NOW + 6)["prompt"] == "b"
    assert store.next_retry_at() is None


def test_retry_of_later_job_beats_fresh_task_of_older_job(store: Store) -> None:
    """A due retry wins over fresh tasks even when those belong to an older job."""
    old = make_job(store, ["old1", "old2"])
    new = make_job(store, ["new1"])
    assert store.claim(0, NOW, frozenset({old["id"]}))["prompt"] == "new1"
    store.finish(task_key(new["id"], 1), TaskState.RETRY_WAIT, ready_at=NOW)
    assert store.claim(0, NOW + 1)["prompt"] == "new1"
    assert store.claim(0, NOW + 1)["prompt"] == "old1"


def test_retry_not_yet_due_is_not_claimed(store: Store) -> None:
    """A retry whose time has not come is left alone: fresh tasks go first, then nothing."""
    job = make_job(store, ["a", "b"])
    store.claim(0, NOW)
    store.finish(task_key(job["id"], 1), TaskState.RETRY_WAIT, ready_at=NOW + 60)
    assert store.claim(0, NOW + 1)["prompt"] == "b"
    assert store.claim(0, NOW + 59) is None
    assert store.get_task(task_key(job["id"], 1))["state"] == "retry_wait"
    assert store.claim(0, NOW + 60)["prompt"] == "a"


def test_retries_claimed_in_ready_order(store: Store) -> None:
    """Of several due retries the one ready first is claimed first."""
    job = make_job(store, ["a", "b", "c"])
    claim_all(store)
    store.finish(task_key(job["id"], 1), TaskState.RETRY_WAIT, ready_at=NOW + 30)
    store.finish(task_key(job["id"], 2), TaskState.RETRY_WAIT, ready_at=NOW + 10)
    store.finish(task_key(job["id"], 3), TaskState.RETRY_WAIT, ready_at=NOW + 20)
    assert store.next_retry_at() == pytest.approx(NOW + 10, abs=0.001)
    assert [t["prompt"] for t in claim_all(store, NOW + 100)] == ["b", "c", "a"]


def test_skip_jobs_applies_to_retries(store: Store) -> None:
    """A due retry of a skipped job is passed over."""
    job = make_job(store, ["a"])
    store.claim(0, NOW)
    store.finish(task_key(job["id"], 1), TaskState.RETRY_WAIT, ready_at=NOW)
    assert store.claim(0, NOW + 1, frozenset({job["id"]})) is None
    assert store.claim(0, NOW + 1)["prompt"] == "a"


def test_illegal_finish_returns_none_and_changes_nothing(store: Store) -> None:
    """An outcome that is not a legal move returns None and leaves task, job and queue unchanged."""
    job = make_job(store, ["a", "b"])
    key = task_key(job["id"], 1)
    before_task, before_job = store.get_task(key), store.get_job(job["id"])
    assert store.finish(key, TaskState.FAILED) is None  # pending -> failed
    assert store.finish(key, TaskState.RETRY_WAIT, ready_at=NOW) is None  # pending -> retry_wait
    assert store.get_task(key) == before_task
    assert store.get_job(job["id"]) == before_job
    assert store.claim(0, NOW)["prompt"] == "a"  # still queued


def test_finish_after_done_is_ignored(store: Store) -> None:
    """A second outcome for a done task is ignored and the done counts stay put."""
    job = make_job(store, ["a"])
    store.claim(0, NOW)
    key = task_key(job["id"], 1)
    store.finish(key, TaskState.DONE, file="a.png")
    assert store.finish(key, TaskState.FAILED, error="late") is None
    assert store.finish(key, TaskState.DONE, file="other.png") is None
    task = store.get_task(key)
    assert task["state"] == "done" and task["file"] == "a.png" and task["error"] is None
    assert store.get_job(job["id"])["state"] == "done"
    assert counts(store, job["id"])["done"] == 1


def test_finish_unknown_task_is_none(store: Store) -> None:
    """An outcome for a task key that does not exist returns None."""
    make_job(store, ["a"])
    assert store.finish(b"deadbeef/000001", TaskState.DONE) is None


def test_pending_task_can_be_adopted_done(store: Store) -> None:
    """A pending task may go straight to done (an existing image adopted) and leaves the queue."""
    job = make_job(store, ["a", "b"])
    store.finish(task_key(job["id"], 1), TaskState.DONE, file="a.png")
    assert store.claim(0, NOW)["prompt"] == "b"
    assert store.claim(0, NOW) is None


def test_running_task_back_to_pending_keeps_attempts(store: Store) -> None:
    """A running task put back to pending (its worker died) is claimed again with attempts counting on."""
    job = make_job(store, ["a", "b"])
    store.claim(0, NOW)
    store.finish(task_key(job["id"], 1), TaskState.PENDING, worker=None)
    again = store.claim(1, NOW)
    assert again["prompt"] == "a" and again["attempts"] == 2


# --- requeue_running --------------------------------------------------------------


def test_requeue_running_restores_pending_keeping_attempts(store: Store) -> None:
    """Tasks left running go back to pending, keep their attempts and are claimable again in order."""
    job = make_job(store, ["a", "b", "c"])
    store.claim(0, NOW)
    store.claim(1, NOW)
    assert store.requeue_running() == 2
    tasks = store.tasks_of(job["id"])
    assert [t["state"] for t in tasks] == ["pending"] * 3
    assert [t["attempts"] for t in tasks] == [1, 1, 0]
    assert all(t["worker"] is None for t in tasks)
    assert counts(store, job["id"]) == {"done": 0, "failed": 0, "running": 0, "pending": 3, "cancelled": 0}
    again = claim_all(store)
    assert [(t["prompt"], t["attempts"]) for t in again] == [("a", 2), ("b", 2), ("c", 1)]


def test_requeue_running_with_nothing_running(store: Store) -> None:
    """With nothing running requeue_running moves nothing."""
    make_job(store, ["a"])
    assert store.requeue_running() == 0


def test_requeue_running_of_paused_job_waits_for_resume(store: Store) -> None:
    """A paused job's running task goes back to pending but is only claimable after resume."""
    job = make_job(store, ["a"])
    store.claim(0, NOW)
    store.set_job_state(job["id"], JobState.PAUSED, 3)
    assert store.requeue_running() == 1
    assert store.claim(0, NOW) is None
    store.set_job_state(job["id"], JobState.ACTIVE, 3)
    assert store.claim(0, NOW)["prompt"] == "a"


# --- pause / resume / cancel --------------------------------------------------------


def test_pause_removes_tasks_from_queue_and_resume_restores(store: Store) -> None:
    """Pausing a job makes claim return None; resuming puts its tasks back in order."""
    job = make_job(store, ["a", "b", "c"])
    paused = store.set_job_state(job["id"], JobState.PAUSED, 3)
    assert paused["state"] == "paused"
    assert store.claim(0, NOW) is None
    assert not store.has_queued()
    assert states(store, job["id"]) == ["pending"] * 3
    resumed = store.set_job_state(job["id"], JobState.ACTIVE, 3)
    assert resumed["state"] == "active"
    assert [t["prompt"] for t in claim_all(store)] == ["a", "b", "c"]


def test_pause_only_affects_that_job(store: Store) -> None:
    """Another job's tasks stay claimable while one job is paused."""
    a = make_job(store, ["a1"])
    make_job(store, ["b1"])
    store.set_job_state(a["id"], JobState.PAUSED, 3)
    assert [t["prompt"] for t in claim_all(store)] == ["b1"]


def test_pause_holds_retries_and_resume_keeps_ready_time(store: Store) -> None:
    """A paused job's retry is not claimed; after resume it is due at its original ready time."""
    job = make_job(store, ["a"])
    store.claim(0, NOW)
    store.finish(task_key(job["id"], 1), TaskState.RETRY_WAIT, ready_at=NOW + 5)
    store.set_job_state(job["id"], JobState.PAUSED, 3)
    assert store.next_retry_at() is None
    assert store.claim(0, NOW + 100) is None
    store.set_job_state(job["id"], JobState.ACTIVE, 3)
    assert store.next_retry_at() == pytest.approx(NOW + 5, abs=0.001)
    assert store.claim(0, NOW + 6)["prompt"] == "a"


def test_running_task_of_paused_job_retry_is_held(store: Store) -> None:
    """A task that fails into retry_wait while its job is paused is not queued until resume."""
    job = make_job(store, ["a"])
    store.claim(0, NOW)
    store.set_job_state(job["id"], JobState.PAUSED, 3)
    store.finish(task_key(job["id"], 1), TaskState.RETRY_WAIT, ready_at=NOW)
    assert store.claim(0, NOW + 1) is None
    store.set_job_state(job["id"], JobState.ACTIVE, 3)
    assert store.claim(0, NOW + 1)["prompt"] == "a"


def test_paused_job_settles_on_resume(store: Store) -> None:
    """A paused job whose running tasks all finish stays paused, then ends done on resume."""
    job = make_job(store, ["a"])
    store.claim(0, NOW)
    store.set_job_state(job["id"], JobState.PAUSED, 3)
    store.finish(task_key(job["id"], 1), TaskState.DONE)
    assert store.get_job(job["id"])["state"] == "paused"
    assert store.set_job_state(job["id"], JobState.ACTIVE, 3)["state"] == "done"


def test_same_state_is_a_no_op(store: Store) -> None:
    """Setting a job to the state it is in changes nothing."""
    job = make_job(store, ["a"])
    before = store.get_job(job["id"])
    assert store.set_job_state(job["id"], JobState.ACTIVE, 3) == before
    assert store.claim(0, NOW)["prompt"] == "a"


def test_cancel_moves_pending_and_running_to_cancelled(store: Store) -> None:
    """Cancelling a job cancels its pending, retrying and running tasks but keeps done ones."""
    job = make_job(store, ["a", "b", "c", "d"])
    store.claim(0, NOW)  # a
    store.claim(0, NOW)  # b
    store.claim(0, NOW)  # c
    store.finish(task_key(job["id"], 1), TaskState.DONE)
    store.finish(task_key(job["id"], 2), TaskState.RETRY_WAIT, ready_at=NOW)
    cancelled = store.set_job_state(job["id"], JobState.CANCELLED, 3)
    assert cancelled["state"] == "cancelled" and cancelled["finished"] is not None
    assert states(store, job["id"]) == ["done", "cancelled", "cancelled", "cancelled"]
    assert counts(store, job["id"]) == {"done": 1, "failed": 0, "running": 0, "pending": 0, "cancelled": 3}
    assert store.claim(0, NOW + 10) is None
    assert not store.has_queued()


def test_cancel_of_paused_job(store: Store) -> None:
    """A paused job can be cancelled and its tasks end cancelled."""
    job = make_job(store, ["a", "b"])
    store.set_job_state(job["id"], JobState.PAUSED, 3)
    store.set_job_state(job["id"], JobState.CANCELLED, 3)
    assert states(store, job["id"]) == ["cancelled", "cancelled"]
    assert store.claim(0, NOW) is None


def test_late_outcome_for_cancelled_task_is_ignored(store: Store) -> None:
    """A worker's result for a task cancelled while it ran is ignored."""
    job = make_job(store, ["a"])
    store.claim(0, NOW)
    store.set_job_state(job["id"], JobState.CANCELLED, 3)
    key = task_key(job["id"], 1)
    assert store.finish(key, TaskState.DONE, file="a.png") is None
    assert store.finish(key, TaskState.RETRY_WAIT, ready_at=NOW) is None
    assert store.finish(key, TaskState.FAILED, error="x") is None
    assert store.get_task(key)["state"] == "cancelled"


def test_late_requeue_of_cancelled_task_is_ignored(store: Store) -> None:
    """A worker dying on a task that was cancelled meanwhile does not bring the task back to pending."""
    job = make_job(store, ["a", "b"])
    store.claim(0, NOW)
    store.set_job_state(job["id"], JobState.CANCELLED, 3)
    before = store.get_job(job["id"])
    key = task_key(job["id"], 1)
    # What Scheduler.on_exit sends when the worker that held the task dies.
    assert store.finish(key, TaskState.PENDING, worker=None) is None
    assert store.get_task(key)["state"] == "cancelled"
    assert store.get_job(job["id"]) == before


def test_resume_after_late_requeue_runs_every_task(store: Store) -> None:
    """Resuming a cancelled job whose running task's worker later died queues every unfinished task."""
    job = make_job(store, ["a", "b"])
    store.claim(0, NOW)
    store.set_job_state(job["id"], JobState.CANCELLED, 3)
    store.finish(task_key(job["id"], 1), TaskState.PENDING, worker=None)  # the worker died afterwards
    store.set_job_state(job["id"], JobState.ACTIVE, 3)
    assert sorted(t["prompt"] for t in claim_all(store)) == ["a", "b"]


def test_resume_of_cancelled_job_requeues_cancelled_tasks(store: Store) -> None:
    """Resuming a cancelled job puts its cancelled tasks back in the queue with fresh budget."""
    job = make_job(store, ["a", "b"], max_attempts=2)
    store.set_job_state(job["id"], JobState.CANCELLED, 3)
    resumed = store.set_job_state(job["id"], JobState.ACTIVE, 4)
    assert resumed["state"] == "active" and resumed["finished"] is None
    assert [t["budget"] for t in store.tasks_of(job["id"])] == [4, 4]
    assert [t["prompt"] for t in claim_all(store)] == ["a", "b"]


def test_resume_of_failed_job_gives_fresh_budget(store: Store) -> None:
    """Resuming a failed job sets failed tasks pending with budget = attempts + max_attempts, errors cleared."""
    job = make_job(store, ["a", "b"], max_attempts=2)
    key_a = task_key(job["id"], 1)
    assert store.claim(0, NOW)["prompt"] == "a"
    store.finish(key_a, TaskState.RETRY_WAIT, ready_at=NOW, error="busy", error_kind="transient")
    assert store.claim(0, NOW + 1)["attempts"] == 2  # a again, its whole budget used
    store.finish(key_a, TaskState.FAILED, error="bad", error_kind="transient")
    assert store.claim(0, NOW + 1)["prompt"] == "b"
    store.finish(task_key(job["id"], 2), TaskState.DONE)
    assert store.get_job(job["id"])["state"] == "failed"
    spent = store.get_task(key_a)["attempts"]
    assert spent == 2

    resumed = store.set_job_state(job["id"], JobState.ACTIVE, 5)
    assert resumed["state"] == "active" and resumed["finished"] is None
    task = store.get_task(key_a)
    assert task["state"] == "pending"
    assert task["budget"] == spent + 5
    assert task["error"] is None and task["error_kind"] is None
    assert task["attempts"] == spent
    assert store.get_task(task_key(job["id"], 2))["state"] == "done"
    assert counts(store, job["id"]) == {"done": 1, "failed": 0, "running": 0, "pending": 1, "cancelled": 0}
    again = store.claim(0, NOW)
    assert again["prompt"] == "a" and again["attempts"] == spent + 1


def test_done_job_cannot_be_resumed(store: Store) -> None:
    """A done job refuses to become active again."""
    job = make_job(store, ["a"])
    store.claim(0, NOW)
    store.finish(task_key(job["id"], 1), TaskState.DONE)
    with pytest.raises(IllegalTransition):
        store.set_job_state(job["id"], JobState.ACTIVE, 3)
    assert store.get_job(job["id"])["state"] == "done"


def test_paused_job_cannot_go_straight_to_failed(store: Store) -> None:
    """Job transitions are checked: paused -> failed is refused."""
    job = make_job(store, ["a"])
    store.set_job_state(job["id"], JobState.PAUSED, 3)
    with pytest.raises(IllegalTransition):
        store.set_job_state(job["id"], JobState.FAILED, 3)
    assert store.get_job(job["id"])["state"] == "paused"


# --- growth and durability --------------------------------------------------------


def test_map_full_grows_and_survives_reopen(tmp_path: Path) -> None:
    """A store opened with a 64 KiB map still takes a 3000-prompt job, and the data survives reopening."""
    path = tmp_path / "store"
    prompts = [f"prompt number {i}: a lighthouse on a cliff at dusk, oil painting" for i in range(3000)]
    small = Store(path, map_size=64 << 10)
    try:
        job = make_job(small, prompts)
        assert small.env.info()["map_size"] > 64 << 10
        assert counts(small, job["id"])["pending"] == 3000
    finally:
        small.close()
    reopened = Store(path, map_size=64 << 10)
    try:
        tasks = reopened.tasks_of(job["id"])
        assert [t["prompt"] for t in tasks] == prompts
        assert reopened.get_job(job["id"])["total"] == 3000
        first = reopened.claim(0, NOW)
        assert first["prompt"] == prompts[0]
        reopened.finish(task_key(job["id"], 1), TaskState.DONE)
        assert counts(reopened, job["id"])["done"] == 1
        # A second big job still fits: the map keeps growing as needed.
        second = make_job(reopened, prompts)
        assert len(reopened.tasks_of(second["id"])) == 3000
    finally:
        reopened.close()


def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    """Jobs, task states, queues and retries written by one Store are all seen by a new Store on the path."""
    path = tmp_path / "store"
    first = Store(path)
    a = make_job(first, ["a1", "a2", "a3", "a4"])
    b = make_job(first, ["b1"])
    first.claim(0, NOW)  # a1
    first.claim(0, NOW)  # a2
    first.finish(task_key(a["id"], 1), TaskState.DONE, file="a1.png")
    first.finish(task_key(a["id"], 2), TaskState.RETRY_WAIT, ready_at=NOW + 50)
    first.set_job_state(b["id"], JobState.PAUSED, 3)
    first.record_browser(1, {"pid": 4242, "profile": "/x"})
    first.close()

    second = Store(path)
    try:
        assert [j["id"] for j in second.list_jobs()] == [a["id"], b["id"]]
        assert states(second, a["id"]) == ["done", "retry_wait", "pending", "pending"]
        assert second.get_task(task_key(a["id"], 1))["file"] == "a1.png"
        assert second.get_job(b["id"])["state"] == "paused"
        assert counts(second, a["id"]) == {"done": 1, "failed": 0, "running": 0, "pending": 3, "cancelled": 0}
        assert second.next_retry_at() == pytest.approx(NOW + 50, abs=0.001)
        assert second.recorded_browsers() == {"1": {"pid": 4242, "profile": "/x"}}
        assert [t["prompt"] for t in claim_all(second, NOW + 60)] == ["a2", "a3", "a4"]
        # A new job after reopening continues the sequence.
        c = make_job(second, ["c1"])
        assert c["seq"] == 3
    finally:
        second.close()


def test_recorded_browsers_add_remove_clear(store: Store) -> None:
    """Browsers are recorded per worker, removed with None and cleared all at once."""
    assert store.recorded_browsers() == {}
    store.record_browser(1, {"pid": 10})
    store.record_browser(2, {"pid": 20})
    store.record_browser(1, None)
    assert store.recorded_browsers() == {"2": {"pid": 20}}
    store.record_browser_clear()
    assert store.recorded_browsers() == {}


def test_counts_always_add_up_through_a_lifecycle(store: Store) -> None:
    """Through claims, retries, requeues, pause, resume and cancel the counts always sum to the total."""
    job = make_job(store, [f"p{i}" for i in range(10)])
    jid = job["id"]
    for _ in range(4):
        store.claim(0, NOW)
    counts(store, jid)
    store.finish(task_key(jid, 1), TaskState.DONE)
    store.finish(task_key(jid, 2), TaskState.RETRY_WAIT, ready_at=NOW)
    store.finish(task_key(jid, 3), TaskState.FAILED)
    counts(store, jid)
    store.set_job_state(jid, JobState.PAUSED, 3)
    counts(store, jid)
    store.requeue_running()
    counts(store, jid)
    store.set_job_state(jid, JobState.ACTIVE, 3)
    counts(store, jid)
    store.set_job_state(jid, JobState.CANCELLED, 3)
    final = counts(store, jid)
    assert final["done"] == 1 and final["pending"] == 0 and final["running"] == 0
    assert final["failed"] + final["cancelled"] == 9
    # Sanity: the store state matches the counts.
    st = states(store, jid)
    assert st.count("done") == 1 and st.count("failed") + st.count("cancelled") == 9


def test_task_key_format() -> None:
    """Task keys are JOB/NNNNNN with a six-digit index, so they sort in input order."""
    assert task_key("abcd1234", 7) == b"abcd1234/000007"
    keys = [task_key("j", i) for i in (1, 2, 10, 100, 999999)]
    assert keys == sorted(keys)


def test_finish_uses_wall_clock_for_job_finished(store: Store) -> None:
    """A job's finished time is set from the clock when its last task ends."""
    job = make_job(store, ["a"])
    store.claim(0, NOW)
    before = time.time()
    _, j = store.finish(task_key(job["id"], 1), TaskState.DONE)
    assert before <= j["finished"] <= time.time()
    assert all(b in j["counts"] for b in BUCKETS)


def test_store_format_is_stamped_and_a_newer_one_refused(tmp_path: Path) -> None:
    """A new store gets format 1 and keeps it across opens; one stamped by a newer tabfleetd is refused, untouched."""
    path = tmp_path / "store"
    first = Store(path)
    assert first.format == FORMAT == 1
    first.close()
    again = Store(path)
    assert again.format == FORMAT
    again.close()
    env = lmdb.open(str(path), max_dbs=8, subdir=True)
    with env.begin(write=True) as txn:
        txn.put(b"format", msgpack.packb(FORMAT + 1), db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(StoreFormatError, match="format 2, written by a newer tabfleetd; this one reads format 1"):
        Store(path)
