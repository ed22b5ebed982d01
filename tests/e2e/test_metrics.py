"""The Prometheus endpoint of a real daemon, parsed with prometheus_client's own text parser."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PORT = free_port()
DAEMON_WORKERS = 2
DAEMON_CONFIG = {"metrics_port": PORT, "retry_base_s": 0.1, "retry_cap_s": 0.2, "max_attempts": 2, "stagger_s": 0.0}


def scrape(daemon: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(name, sorted labels): value}, via the Prometheus text parser, with the bearer token Prometheus sends."""
    request = urllib.request.Request(f"http://127.0.0.1:{PORT}/metrics", headers=daemon.web_headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], metric: str, **labels: str) -> float:
    return samples[(metric, tuple(sorted(labels.items())))]


def test_metrics_after_a_batch_with_a_poison_prompt(module_daemon: Any) -> None:
    """Jobs, tasks by state, attempts by outcome, failures by class and memory match what the batch did."""
    (module_daemon.work / "p.txt").write_text("\n".join([f"a kite number {i}" for i in range(6)] + ["[[error]] x"]) + "\n")
    job = json.loads(module_daemon.ctl("submit", "p.txt", "--knob", "latency=0.2", "--json", check=True).stdout)["job"]
    module_daemon.wait_job(job, timeout=60)
    samples = scrape(module_daemon)
    assert value(samples, "tabfleet_jobs", state="failed") == 1 and value(samples, "tabfleet_jobs", state="active") == 0
    tasks = {state: value(samples, "tabfleet_tasks", state=state) for state in ("done", "failed", "running", "pending", "cancelled")}
    assert tasks == {"done": 6, "failed": 1, "running": 0, "pending": 0, "cancelled": 0}
    assert value(samples, "tabfleet_task_attempts_total", outcome="done", site="demo") == 6
    assert value(samples, "tabfleet_task_attempts_total", outcome="retry", site="demo") == 1
    assert value(samples, "tabfleet_task_attempts_total", outcome="failed", site="demo") == 1
    failures = {(dict(labels)["class"], dict(labels)["site"]): v for (name, labels), v in samples.items()
                if name == "tabfleet_task_failures_total"}
    assert failures == {("transient", "demo"): 2}, failures
    assert value(samples, "tabfleet_tasks_finished_total", outcome="done") == 6
    # The job just ended: its series stay (for the last scrapes), its name only on tabfleet_job_info.
    assert value(samples, "tabfleet_job_info", job=job, name="p", site="demo", state="failed") == 1
    assert value(samples, "tabfleet_job_tasks", job=job, state="done") == 6
    assert value(samples, "tabfleet_job_tasks_finished_total", job=job, outcome="done") == 6
    assert value(samples, "tabfleet_job_tasks_finished_total", job=job, outcome="failed") == 1
    assert not [k for k in samples if k[0] != "tabfleet_job_info" and "name" in dict(k[1])], "the name is on info only"
    assert not [k for k in samples if k[0] == "tabfleet_job_rate_per_minute"], "rates are PromQL's, not precomputed"
    # Six images at 0.2 s each: all in the histogram, none faster than the site's latency.
    assert value(samples, "tabfleet_task_duration_seconds_count", site="demo") == 6
    assert value(samples, "tabfleet_task_duration_seconds_sum", site="demo") >= 6 * 0.2
    assert value(samples, "tabfleet_task_duration_seconds_bucket", site="demo", le="+Inf") == 6
    assert value(samples, "tabfleet_oldest_pending_task_age_seconds") == 0
    assert value(samples, "tabfleet_account_quota_exhausted", account="worker-1") == 0
    assert value(samples, "tabfleet_memory_limit_bytes") > value(samples, "tabfleet_memory_used_bytes") > 0
    # What pacing learned: six 0.2 s answers give the floor deadline; nothing was refused or unreachable.
    assert value(samples, "tabfleet_site_answer_deadline_seconds", site="demo") == 5.0
    assert value(samples, "tabfleet_site_rate_limit_answers_total", site="demo") == 0
    assert value(samples, "tabfleet_site_unreachable", site="demo") == 0
    assert value(samples, "tabfleet_account_cooling_seconds", account="worker-1") == 0
    assert value(samples, "tabfleet_memory_total_bytes") > 0
    assert value(samples, "tabfleet_worker_memory_bytes", worker="1") > 0
    assert value(samples, "process_resident_memory_bytes") > 0
    assert value(samples, "tabfleet_info", version=value_label(samples, "tabfleet_info", "version")) == 1
    # Every event reaches the store within about a second: the batch's nine (6 done, a retry, a failure, the job's
    # end) and the daemon's start.
    module_daemon.wait_for(lambda: (s := scrape(module_daemon)) and value(s, "tabfleet_events_pending") == 0
                           and value(s, "tabfleet_events_stored") >= 10, 5, "events in the store")


def test_openmetrics_when_the_scraper_asks_for_it(module_daemon: Any) -> None:
    """A scraper that accepts OpenMetrics gets it, and prometheus_client's OpenMetrics parser reads it."""
    request = urllib.request.Request(f"http://127.0.0.1:{PORT}/metrics",
                                     headers={"Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"}
                                     | module_daemon.web_headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        text = response.read().decode()
    assert text.endswith("# EOF\n")
    names = {f.name for f in openmetrics_families(text)}
    assert {"tabfleet_jobs", "tabfleet_tasks", "tabfleet_task_attempts", "tabfleet_worker_restarts"} <= names


def value_label(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, label: str) -> str:
    return next(dict(labels)[label] for (n, labels) in samples if n == name)


def test_running_job_and_worker_restart(module_daemon: Any) -> None:
    """A running job has per-job series that add up; a killed worker shows as a restart."""
    (module_daemon.work / "q.txt").write_text("\n".join(f"a paper lantern number {i}" for i in range(6)) + "\n")
    job = json.loads(module_daemon.ctl("submit", "q.txt", "--knob", "latency=0.3", "--json", check=True).stdout)["job"]
    time.sleep(1)
    samples = scrape(module_daemon)
    per_job = {dict(labels)["state"]: v for (name, labels), v in samples.items()
               if name == "tabfleet_job_tasks" and dict(labels)["job"] == job}
    assert sum(per_job.values()) == 6, per_job
    assert value(samples, "tabfleet_oldest_pending_task_age_seconds") >= 1, "the job's tasks have waited since submit"
    before = value(samples, "tabfleet_worker_restarts_total", worker="2")
    pid = next(w["pid"] for w in module_daemon.call("workers")["workers"] if w["id"] == 2)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while value(scrape(module_daemon), "tabfleet_worker_restarts_total", worker="2") < before + 1:
        assert time.monotonic() < deadline, "the restart did not show"
        time.sleep(0.2)
    assert module_daemon.wait_job(job, timeout=60)["done"] == 6
