"""Unit tests for Scheduler.forget: a pruned job leaves no trace in the scheduler's in-memory tables."""

from __future__ import annotations

from typing import Any

from tabfleetd.store.events import EventLog
from tabfleetd.schedule.held import HeldImages
from tabfleetd.schedule.retries import RetryPolicy
from tabfleetd.schedule.scheduler import Scheduler
from tabfleetd.store.store import task_key


def scheduler() -> Scheduler:
    # forget() touches neither the store nor the fleet: plain placeholders stand in for them.
    return Scheduler(store=None, fleet=None, policy=RetryPolicy(1.0, 2.0), site_urls=None,  # type: ignore[arg-type]
                     deadline_s=60.0, events=EventLog())


def per_job_tables(s: Scheduler) -> dict[str, Any]:
    """Every dict-like attribute of the scheduler (and its disk waits), by name."""
    tables = {name: v for name, v in vars(s).items() if isinstance(v, dict)}
    tables["disk.waiting"] = s.disk.waiting
    return tables


def test_the_table_forgets_pruned_jobs() -> None:
    """After forget, no table keyed by job holds the job, and the others' entries stay."""
    s = scheduler()
    s.disk.full("old", "disk full", 0.0)
    s.disk.full("kept", "disk full", 0.0)
    for job in ("old", "kept"):
        s.jobs[job] = {"id": job}
        s.finish_times[job].append(1.0)
        s.job_events[job].set()
        s.running_per_job[job] += 1
        s.first_dispatch[job] = 1.0
        s.free_checked[job] = 1.0
        s.held.hold(task_key(job, 3), b"png")
    holding = {name for name, t in per_job_tables(s).items() if "old" in t}
    assert holding >= {"jobs", "finish_times", "job_events", "running_per_job", "first_dispatch", "free_checked", "disk.waiting"}
    s.forget(["old"])
    assert [name for name, t in per_job_tables(s).items() if "old" in t] == []
    assert all("kept" in per_job_tables(s)[name] for name in holding)
    assert s.held.get(task_key("old", 3)) is None and s.held.get(task_key("kept", 3)) == b"png"


def test_held_images_of_a_job_are_dropped_with_their_size() -> None:
    """drop_job frees the job's images and their bytes, not another job's with a longer id."""
    held = HeldImages(1000)
    held.hold(task_key("ab", 1), b"x" * 100)
    held.hold(task_key("ab", 2), b"x" * 50)
    held.hold(task_key("abc", 1), b"x" * 10)
    held.drop_job("ab")
    assert len(held) == 1 and held.size == 10
