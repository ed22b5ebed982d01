"""Daemon start, stop, restart and worker death, with real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tabfleetd.demo.demoimage import render_png
from tabfleetd.files.outputs import output_name

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]




def assert_images(daemon: Any, job: str, prompts: list[str]) -> None:
    out = daemon.work / "tabfleet-out" / job
    for index, prompt in enumerate(prompts, start=1):
        assert (out / output_name(index, prompt)).read_bytes() == render_png(prompt)
    manifest = (out / "manifest.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["index"] for line in manifest) == list(range(1, len(prompts) + 1))




def test_second_daemon_on_same_state_dir_refuses(make_daemon: Any) -> None:
    """A second tabfleetd on the same state dir exits 75 with a message naming the dir, and the first keeps working."""
    first = make_daemon()
    second = subprocess.run(first.argv()[:-4] + ["--socket", str(first.root / "other.sock")],
                            capture_output=True, text=True, timeout=30)
    assert second.returncode == 75
    assert "already" in second.stderr and str(first.state) in second.stderr
    assert first.call("ping")["pong"]


def test_second_daemon_on_same_socket_refuses(make_daemon: Any) -> None:
    """A second tabfleetd with another state dir but the same socket refuses to start."""
    first = make_daemon()
    argv = first.argv()
    argv[argv.index("--state-dir") + 1] = str(first.root / "state2")
    second = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert second.returncode == 75 and "already listening on" in second.stderr
    assert first.call("ping")["pong"]


def test_missing_chromium_is_one_clear_line(short_tmp: Path) -> None:
    """Without any Chromium the daemon exits 69 with one line that names the OS package."""
    env = dict(os.environ, PATH=str(short_tmp))
    result = subprocess.run([sys.executable, "-m", "tabfleetd", "--socket", str(short_tmp / "s"), "--state-dir",
                             str(short_tmp / "st")], capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 69
    assert len(result.stderr.strip().splitlines()) == 1 and "apt-get install chromium" in result.stderr


def test_ctl_without_daemon(short_tmp: Path) -> None:
    """Every ctl command says clearly that the daemon is not running, with exit code 3."""
    for args in (["ping"], ["status"], ["workers"], ["pause", "x"], ["shutdown"]):
        result = subprocess.run([sys.executable, "-m", "tabfleetctl", "--socket", str(short_tmp / "none.sock"), *args],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 3 and "tabfleetd is not running" in result.stderr, args


def test_killed_worker_is_restarted_and_its_task_retried(daemon: Any) -> None:
    """kill -9 of a busy worker: it is restarted, its Chromium ends, and the batch still finishes with every image."""
    prompts = [f"kill test prompt {i}" for i in range(8)]
    daemon.wait_workers_idle(2)
    job = daemon.submit(prompts, "latency=1.5")
    busy = daemon.wait_for(lambda: [w for w in daemon.call("workers")["workers"] if w["state"] == "busy"], 20, "a busy worker")[0]
    victim = psutil.Process(busy["pid"])
    browsers = [p for p in victim.children(recursive=True) if "chromium" in p.name()]
    assert browsers, "the worker should own a Chromium"
    os.kill(busy["pid"], signal.SIGKILL)
    status = daemon.wait_job(job)
    assert status["state"] == "done" and status["done"] == len(prompts)
    assert_images(daemon, job, prompts)
    worker = next(w for w in daemon.call("workers")["workers"] if w["id"] == busy["id"])
    assert worker["restarts"] == 1 and worker["pid"] != busy["pid"]
    time.sleep(1)
    assert not [p for p in browsers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], "the dead worker's Chromium lives on"


def test_sigterm_mid_batch_then_restart_finishes(make_daemon: Any) -> None:
    """SIGTERM mid-batch exits 0 and leaves no Chromium; a new daemon carries the job on to the end."""
    daemon = make_daemon(config={"grace_s": 0.5})
    prompts = [f"restart prompt {i}" for i in range(12)]
    job = daemon.submit(prompts, "latency=1")
    daemon.wait_for(lambda: daemon.call("status", {"job": job})["jobs"][0]["done"] >= 2, 60, "two images")
    assert daemon.stop() == 0
    assert not daemon.leftovers(), "Chromium outlived a stopped daemon"
    daemon.start()
    status = daemon.wait_job(job)
    assert status["done"] == len(prompts)
    assert_images(daemon, job, prompts)


def test_kill9_daemon_then_restart_resumes(make_daemon: Any) -> None:
    """kill -9 of the daemon mid-batch: its workers and Chromium go, and a restart finishes the job."""
    daemon = make_daemon()
    prompts = [f"crash prompt {i}" for i in range(12)]
    job = daemon.submit(prompts, "latency=1")
    daemon.wait_for(lambda: daemon.call("status", {"job": job})["jobs"][0]["done"] >= 2, 60, "two images")
    daemon.kill9()
    assert not daemon.leftovers(wait=15), "workers or Chromium outlived a killed daemon"
    started = time.monotonic()
    daemon.start()
    daemon.wait_for(lambda: daemon.call("status", {"job": job})["jobs"][0]["running"] > 0, 30, "work to resume")
    resumed_in = time.monotonic() - started
    status = daemon.wait_job(job)
    assert status["done"] == len(prompts)
    assert_images(daemon, job, prompts)
    assert resumed_in < 15, f"work resumed only {resumed_in:.1f} s after the restart"


def test_pause_resume_cancel(daemon: Any) -> None:
    """pause stops new tasks, resume finishes the job, and cancel ends the rest of another job."""
    prompts = [f"pause prompt {i}" for i in range(10)]
    job = daemon.submit(prompts, "latency=0.5")
    assert "paused" in daemon.ctl("pause", job, check=True).stdout
    time.sleep(1.5)  # the tasks already running finish
    before = daemon.call("status", {"job": job})["jobs"][0]
    time.sleep(1.5)
    after = daemon.call("status", {"job": job})["jobs"][0]
    assert after["state"] == "paused" and after["running"] == 0 and after["done"] == before["done"] < len(prompts)
    daemon.ctl("resume", job, check=True)
    assert daemon.wait_job(job)["done"] == len(prompts)
    assert_images(daemon, job, prompts)
    other = daemon.submit([f"cancel prompt {i}" for i in range(20)], "latency=0.5")
    result = daemon.ctl("cancel", other, check=True)
    assert "cancelled" in result.stdout
    status = daemon.wait_job(other, timeout=30)
    assert status["state"] == "cancelled" and status["cancelled"] + status["done"] == 20 and status["cancelled"] > 0
    again = daemon.ctl("resume", job, check=True)
    assert "unchanged" in again.stdout


def test_cancel_stops_tasks_mid_generation(daemon: Any) -> None:
    """Cancelling a job frees the workers generating it within seconds (their pages closed), not when the site answers."""
    slow = daemon.submit([f"slow prompt {i}" for i in range(4)], "latency=120")

    def busy() -> list[dict[str, Any]]:
        workers = daemon.call("workers")["workers"]
        return workers if all(w["state"] == "busy" for w in workers) else []

    before = {w["id"]: w["restarts"] for w in daemon.wait_for(busy, 30, "both workers generating")}
    time.sleep(1.5)  # the prompts are sent: the site is generating them
    started = time.monotonic()
    daemon.ctl("cancel", slow, check=True)
    workers = daemon.wait_workers_idle(2, timeout=30)
    freed_in = time.monotonic() - started
    assert freed_in < 8, f"the workers were freed only {freed_in:.1f} s after the cancel"
    assert {w["id"]: w["restarts"] for w in workers} == before  # the page went, not the worker
    assert all(w["last_error"] is None or "aborted" in w["last_error"] for w in workers)
    status = daemon.call("status", {"job": slow})["jobs"][0]
    assert status["state"] == "cancelled" and status["done"] == 0 and status["running"] == 0
    assert not list((daemon.work / "tabfleet-out" / slow).glob("*.png"))
    after = daemon.submit(["after the cancel"], "latency=0.1")
    assert daemon.wait_job(after, timeout=60)["done"] == 1


def test_bad_prompt_files_queue_nothing(daemon: Any) -> None:
    """Empty files, a missing csv column, bad UTF-8 and an over-long prompt each fail naming the line; no job is made."""
    cases = {
        "empty.txt": (b"\n# nothing\n", "empty.txt: no prompts"),
        "cols.csv": (b"id,text\n1,hello\n", "cols.csv line 1: no 'prompt' column"),
        "bad.txt": (b"good\nalso good\nbad \xfe\n", "bad.txt line 3"),
        "long.txt": (b"ok\n" + b"x" * 5000 + b"\n", "long.txt line 2: prompt is 5000 characters"),
        "bad.jsonl": (b'{"prompt": "a"}\n{"prompt": 3}\n', "bad.jsonl line 2"),
    }
    for name, (data, message) in cases.items():
        (daemon.work / name).write_bytes(data)
        result = daemon.ctl("submit", name)
        assert result.returncode == 4 and message in result.stderr, (name, result.stderr)
    assert daemon.call("status")["jobs"] == []
