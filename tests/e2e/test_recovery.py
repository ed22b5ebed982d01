"""Never lose a task: failure classes, crashes of each process, adoption, and the end state of every task."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from tabfleetd.demo.demoimage import render_png
from tabfleetd.files.outputs import output_name

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

FAST_RETRIES = {"retry_base_s": 0.2, "retry_cap_s": 1.0, "restart_delay_s": 0.5}






class FileWatch:
    """Remembers the inode of each output file the first time it is seen, to prove none is written twice."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.inodes: dict[str, int] = {}

    def look(self) -> None:
        if self.out.is_dir():
            for path in self.out.glob("*.png"):
                try:
                    self.inodes.setdefault(path.name, path.stat().st_ino)
                except FileNotFoundError:
                    pass

    def assert_written_once(self) -> None:
        self.look()
        for name, inode in self.inodes.items():
            assert (self.out / name).stat().st_ino == inode, f"{name} was written twice"


def assert_end_state(daemon: Any, job: str, prompts: list[str], failed: set[int] = frozenset()) -> list[dict[str, Any]]:
    """Every task ended done or failed exactly once, each done task's file is its prompt's exact PNG."""
    tasks = {t["index"]: t for t in daemon.call("tasks", {"job": job})["tasks"]}
    out = daemon.work / "tabfleet-out" / job
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    indexes = [r["index"] for r in manifest]
    assert len(indexes) == len(set(indexes)), "a task was recorded as finished twice"
    for index, prompt in enumerate(prompts, start=1):
        expect = "failed" if index in failed else "done"
        assert tasks[index]["state"] == expect, (index, tasks[index])
        path = out / output_name(index, prompt)
        if expect == "done":
            assert path.read_bytes() == render_png(prompt), f"{path.name} is not its prompt's image"
            assert index in indexes
        else:
            assert not path.exists() and index not in indexes
    assert sorted(p.name for p in out.glob("*.png")) == sorted(
        output_name(i, p) for i, p in enumerate(prompts, start=1) if i not in failed)
    return manifest


def generated(daemon: Any) -> dict[str, int]:
    url = daemon.call("ping")["demo_url"]
    with urllib.request.urlopen(f"{url}/api/stats", timeout=10) as reply:
        return json.load(reply)["generated"]


def busy_worker(daemon: Any) -> dict[str, Any]:
    return daemon.wait_for(lambda: next((w for w in daemon.call("workers")["workers"] if w["state"] == "busy"), None), 30, "a busy worker")


def test_killed_chromium_is_a_crash_that_is_retried(make_daemon: Any) -> None:
    """kill -9 of a busy worker's Chromium fails its task as a crash, the worker starts a new browser, and all finish."""
    daemon = make_daemon(config=FAST_RETRIES)
    daemon.wait_workers_idle(2)
    prompts = [f"chromium kill {i}" for i in range(8)]
    job = daemon.submit(prompts, "latency=1.5")
    worker = busy_worker(daemon)
    browser = next(p for p in psutil.Process(worker["pid"]).children() if "chrom" in p.name() or "setpriv" in p.name())
    browser.kill()
    status = daemon.wait_job(job)
    assert status["done"] == len(prompts)
    assert_end_state(daemon, job, prompts)
    retried = [t for t in daemon.call("tasks", {"job": job})["tasks"] if t["attempts"] > 1]
    assert retried and retried[0]["error_kind"] is None  # done now; the crash was its earlier attempt
    after = next(w for w in daemon.call("workers")["workers"] if w["id"] == worker["id"])
    assert after["pid"] == worker["pid"], f"a dead browser is replaced by the worker, not by a restart:\n{daemon.log_text()}"


def test_error_burst_ends_with_every_task_done(make_daemon: Any) -> None:
    """A site that fails 30 % of prompts still ends with every task done, each retried task done exactly once."""
    daemon = make_daemon(config=FAST_RETRIES | {"max_attempts": 10})
    prompts = [f"flaky prompt {i}" for i in range(24)]
    job = daemon.submit(prompts, "latency=0.2", "error_rate=0.3")
    status = daemon.wait_job(job)
    assert status["done"] == len(prompts) and status["failed"] == 0
    manifest = assert_end_state(daemon, job, prompts)
    assert any(r["attempts"] > 1 for r in manifest), "with 30 % errors some task should have needed a retry"
    counts = generated(daemon)
    assert all(counts[p] == 1 for p in prompts), "an image was generated twice"


