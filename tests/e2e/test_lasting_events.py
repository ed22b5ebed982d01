"""Events last: `tabfleetctl events` shows what happened before a restart, clean or after kill -9, and the restart itself."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def all_events(daemon: Any) -> list[dict[str, Any]]:
    """Every event the daemon keeps, oldest first, as `events --all --limit 0 --json` prints them."""
    out = daemon.ctl("events", "--all", "--limit", "0", "--json", check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def run_job(daemon: Any, count: int) -> str:
    """A small finished job on the demo site; returns its id."""
    job = daemon.submit([f"a lasting lantern {i}" for i in range(count)], "latency=0.1")
    assert daemon.wait_job(job, timeout=60)["done"] == count
    return job


def test_events_survive_a_clean_restart_with_the_stop_and_start_as_events(make_daemon: Any) -> None:
    """After a clean stop and a start on the same state dir, the job's task events are still listed, followed by
    daemon_stopped and a daemon_started that says the run before ended cleanly; seqs carry on."""
    daemon = make_daemon(workers=1)
    job = run_job(daemon, 3)
    first_pid = daemon.proc.pid
    assert daemon.stop() == 0
    daemon.start()
    events = all_events(daemon)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    kinds = [e["kind"] for e in events]
    done = [e for e in events if e["kind"] == "task_done" and e.get("job") == job]
    assert sorted(e["index"] for e in done) == [1, 2, 3]
    assert kinds.count("daemon_started") == 2 and kinds.count("daemon_stopped") == 1
    stopped = kinds.index("daemon_stopped")
    assert stopped > kinds.index("task_done") and kinds[stopped + 1] == "daemon_started"
    stop, start = events[stopped], events[stopped + 1]
    assert stop["pid"] == first_pid
    assert start["pid"] == daemon.proc.pid and start["previous_clean"] is True and start["version"]
    assert events[0]["kind"] == "daemon_started" and events[0]["previous_clean"] is None  # a new store
    # status says how many the store keeps (the soak draws it over time).
    daemon.wait_for(lambda: daemon.call("status")["events_stored"] >= len(events), 5, "status to count the stored events")
    # The task view (no --all) reads them from the store too.
    lines = daemon.ctl("events", job, check=True).stdout.splitlines()
    assert sum(" done 000" in line for line in lines) == 3


def test_events_flushed_before_a_kill9_survive_and_the_start_says_it_was_not_clean(make_daemon: Any) -> None:
    """Events older than a second when the daemon is killed with SIGKILL are listed after the restart, with no
    daemon_stopped, and daemon_started names the killed daemon as not ended cleanly."""
    daemon = make_daemon(workers=1)
    job = run_job(daemon, 2)
    time.sleep(1.5)  # the flush interval is 1 s
    killed_pid = daemon.proc.pid
    daemon.kill9()
    assert not daemon.leftovers(wait=15), "workers or Chromium outlived the killed daemon"
    daemon.start()
    events = all_events(daemon)
    assert sorted(e["index"] for e in events if e["kind"] == "task_done" and e.get("job") == job) == [1, 2]
    assert any(e["kind"] == "job_done" and e.get("job") == job for e in events)
    assert not [e for e in events if e["kind"] == "daemon_stopped"]
    start = [e for e in events if e["kind"] == "daemon_started"][-1]
    assert start["previous_clean"] is False and start["previous_pid"] == killed_pid
    assert start["seq"] > max(e["seq"] for e in events if e.get("job") == job)
