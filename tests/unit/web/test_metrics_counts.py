"""The metrics collector's per-job counts stay bounded by the jobs the daemon holds, scraped or not."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from tabfleetd.store.events import EventLog
from tabfleetd.web.metrics import JOB_COUNTS_SLACK, FleetCollector


def _daemon(jobs: dict[str, Any]) -> Any:
    return SimpleNamespace(events=EventLog(), scheduler=SimpleNamespace(jobs=jobs))


def _job(job_id: str) -> dict[str, Any]:
    return {"id": job_id, "site": "demo", "state": "active", "counts": {}}


def test_unscraped_collector_forgets_pruned_jobs() -> None:
    """Thousands of jobs that come and go leave no more than the slack of counts behind, with no scrape at all."""
    jobs: dict[str, Any] = {}
    daemon = _daemon(jobs)
    collector = FleetCollector(daemon)
    for n in range(5000):
        job_id = f"job{n}"
        jobs[job_id] = _job(job_id)
        daemon.events.emit("task_done", job=job_id, index=0, seconds=1.0)
        daemon.events.emit("task_failed", job=job_id, index=1, error_kind="error")
        del jobs[job_id]  # pruned by retention
    assert len(collector.job_finished) <= JOB_COUNTS_SLACK + 2
    assert collector.finished == {"done": 5000, "failed": 5000}


def test_held_jobs_keep_their_counts() -> None:
    """Counts of jobs still held survive the pruning of the others."""
    jobs = {f"kept{n}": _job(f"kept{n}") for n in range(10)}
    daemon = _daemon(jobs)
    collector = FleetCollector(daemon)
    for job_id in list(jobs):
        daemon.events.emit("task_done", job=job_id, index=0)
    for n in range(JOB_COUNTS_SLACK * 2):
        jobs[f"gone{n}"] = _job(f"gone{n}")
        daemon.events.emit("task_done", job=f"gone{n}", index=0)
        del jobs[f"gone{n}"]
    assert all(collector.job_finished[(f"kept{n}", "done")] == 1 for n in range(10))
