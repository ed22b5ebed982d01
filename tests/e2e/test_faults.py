"""Faults cost seconds, not minutes: frozen pages, lost requests, rate-limit windows, a site that is down,
a full output disk, a bot check that clears itself, and worker restarts that charge nothing."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from tabfleetd.sites import profiles
from tabfleetd.demo.demoimage import render_png
from tabfleetd.files.outputs import output_name

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

FAST_RETRIES = {"retry_base_s": 0.2, "retry_cap_s": 1.0, "restart_delay_s": 0.5}

SITE_SCRIPT = """
import asyncio, sys
from tabfleetd.demo import demosite
from tabfleetd.demo.demosite import DemoSite

demosite._SESSION_KEY = b"one key across restarts, as a real site keeps its sessions"

async def main():
    site = DemoSite()
    await site.start("127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def out_dir(daemon: Any, job: str) -> Path:
    return daemon.work / "tabfleet-out" / job


def assert_exact(daemon: Any, job: str, prompts: list[str], out: Path | None = None) -> None:
    """Every prompt's file is its own image, and the manifest lists each task exactly once."""
    out = out or out_dir(daemon, job)
    indexes = [json.loads(line)["index"] for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(indexes) == list(range(1, len(prompts) + 1)), indexes
    for index, prompt in enumerate(prompts, start=1):
        assert (out / output_name(index, prompt)).read_bytes() == render_png(prompt), index


def generated(url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{url}/api/stats", timeout=10) as reply:
        return json.load(reply)["generated"]


def renderers(state: Path) -> list[psutil.Process]:
    """The live renderer processes of the Chromiums whose profile is under `state`."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["status"] != psutil.STATUS_ZOMBIE and "--type=renderer" in cmd and any(str(state) in a for a in cmd):
            found.append(proc)
    return found


def hot_renderers(state: Path) -> list[int]:
    """The renderers under `state` that used more than a fifth of a core over the last half second (a busy loop
    shares the 2 cores with everything else)."""
    procs = renderers(state)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.cpu_percent(None)
    time.sleep(0.5)
    hot = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            if proc.cpu_percent(None) > 20:
                hot.append(proc.pid)
    return hot


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_frozen_renderer_frees_its_worker_within_seconds(make_daemon: Any) -> None:
    """A page stuck in a busy loop is given up within the freeze probe, its renderer dies, and the worker goes on."""
    daemon = make_daemon(workers=1, config=FAST_RETRIES | {"max_attempts": 1})
    daemon.wait_workers_idle(1)
    job = daemon.submit(["warm up"], "latency=0.1")
    daemon.wait_job(job)
    job = daemon.submit(["freeze [[lockup]]", "after the freeze"], "latency=0.1")
    burning = daemon.wait_for(lambda: hot_renderers(daemon.state), 30, "the page to freeze")
    task = daemon.wait_for(lambda: next((t for t in daemon.call("tasks", {"job": job})["tasks"]
                                         if t["state"] == "failed"), None), 60, "the frozen task to fail")
    assert "froze" in task["error"], task
    assert task["finished"] - task["started"] < 15, f"a frozen page held its worker {task['finished'] - task['started']:.0f} s"
    # The worker closes the frozen page rather than its whole Chromium; the browser ends that renderer.
    daemon.wait_for(lambda: not [pid for pid in burning if alive(pid)], 10, "the frozen renderer to end")
    assert not hot_renderers(daemon.state), "a renderer still burns CPU after the freeze"
    status = daemon.wait_job(job)
    assert (status["done"], status["failed"]) == (1, 1)
    event = next(e for e in daemon.call("events", {"job": job, "kinds": ["task_failed"]})["events"])
    assert event["frozen_cpu_s"] is not None and event["frozen_cpu_s"] > 1.0, event


def test_lost_request_on_a_fast_site_is_retried_within_seconds(make_daemon: Any) -> None:
    """Once the site has shown 0.3 s answers, a request that never answers is given up after seconds, not the cap."""
    daemon = make_daemon(workers=1, config=FAST_RETRIES | {"max_attempts": 2})
    daemon.wait_workers_idle(1)
    warm = [f"quick {i}" for i in range(8)]
    daemon.wait_job(daemon.submit(warm, "latency=0.3"))
    site = daemon.call("status")["limits"]["sites"]["demo"]
    assert site["answers_seen"] >= 5 and site["answer_deadline_s"] <= 6.0, site
    job = daemon.submit(["lost [[hang]]"], "latency=0.3")
    status = daemon.wait_job(job, timeout=60)
    assert status["failed"] == 1
    events = daemon.call("events", {"job": job, "kinds": ["task_retry", "task_failed"]})["events"]
    assert len(events) == 2 and all(e["error_kind"] == "timeout" for e in events), events
    task = daemon.call("tasks", {"job": job})["tasks"][0]
    assert task["finished"] - task["started"] < 12, "a lost request held the worker for the whole cap"
    assert daemon.call("workers")["workers"][0]["restarts"] == 0


def test_five_rate_limit_answers_in_one_window_are_one_signal(make_daemon: Any) -> None:
    """Four workers meet a full window together: several answers, one congestion signal, the window learned."""
    daemon = make_daemon(workers=4, config=FAST_RETRIES)
    daemon.wait_workers_idle(4)
    prompts = [f"windowed {i}" for i in range(8)]
    job = daemon.submit(prompts, "latency=0.5", "rate_limit=2/8")
    status = daemon.wait_job(job, timeout=120)
    assert status["done"] == len(prompts)
    pace = daemon.call("status")["limits"]["sites"]["demo"]
    assert pace["rate_limit_hits"] >= 2, pace
    assert pace["signals"] == 1, f"answers inside one window must be one signal: {pace}"
    assert pace["scope"] == "site" and pace["window"]["count"] == 2 and 8 <= pace["window"]["seconds"] <= 10, pace
    assert_exact(daemon, job, prompts)
    table = daemon.ctl("status", check=True).stdout
    assert "learned limit 2 per" in table and "1 signal;" in table, table


@pytest.fixture
def own_site(short_tmp: Path) -> Any:
    """A demo site in its own process on a fixed port, which the test can stop and start again."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    class Site:
        proc: subprocess.Popen[str] | None = None
        url = f"http://127.0.0.1:{port}"

        def start(self) -> None:
            self.proc = subprocess.Popen([sys.executable, "-c", SITE_SCRIPT, str(port)], stdout=subprocess.PIPE, text=True)
            assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

        def stop(self) -> None:
            if self.proc is not None:
                self.proc.kill()
                self.proc.wait()

    site = Site()
    site.start()
    yield site
    site.stop()


def site_profile(url: str) -> str:
    """The demo's own profile pointed at `url`, as a profile file's text."""
    text = profiles.builtin_text("demo").replace('start_url = "{demo}/?scope={job}"', f'start_url = "{url}/?scope={{job}}"')
    return text.replace('name = "demo"', 'name = "own-demo"')


def test_unreachable_site_pauses_without_charging_attempts(make_daemon: Any, own_site: Any) -> None:
    """The site goes down mid-batch: its dispatch pauses with a reason, no attempt or worker is charged, and it resumes."""
    # The site listens on loopback, which the operator must allow for profiles (site_networks).
    daemon = make_daemon(workers=2, config=FAST_RETRIES | {"max_attempts": 1, "site_networks": ["127.0.0.1/32"]})
    daemon.wait_workers_idle(2)
    (daemon.work / "own.toml").write_text(site_profile(own_site.url))
    prompts = [f"reachable {i}" for i in range(12)]
    (daemon.work / "p.txt").write_text("\n".join(prompts) + "\n")
    job = json.loads(daemon.ctl("submit", "p.txt", "--site", "own.toml", "--json", "--knob", "latency=0.5",
                                check=True).stdout)["job"]
    daemon.wait_for(lambda: daemon.call("status", {"job": job})["jobs"][0]["done"] >= 3, 60, "some images")
    own_site.stop()
    down = daemon.wait_for(lambda: daemon.call("status")["limits"]["sites"].get("own-demo", {}).get("unreachable"), 60,
                           "the site to show as unreachable")
    assert down["reason"], down
    table = daemon.ctl("status", check=True).stdout
    assert "unreachable" in table, table
    time.sleep(4)  # a few backoff rounds with the site down
    own_site.start()
    status = daemon.wait_job(job, timeout=120)
    assert (status["done"], status["failed"]) == (len(prompts), 0), (
        "an unreachable site must not use up attempts", [(t["error_kind"], t["error"]) for t in
                                                         daemon.call("tasks", {"job": job})["tasks"] if t["state"] == "failed"],
        daemon.log_text())
    assert_exact(daemon, job, prompts)
    assert all(w["restarts"] == 0 for w in daemon.call("workers")["workers"]), "an unreachable site is no worker fault"
    assert "unreachable" not in daemon.call("status")["limits"]["sites"]["own-demo"]
    kinds = {e["kind"] for e in daemon.call("events", {"limit": 0, "kinds": ["site_down", "site_up"]})["events"]}
    assert kinds == {"site_down", "site_up"}


@pytest.fixture
def small_tmpfs(short_tmp: Path) -> Any:
    """A 256 KiB tmpfs the test can fill up, where this process may mount one (root)."""
    mount = short_tmp / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0777", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount: Path) -> Path:
    """Fill the filesystem to the last byte with one file."""
    filler = mount / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def test_full_output_disk_pauses_the_job_and_resumes(make_daemon: Any, small_tmpfs: Path) -> None:
    """The output fills up: the job waits with the reason, images made meanwhile are kept, and none is made twice."""
    daemon = make_daemon(workers=2, config=FAST_RETRIES | {"max_attempts": 1, "min_free_mb": 0.0})
    daemon.wait_workers_idle(2)
    out = small_tmpfs / "out"
    prompts = [f"disk {i}" for i in range(10)]
    (daemon.work / "p.txt").write_text("\n".join(prompts) + "\n")
    job = json.loads(daemon.ctl("submit", "p.txt", "--out", str(out), "--json", "--knob", "latency=0.4",
                                check=True).stdout)["job"]
    daemon.wait_for(lambda: daemon.call("status", {"job": job})["jobs"][0]["done"] >= 2, 60, "a first image")
    filler = fill(small_tmpfs)
    waiting = daemon.wait_for(lambda: daemon.call("status", {"job": job})["jobs"][0]["waiting"], 60, "the job to wait")
    assert "No space" in waiting["reason"] or "free" in waiting["reason"], waiting
    assert daemon.call("status", {"job": job})["jobs"][0]["state"] == "active"
    time.sleep(2)
    filler.unlink()
    status = daemon.wait_job(job, timeout=120)
    assert (status["done"], status["failed"]) == (len(prompts), 0), "a full disk must not use up attempts"
    assert_exact(daemon, job, prompts, out)
    counts = generated(daemon.call("ping")["demo_url"])
    assert all(counts[p] == 1 for p in prompts), f"an image was made twice: {counts}"
    assert all(w["restarts"] == 0 for w in daemon.call("workers")["workers"])
    assert daemon.call("status", {"job": job})["jobs"][0]["waiting"] is None


def test_worker_restart_mid_batch_charges_no_attempt(make_daemon: Any) -> None:
    """Restarting workers by hand in the middle of a batch costs no task an attempt (max_attempts = 1 proves it)."""
    daemon = make_daemon(workers=2, config=FAST_RETRIES | {"max_attempts": 1})
    daemon.wait_workers_idle(2)
    prompts = [f"restarted {i}" for i in range(10)]
    job = daemon.submit(prompts, "latency=0.8")
    for wid in (1, 2, 1):
        daemon.wait_for(lambda: daemon.call("status", {"job": job})["jobs"][0]["running"] >= 1, 60, "a running task")
        daemon.ctl("workers", "restart", str(wid), check=True)
        daemon.wait_for(lambda: next(w for w in daemon.call("workers")["workers"] if w["id"] == wid)["state"]
                        in ("idle", "busy"), 60, f"worker {wid} back")
    status = daemon.wait_job(job, timeout=120)
    assert (status["done"], status["failed"]) == (len(prompts), 0)
    assert_exact(daemon, job, prompts)


def test_a_bot_check_that_clears_itself_is_waited_out(make_daemon: Any) -> None:
    """A "Just a moment..." page that passes after 2 s costs a short wait, not a blocked worker."""
    daemon = make_daemon(workers=1, config=FAST_RETRIES)
    daemon.wait_workers_idle(1)
    prompts = ["checked 1", "checked 2"]
    job = daemon.submit(prompts, "latency=0.2", "challenge=2")
    status = daemon.wait_job(job, timeout=60)
    assert status["done"] == 2
    worker = daemon.call("workers")["workers"][0]
    assert worker["state"] == "idle" and worker["restarts"] == 0
    assert all(t["attempts"] == 1 for t in daemon.call("tasks", {"job": job})["tasks"])


def test_a_bot_check_that_persists_blocks_the_worker(make_daemon: Any) -> None:
    """A check still there after its wait and one more load blocks the worker, with the reason in status."""
    daemon = make_daemon(workers=1, config=FAST_RETRIES)
    daemon.wait_workers_idle(1)
    text = profiles.builtin_text("demo").replace("sent_s = 5", "sent_s = 5\nchallenge_s = 1")
    (daemon.work / "checked.toml").write_text(text)
    (daemon.work / "p.txt").write_text("stuck behind the check\n")
    daemon.ctl("submit", "p.txt", "--site", "checked.toml", "--knob", "challenge=600", check=True)
    worker = daemon.wait_for(lambda: next((w for w in daemon.call("workers")["workers"] if w["state"] == "blocked"), None),
                             60, "the worker to be blocked")
    assert "moment" in worker["health"].lower(), worker


def test_what_pacing_learned_survives_a_restart(make_daemon: Any) -> None:
    """The learned window, the answer times and the counts are in the store: a restarted daemon starts from them."""
    daemon = make_daemon(workers=2, config=FAST_RETRIES)
    daemon.wait_workers_idle(2)
    job = daemon.submit([f"kept {i}" for i in range(6)], "latency=0.3", "rate_limit=2/6")
    daemon.wait_job(job, timeout=120)
    learned = daemon.call("status")["limits"]["sites"]["demo"]
    assert learned["window"] is not None, learned
    daemon.stop()
    daemon.start()
    again = daemon.call("status")["limits"]["sites"]["demo"]
    for key in ("window", "scope", "signals", "rate_limit_hits", "answers_seen"):
        assert again.get(key) == learned.get(key), (key, learned, again)
