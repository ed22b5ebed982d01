"""No zombies: what a killed Chromium leaves behind is reaped by its worker (a child subreaper), or by the daemon."""

from __future__ import annotations

import time
from typing import Any

import psutil
import pytest

from tabfleetd.fleet.browser import names_path
from tabfleetd.demo.demoimage import render_png
from tabfleetd.files.outputs import output_name

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

FAST = {"restart_delay_s": 0.5, "retry_base_s": 0.2, "retry_cap_s": 1.0}


def chromium_tree(daemon: Any, wid: int) -> list[psutil.Process]:
    """Every live process of worker `wid`'s Chromium: all name its profile on their command line."""
    root = str(daemon.state / "profiles" / f"worker-{wid}")
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and any(names_path(a, root) for a in proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def browser_process(tree: list[psutil.Process]) -> psutil.Process:
    """The browser process of a Chromium tree: the one without a --type switch that is not its crash handler."""
    browsers = [p for p in tree if not any(a.startswith("--type=") for a in p.cmdline()) and "crashpad" not in p.name()]
    assert len(browsers) == 1, [p.cmdline()[:3] for p in tree]
    return browsers[0]


def zombies(pids: set[int], daemon: Any) -> list[tuple[int, int]]:
    """(pid, parent) of every zombie that was one of `pids` or is a descendant of the daemon."""
    assert daemon.proc is not None
    candidates = set(pids) | {p.pid for p in psutil.Process(daemon.proc.pid).children(recursive=True)}
    found = []
    for pid in candidates:
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                found.append((pid, proc.ppid()))
        except psutil.Error:
            continue
    return found


def assert_all_adopted(tree: list[psutil.Process], daemon: Any) -> None:
    """Every process of a Chromium tree descends from the daemon: none (a crash handler that double-forked, a helper
    orphaned by its browser) was left to PID 1."""
    assert daemon.proc is not None
    strays = []
    for proc in tree:
        try:
            if daemon.proc.pid not in {p.pid for p in proc.parents()}:
                strays.append((proc.pid, proc.ppid(), proc.name()))
        except psutil.Error:
            continue
    assert not strays, f"Chromium processes outside the daemon's tree (pid, parent, name): {strays}"


def wait_no_zombies(pids: set[int], daemon: Any, timeout: float = 6.0) -> None:
    deadline = time.monotonic() + timeout
    while (left := zombies(pids, daemon)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"zombies (pid, parent) left after {timeout:.0f} s: {left}\n{daemon.log_text()}"


def run_job(daemon: Any, prompts: list[str]) -> None:
    job = daemon.submit(prompts, "latency=0.1")
    status = daemon.wait_job(job, 90)
    assert (status["state"], status["done"]) == ("done", len(prompts)), daemon.log_text()
    out = daemon.work / "tabfleet-out" / job
    for index, prompt in enumerate(prompts, 1):
        assert (out / output_name(index, prompt)).read_bytes() == render_png(prompt), prompt


def test_kill_9_of_chromium_leaves_no_zombie(make_daemon: Any) -> None:
    """kill -9 of a renderer, then of the browser process: within seconds no process of that Chromium is a zombie
    anywhere (its worker adopted and reaped them, none went to PID 1), and work goes on."""
    daemon = make_daemon(workers=1, config=FAST)
    daemon.wait_workers_idle(1)
    run_job(daemon, ["a lighthouse before the storm"])  # the demo page is open: renderers run
    tree = chromium_tree(daemon, 1)
    assert_all_adopted(tree, daemon)
    seen = {p.pid for p in tree}
    renderers = [p for p in tree if "--type=renderer" in p.cmdline()]
    assert renderers, [p.cmdline()[:3] for p in tree]
    renderers[0].kill()
    wait_no_zombies(seen, daemon)

    tree = chromium_tree(daemon, 1)
    seen |= {p.pid for p in tree}
    browser = browser_process(tree)
    helpers = [p for p in tree if p.pid != browser.pid]
    assert helpers, "the browser has helper processes to orphan"
    browser.kill()
    daemon.wait_for(lambda: browser.pid not in {p.pid for p in chromium_tree(daemon, 1)}, 10, "the browser to die")
    assert_all_adopted([p for p in helpers if p.is_running()], daemon)  # its orphans went to the worker
    wait_no_zombies(seen, daemon)
    daemon.wait_workers_idle(1, 30)  # its worker started another Chromium
    run_job(daemon, ["a lighthouse after the storm", "gulls over calm water"])
    seen |= {p.pid for p in chromium_tree(daemon, 1)}
    wait_no_zombies(seen, daemon)


def test_kill_9_of_a_worker_leaves_no_zombie(make_daemon: Any) -> None:
    """kill -9 of a worker process: its Chromium dies with it, and what that orphans is reaped by the daemon."""
    daemon = make_daemon(workers=1, config=FAST)
    daemon.wait_workers_idle(1)
    run_job(daemon, ["a kite on a windy hill"])
    tree = chromium_tree(daemon, 1)
    assert_all_adopted(tree, daemon)
    seen = {p.pid for p in tree}
    worker = next(w for w in daemon.call("workers")["workers"] if w["id"] == 1)
    psutil.Process(worker["pid"]).kill()
    seen.add(worker["pid"])
    daemon.wait_for(lambda: not (seen - {worker["pid"]}) & {p.pid for p in chromium_tree(daemon, 1)}, 15,
                    "the old Chromium to be gone")
    wait_no_zombies(seen, daemon)
    daemon.wait_workers_idle(1, 60)
    run_job(daemon, ["the kite comes down"])
    wait_no_zombies(seen, daemon)