def test_poison_prompt_fails_alone(make_daemon: Any) -> None:
    """A prompt that always fails ends failed after its attempts; the others are done and no worker is stuck."""
    daemon = make_daemon(config=FAST_RETRIES | {"max_attempts": 3})
    prompts = [f"good {i}" for i in range(6)] + ["poison [[error]]"]
    job = daemon.submit(prompts, "latency=0.2")
    status = daemon.wait_job(job)
    assert (status["state"], status["done"], status["failed"]) == ("failed", 6, 1)
    assert_end_state(daemon, job, prompts, failed={7})
    poison = daemon.call("tasks", {"job": job, "state": "failed"})["tasks"][0]
    assert poison["attempts"] == 3 and poison["error_kind"] == "transient"
    assert generated(daemon).get("poison [[error]]") is None
    daemon.wait_workers_idle(2)
    result = daemon.ctl("resume", job, check=True)
    assert "resumed" in result.stdout
    status = daemon.wait_job(job)
    assert status["failed"] == 1 and daemon.call("tasks", {"job": job, "state": "failed"})["tasks"][0]["attempts"] == 6


def test_daemon_kill9_adopts_finished_images_and_writes_nothing_twice(make_daemon: Any) -> None:
    """After kill -9 of the daemon, a restart adopts images already on disk, generates the rest once, and loses nothing."""
    daemon = make_daemon(config=FAST_RETRIES)
    prompts = [f"adopt me {i}" for i in range(14)]
    job = daemon.submit(prompts, "latency=1")
    out = daemon.work / "tabfleet-out" / job
    watch = FileWatch(out)
    daemon.wait_for(lambda: (watch.look(), len(watch.inodes) >= 3)[1], 60, "three images")
    daemon.kill9()
    assert not daemon.leftovers(wait=15), "workers or Chromium outlived the killed daemon"
    watch.look()
    # An image that reached the disk just before the crash but never reached the store:
    pending = [t for t in prompts if output_name(prompts.index(t) + 1, t) not in watch.inodes]
    planted_prompt = pending[-1]
    planted = out / output_name(prompts.index(planted_prompt) + 1, planted_prompt)
    planted.write_bytes(render_png(planted_prompt))
    watch.look()
    started = time.monotonic()
    daemon.start()
    daemon.wait_for(lambda: daemon.call("status", {"job": job})["jobs"][0]["running"] > 0, 10, "work to resume")
    resumed_in = time.monotonic() - started
    while daemon.call("status", {"job": job})["jobs"][0]["state"] == "active":
        watch.look()
        time.sleep(0.1)
    assert_end_state(daemon, job, prompts)
    watch.assert_written_once()
    assert generated(daemon).get(planted_prompt) is None, "the planted image was generated again"
    assert resumed_in < 5, f"work resumed {resumed_in:.1f} s after the restart"


def test_logged_out_worker_stops_taking_tasks_without_burning_attempts(make_daemon: Any) -> None:
    """An auth failure blocks that worker with the reason in status; the task moves on with its attempt refunded."""
    daemon = make_daemon(workers=2, config=FAST_RETRIES | {"max_attempts": 2})
    daemon.wait_workers_idle(2)
    prompts = ["first [[logout]]"] + [f"after {i}" for i in range(5)]
    job = daemon.submit(prompts, "latency=0.2")
    workers = daemon.wait_for(lambda: (ws := daemon.call("workers")["workers"]) and all(w["state"] == "blocked" for w in ws) and ws,
                       60, "both workers to be blocked")
    for worker in workers:
        assert "auth" in worker["health"] and "log in" in worker["health"]
    status = daemon.call("status", {"job": job})["jobs"][0]
    task = daemon.call("tasks", {"job": job})["tasks"][0]
    assert task["state"] == "pending" and task["attempts"] == 2, "the auth failures must not fail the task"
    assert status["failed"] == 0 and status["state"] == "active"
    assert daemon.ctl("status", check=True).stdout.count("blocked: auth") == 2
    daemon.ctl("cancel", job, check=True)
    daemon.ctl("workers", "restart", "1", check=True)
    daemon.wait_for(lambda: next(w for w in daemon.call("workers")["workers"] if w["id"] == 1)["state"] == "idle", 30,
             "worker 1 to come back")


