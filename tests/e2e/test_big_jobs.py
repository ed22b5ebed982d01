"""Very large jobs: the store is worked in bounded transactions, `tasks` is paged, and the caps refuse too much."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tabfleetctl.client import Client
from tabfleetd.files.outputs import MARKER

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

BIG = 200_000
STATUS_BOUND_S = 2.0  # one transaction for the whole job took about 6 s at this size


class StatusPoller(threading.Thread):
    """Calls status on its own connection every 20 ms and keeps the slowest answer."""

    def __init__(self, socket: Path) -> None:
        super().__init__(daemon=True)
        self.socket = socket
        self.slowest = 0.0
        self.calls = 0
        self.running = True

    def run(self) -> None:
        with Client(self.socket, 60) as client:
            while self.running:
                started = time.monotonic()
                client.call("status")
                self.slowest = max(self.slowest, time.monotonic() - started)
                self.calls += 1
                time.sleep(0.02)

    def stop(self) -> None:
        self.running = False
        self.join(60)


def big_file(daemon: Any, count: int) -> str:
    (daemon.work / "big.txt").write_text("".join(f"a lighthouse at dusk, study {i}\n" for i in range(count)))
    return "big.txt"


def test_cancelling_a_huge_job_does_not_starve_status(make_daemon: Any) -> None:
    """A 200,000-prompt job is queued, listed page by page and cancelled while status keeps answering quickly."""
    daemon = make_daemon(workers=1)
    poller = StatusPoller(daemon.socket)
    poller.start()
    try:
        submitted = daemon.ctl("submit", big_file(daemon, BIG), "--json", "--knob", "latency=60", check=True)
        job = json.loads(submitted.stdout)["job"]
        listed = daemon.ctl("tasks", job, "--json", check=True, timeout=300)
        indexes = [json.loads(line)["index"] for line in listed.stdout.splitlines()]
        assert indexes == list(range(1, BIG + 1))  # every task once, in order, through pages
        assert daemon.call("tasks", {"job": job})["next"] == 1000  # one reply is one page, never the whole job
        daemon.ctl("cancel", job, check=True, timeout=300)
    finally:
        poller.stop()
    status = daemon.call("status", {"job": job})["jobs"][0]
    assert status["state"] == "cancelled" and status["pending"] == 0
    assert status["cancelled"] + status["done"] + status["failed"] == BIG
    assert poller.calls > 20 and poller.slowest < STATUS_BOUND_S, (poller.calls, poller.slowest)


def test_a_submit_killed_while_loading_leaves_no_job_and_no_marker(make_daemon: Any) -> None:
    """kill -9 while a huge submit is being queued: the next start removes the partial job and its out dir's marker."""
    daemon = make_daemon(workers=1)
    out = daemon.work / "half"
    proc = subprocess.Popen([sys.executable, "-m", "tabfleetctl", "--socket", str(daemon.socket), "submit",
                             big_file(daemon, 2 * BIG), "--out", str(out)], cwd=daemon.work,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        daemon.wait_for(lambda: (out / MARKER).exists() or proc.poll() is not None, 120, "the out dir's claim")
        daemon.kill9()
    finally:
        proc.kill()
        proc.wait()
    daemon.start()
    daemon.wait_for(lambda: not (out / MARKER).exists(), 60, "the interrupted job's marker to go")
    assert daemon.call("status")["jobs"] == []
    assert "was still being queued" in daemon.log_text()
    # The directory is free again: the same submit now goes through whole.
    again = daemon.ctl("submit", "big.txt", "--out", str(out), "--json", "--knob", "latency=60", check=True, timeout=300)
    assert json.loads(again.stdout)["tasks"] == 2 * BIG


def test_the_caps_refuse_a_job_too_big_or_too_much_queued(make_daemon: Any) -> None:
    """max_tasks_per_job and max_queued_tasks refuse a submit with a message naming the key; smaller ones pass."""
    daemon = make_daemon(workers=1, config={"max_tasks_per_job": 5, "max_queued_tasks": 8})
    for name, count in [("six.txt", 6), ("five.txt", 5), ("four.txt", 4), ("three.txt", 3)]:
        (daemon.work / name).write_text("".join(f"prompt {i}\n" for i in range(count)))
    too_big = daemon.ctl("submit", "six.txt")
    assert too_big.returncode == 4 and "6 prompts, over the limit of 5 per job (max_tasks_per_job)" in too_big.stderr
    daemon.ctl("submit", "five.txt", "--knob", "latency=60", check=True)
    too_many = daemon.ctl("submit", "four.txt")
    assert too_many.returncode == 4 and "max_queued_tasks" in too_many.stderr
    assert daemon.ctl("submit", "three.txt", "--knob", "latency=60").returncode == 0
    assert sum(j["total"] for j in daemon.call("status")["jobs"]) == 8
