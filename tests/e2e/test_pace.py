"""Pace and memory: rate limits with AIMD, staggered start, browser rotation, the memory governor, fleet resizing."""

from __future__ import annotations

import json
import os
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
    manifest = [json.loads(line)["index"] for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(manifest) == list(range(1, len(prompts) + 1)), "each task finishes exactly once"
    for index, prompt in enumerate(prompts, start=1):
        assert (out / output_name(index, prompt)).read_bytes() == render_png(prompt)


def test_rate_limited_site_finishes_with_few_hits(make_daemon: Any) -> None:
    """A site allowing 5 images per 10 s: every task ends done, the accounts cool down, the rate adapts."""
    daemon = make_daemon(config={"retry_base_s": 0.5, "retry_cap_s": 2.0})
    daemon.wait_workers_idle(2)
    prompts = [f"paced prompt {i}" for i in range(20)]
    job = daemon.submit(prompts, "latency=0.1", "rate_limit=5/10")
    saw_cooling = False
    while (status := daemon.call("status", {"job": job}))["jobs"][0]["state"] == "active":
        saw_cooling = saw_cooling or any(w["account"]["state"] == "cooling" for w in status["workers"])
        time.sleep(0.2)
    assert status["jobs"][0]["done"] == len(prompts)
    assert_images(daemon, job, prompts)
    pace = status["limits"]["sites"]["demo"]
    assert saw_cooling, "an account that got a rate-limit answer should show as cooling"
    assert pace["rate_per_min"] is not None and pace["rate_per_min"] < 120, pace
    # 20 prompts at 5 per 10 s need 4 windows; a hit or two per window is the price of learning the limit.
    assert 1 <= pace["rate_limit_hits"] <= 10, pace
    tasks = daemon.call("tasks", {"job": job})["tasks"]
    assert all(t["state"] == "done" for t in tasks)
    table = daemon.ctl("status", check=True).stdout
    assert "site demo:" in table and "rate-limit answers" in table


def test_configured_site_rate_is_kept(make_daemon: Any) -> None:
    """With site_rate_per_min = 60 the fleet starts no more than about one prompt a second."""
    daemon = make_daemon(config={"site_rate_per_min": 60.0})
    daemon.wait_workers_idle(2)
    prompts = [f"steady {i}" for i in range(8)]
    job = daemon.submit(prompts, "latency=0.05")
    daemon.wait_job(job)
    starts = sorted(t["started"] for t in daemon.call("tasks", {"job": job})["tasks"])
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert min(gaps) > 0.9, f"starts came faster than 60/min: {gaps}"
    assert_images(daemon, job, prompts)


def test_workers_start_staggered(make_daemon: Any) -> None:
    """Workers start one after another, stagger_s apart."""
    daemon = make_daemon(workers=3, config={"stagger_s": 1.5})
    workers = daemon.wait_workers_idle(3)
    created = sorted(psutil.Process(w["pid"]).create_time() for w in workers)
    assert all(b - a >= 1.4 for a, b in zip(created, created[1:])), created


def test_browser_rotates_every_k_tasks(make_daemon: Any) -> None:
    """With rotate_after_tasks = 3, one worker restarts its Chromium after tasks 3, 6 and 9 and keeps its process."""
    daemon = make_daemon(workers=1, config={"rotate_after_tasks": 3})
    worker = daemon.wait_workers_idle(1)[0]
    prompts = [f"rotate {i}" for i in range(10)]
    job = daemon.submit(prompts, "latency=0.05")
    daemon.wait_job(job)
    after = daemon.call("workers")["workers"][0]
    assert after["rotations"] == 3 and after["pid"] == worker["pid"] and after["tasks_done"] == 10
    assert_images(daemon, job, prompts)


def test_memory_governor_shrinks_holds_and_grows_without_losing_a_task(make_daemon: Any, short_tmp: Path) -> None:
    """Simulated memory pressure: critical shrinks the fleet, high holds new work, low grows it back; no task is lost."""
    probe = short_tmp / "memory"
    probe.write_text("100 1000\n")
    daemon = make_daemon(workers=3, config={"memory_probe": f"file:{probe}", "memory_check_s": 0.3, "restart_delay_s": 0.3})
    daemon.wait_workers_idle(3)
    prompts = [f"memory prompt {i}" for i in range(40)]
    job = daemon.submit(prompts, "latency=0.4")
    daemon.wait_for(lambda: daemon.call("status", {"job": job})["jobs"][0]["done"] >= 3, 60, "first images")
    probe.write_text("950 1000\n")
    daemon.wait_for(lambda: len(daemon.call("workers")["workers"]) == 1, 30, "the fleet to shrink to one")
    memory = daemon.call("status")["memory"]
    assert memory["target_workers"] == 1 and memory["desired_workers"] == 3 and memory["percent"] == 95.0
    probe.write_text("850 1000\n")
    daemon.wait_for(lambda: daemon.call("status", {"job": job})["jobs"][0]["running"] == 0, 30, "running tasks to drain")
    held = daemon.call("status", {"job": job})["jobs"][0]
    time.sleep(1.5)
    still = daemon.call("status", {"job": job})["jobs"][0]
    assert still["done"] == held["done"] and still["running"] == 0, "no task may start while memory is high"
    assert daemon.call("status")["memory"]["holding"] is True
    assert "holding new work" in daemon.ctl("status", check=True).stdout
    probe.write_text("300 1000\n")
    daemon.wait_for(lambda: len(daemon.call("workers")["workers"]) == 3, 30, "the fleet to grow back")
    status = daemon.wait_job(job)
    assert status["done"] == len(prompts) and status["failed"] == 0
    assert_images(daemon, job, prompts)


def test_real_cgroup_limit_is_read(make_daemon: Any) -> None:
    """Inside a cgroup v1 memory group with a limit, the daemon reports that limit and its source."""
    group = Path(f"/sys/fs/cgroup/memory/tabfleet-test-{os.getpid()}")
    try:
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(8 * 2**30))
    except OSError as exc:
        pytest.skip(f"cannot create a cgroup v1 memory group here: {exc}")
    try:
        daemon = make_daemon(workers=1, start=False)
        argv = daemon.argv()
        daemon.argv = lambda: ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh", *argv]
        daemon.start()
        memory = daemon.wait_for(lambda: (m := daemon.call("status")["memory"]).get("source") and m, 10, "a memory reading")
        assert memory["source"].startswith("cgroup v1") and memory["limit_mb"] == 8192 and memory["total_mb"] == 8192
        assert 0 < memory["used_mb"] < 8192
        daemon.stop()
    finally:
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def test_workers_set_resizes_the_fleet(make_daemon: Any) -> None:
    """`tabfleetctl workers set N` grows and shrinks the fleet at run time."""
    daemon = make_daemon(workers=1)
    daemon.wait_workers_idle(1)
    assert "fleet size set to 3" in daemon.ctl("workers", "set", "3", check=True).stdout
    daemon.wait_workers_idle(3)
    prompts = [f"resize {i}" for i in range(12)]
    job = daemon.submit(prompts, "latency=0.5")
    daemon.wait_for(lambda: daemon.call("status", {"job": job})["jobs"][0]["running"] == 3, 30, "three busy workers")
    daemon.ctl("workers", "set", "1", check=True)
    daemon.wait_for(lambda: len(daemon.call("workers")["workers"]) == 1, 30, "the fleet to shrink")
    status = daemon.wait_job(job)
    assert status["done"] == len(prompts)
    assert_images(daemon, job, prompts)
    assert all(t["attempts"] == 1 for t in daemon.call("tasks", {"job": job})["tasks"]), "busy workers finish their task first"