def test_three_failures_in_a_row_restart_the_worker(make_daemon: Any) -> None:
    """A worker whose browser fails three tasks in a row (Chromium killed) is restarted, and its restarts show in status."""
    daemon = make_daemon(workers=1, config=FAST_RETRIES)
    daemon.wait_workers_idle(1)
    first_pid = daemon.call("workers")["workers"][0]["pid"]
    prompts = [f"crashing {i}" for i in range(3)]
    job = daemon.submit(prompts, "latency=2")
    for crashes in range(1, 4):
        daemon.wait_for(lambda: daemon.call("status", {"job": job})["jobs"][0]["running"] == 1, 60, "a running task")
        time.sleep(0.5)  # into the site's 2 s answer
        worker = daemon.call("workers")["workers"][0]
        browser = next(p for p in psutil.Process(worker["pid"]).children() if "chrom" in p.name() or "setpriv" in p.name())
        browser.kill()
        daemon.wait_for(lambda: len(daemon.call("events", {"job": job, "kinds": ["task_retry"]})["events"]) == crashes, 30,
                        f"crash {crashes} to be recorded")
    status = daemon.wait_job(job)
    assert status["done"] == len(prompts)
    worker = daemon.call("workers")["workers"][0]
    assert worker["restarts"] == 1 and worker["pid"] != first_pid, daemon.log_text()
    tasks = daemon.call("tasks", {"job": job})["tasks"]
    assert sum(t["attempts"] for t in tasks) == len(prompts) + 3, "each crash costs the attempt it cut short, nothing more"


def test_site_errors_in_a_row_do_not_restart_the_worker(make_daemon: Any) -> None:
    """Errors the site reports (a transient error message) are the site's, never counted against the worker."""
    daemon = make_daemon(workers=1, config=FAST_RETRIES | {"max_attempts": 1})
    daemon.wait_workers_idle(1)
    first_pid = daemon.call("workers")["workers"][0]["pid"]
    prompts = [f"bad {i} [[error]]" for i in range(4)] + ["good one"]
    job = daemon.submit(prompts, "latency=0.1")
    status = daemon.wait_job(job)
    assert (status["done"], status["failed"]) == (1, 4)
    worker = daemon.call("workers")["workers"][0]
    assert worker["restarts"] == 0 and worker["pid"] == first_pid


def test_sigterm_requeues_in_flight_tasks_without_charging_them(make_daemon: Any) -> None:
    """On SIGTERM the daemon exits 0 and tasks cut off after the grace period are pending with their attempt refunded."""
    daemon = make_daemon(config={"grace_s": 0.2})
    daemon.wait_workers_idle(2)
    job = daemon.submit(["slow one", "slow two"], "latency=30")
    daemon.wait_for(lambda: daemon.call("status", {"job": job})["jobs"][0]["running"] == 2, 30, "both tasks running")
    assert daemon.stop() == 0
    assert not daemon.leftovers()
    from tabfleetd.store.store import Store

    store = Store(daemon.state / "store")
    try:
        tasks = store.tasks_of(job)
    finally:
        store.close()
    assert [t["state"] for t in tasks] == ["pending", "pending"], daemon.log_text()
    assert all(t["budget"] - t["attempts"] == 5 for t in tasks), "an interrupted attempt must not count"


def test_worker_killed_repeatedly_backs_off(make_daemon: Any) -> None:
    """A worker that keeps dying is restarted after growing delays, shown in its health."""
    daemon = make_daemon(workers=1, config={"restart_delay_s": 1.0})
    daemon.wait_workers_idle(1)
    delays = []
    for _ in range(3):
        worker = daemon.wait_for(lambda: next((w for w in daemon.call("workers")["workers"] if w["state"] == "idle"), None), 60,
                          "an idle worker")
        os.kill(worker["pid"], signal.SIGKILL)
        restarting = daemon.wait_for(lambda: next((w for w in daemon.call("workers")["workers"] if w["state"] == "restarting"), None),
                              10, "the restart delay")
        assert restarting["health"].startswith("restarting in")
        delays.append(restarting["restart_at"] - time.time())
    assert delays[2] > delays[0], f"restart delays should grow: {delays}"


def test_silent_worker_is_killed_with_its_browser(make_daemon: Any) -> None:
    """A worker that stops sending heartbeats (SIGSTOP) is killed with its Chromium and replaced; its task is retried."""
    daemon = make_daemon(workers=1, config=FAST_RETRIES | {"heartbeat_timeout_s": 3.0})
    daemon.wait_workers_idle(1)
    prompts = ["frozen worker prompt", "next prompt"]
    job = daemon.submit(prompts, "latency=2")
    worker = busy_worker(daemon)
    browsers = [p for p in psutil.Process(worker["pid"]).children(recursive=True)]
    os.kill(worker["pid"], signal.SIGSTOP)
    replaced = daemon.wait_for(lambda: next((w for w in daemon.call("workers")["workers"]
                                      if w["pid"] not in (None, worker["pid"]) and w["state"] in ("idle", "busy")), None),
                        30, "a new worker")
    assert replaced["restarts"] == 1 and "heartbeat" in (replaced["last_error"] or "")
    assert not psutil.pid_exists(worker["pid"]) or psutil.Process(worker["pid"]).status() == psutil.STATUS_ZOMBIE
    time.sleep(1)
    assert not [p for p in browsers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], "its Chromium lives on"
    assert daemon.wait_job(job)["done"] == 2
    assert_end_state(daemon, job, prompts)
