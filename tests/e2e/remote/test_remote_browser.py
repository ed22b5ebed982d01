"""Workers driving a remote browser over CDP: exact images through it, its death, its return, nothing left behind."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tabfleetd.demo.demoimage import render_png
from tabfleetd.files.outputs import output_name

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def remote_workers(remote: Any, local: int = 0) -> list[dict[str, Any]]:
    """Two workers on the remote browser (a token in the URL, and one in a header), then `local` local ones."""
    return ([{"browser": "remote", "endpoint": remote.url()},
             {"browser": "remote", "endpoint": remote.url(with_token=False), "headers": {"Authorization": f"Bearer {remote.token}"}}]
            + [{"browser": "local"}] * local)


def config(remote: Any, workers: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    # The demo site listens where the remote browser can reach it: the host's end of the veth pair (or loopback).
    return {"workers": workers, "demo_host": remote.host_ip, "retry_base_s": 0.2, "retry_cap_s": 0.5} | extra


def check_images(out: Path, prompts: list[str]) -> None:
    for index, prompt in enumerate(prompts, 1):
        assert (out / output_name(index, prompt)).read_bytes() == render_png(prompt), prompt


def workers_by_id(daemon: Any) -> dict[int, dict[str, Any]]:
    return {w["id"]: w for w in daemon.call("workers")["workers"]}


def manifest_workers(out: Path) -> set[int]:
    return {json.loads(line)["worker"] for line in (out / "manifest.jsonl").read_text().splitlines()}


def test_a_batch_runs_byte_exact_through_a_remote_browser_whose_secret_is_never_shown(make_daemon: Any,
                                                                                     remote: Any) -> None:
    """Two remote workers (token in URL and in a header) make every image exactly; status, the worker table, events,
    metrics and the log show the endpoint's host only; the daemon's stop leaves the browser none of its pages."""
    before = len(remote.pages())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    daemon = make_daemon(workers=2, config=config(remote, remote_workers(remote), metrics_port=port))
    workers = daemon.wait_workers_idle(2)
    shown = f"http://{remote.browser_ip}:{remote.port}"
    assert [(w["browser"]["kind"], w["browser"]["endpoint"], w["browser"]["connection"]) for w in workers] == \
        [("remote", shown, "connected")] * 2
    assert len(remote.pages()) == before + 2, "each worker opens its own page"
    prompts = [f"a lighthouse far away number {i}" for i in range(8)]
    job = daemon.submit(prompts, "latency=0.3")
    status = daemon.wait_job(job)
    assert (status["state"], status["done"]) == ("done", len(prompts))
    out = daemon.work / "tabfleet-out" / job
    check_images(out, prompts)
    assert manifest_workers(out) == {1, 2}
    table = daemon.ctl("workers", check=True).stdout
    assert f"{shown} (connected)" in table
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=daemon.web_headers)
    metrics = urllib.request.urlopen(request, timeout=10).read().decode()
    assert f'tabfleet_worker_browser{{connection="connected",endpoint="{shown}",kind="remote",worker="1"}} 1.0' in metrics
    seen = [json.dumps(daemon.call("status")), table, daemon.ctl("status", check=True).stdout, metrics,
            json.dumps(daemon.call("events", {"limit": 0, "kinds": None})), daemon.ctl("accounts", check=True).stdout]
    daemon.stop()
    assert daemon.proc is not None and daemon.proc.returncode == 0
    assert all(remote.token not in text for text in seen + [daemon.log.read_text()])
    assert len(remote.pages()) == before, "the daemon's stop closed every page its workers opened"


def test_the_remote_browser_dies_mid_batch_and_comes_back(make_daemon: Any, remote: Any) -> None:
    """Killed mid-batch: each remote worker's task costs one attempt and the local worker finishes the batch;
    restarted: the workers attach again by themselves and take tasks; stopped: no page of theirs is left."""
    before = len(remote.pages())
    daemon = make_daemon(workers=3, config=config(remote, remote_workers(remote, local=1)))
    daemon.wait_workers_idle(3)
    prompts = [f"a paper crane number {i}" for i in range(14)]
    job = daemon.submit(prompts, "latency=1.5")
    daemon.wait_for(lambda: all(w["state"] == "busy" and w["tasks_done"] >= 1
                                for w in workers_by_id(daemon).values() if w["browser"]["kind"] == "remote"),
                    60, "both remote workers to have finished a task and be busy")
    remote.kill()
    reconnecting = daemon.wait_for(lambda: [w for w in workers_by_id(daemon).values() if w["state"] == "reconnecting"],
                                   30, "the remote workers to be reconnecting")
    assert all("reconnecting to http://" in w["health"] for w in reconnecting), reconnecting
    status = daemon.wait_job(job, 120)
    assert (status["state"], status["done"], status["failed"]) == ("done", len(prompts), 0)
    out = daemon.work / "tabfleet-out" / job
    check_images(out, prompts)
    retries = [e["error_kind"] for e in daemon.call("events", {"job": job, "kinds": ["task_retry"], "limit": 0})["events"]]
    # The tasks the browser took down cost their attempt (crash); one handed over as it went is free (detached).
    assert 1 <= retries.count("crash") <= 2 and set(retries) <= {"crash", "detached"}, retries
    workers = workers_by_id(daemon)
    assert workers[1]["state"] == workers[2]["state"] == "reconnecting" and workers[3]["state"] == "idle"
    assert workers[1]["restarts"] == workers[2]["restarts"] == 0, "the worker waited for its browser, it did not die"

    remote.start()
    back = daemon.wait_for(lambda: (ws := workers_by_id(daemon)) and all(w["state"] == "idle" for w in ws.values()) and ws,
                           60, "the remote workers to attach again by themselves")
    assert [back[i]["browser"]["reconnects"] for i in (1, 2)] == [1, 1]
    changes = daemon.call("events", {"limit": 0, "kinds": ["browser_lost", "browser_back"]})["events"]
    assert sorted((e["kind"], e["worker"]) for e in changes) == [("browser_back", 1), ("browser_back", 2),
                                                                  ("browser_lost", 1), ("browser_lost", 2)], changes
    assert {e["endpoint"] for e in changes} == {back[1]["browser"]["endpoint"]} and remote.token not in json.dumps(changes)
    prompts = [f"a glass whale number {i}" for i in range(8)]
    job = daemon.submit(prompts, "latency=0.5")
    status = daemon.wait_job(job, 120)
    assert (status["state"], status["done"]) == ("done", len(prompts))
    out = daemon.work / "tabfleet-out" / job
    check_images(out, prompts)
    assert {1, 2} <= manifest_workers(out)
    daemon.stop()
    assert len(remote.pages()) == before


def test_a_frozen_page_on_a_remote_browser_is_closed_at_once(make_daemon: Any, remote: Any) -> None:
    """A renderer locked in a busy loop: the attempt fails as frozen, the browser ends that renderer (its page is
    closed), and the worker carries on attached with a fresh page."""
    before = len(remote.pages())
    daemon = make_daemon(workers=1, config=config(remote, remote_workers(remote)[:1], max_attempts=1, frozen_page_s=2.0))
    daemon.wait_workers_idle(1)
    prompts = ["a locked page [[lockup]]", "a calm sea"]
    job = daemon.submit(prompts, "latency=0.3")
    status = daemon.wait_job(job, 90)
    tasks = daemon.call("tasks", {"job": job})["tasks"]
    assert (tasks[0]["state"], tasks[0]["error_kind"]) == ("failed", "timeout") and "froze" in tasks[0]["error"], tasks
    assert tasks[1]["state"] == "done" and status["done"] == 1
    assert any("--type=renderer" in p.cmdline() for p in remote.processes()), "the browser's renderers are visible here"
    assert remote.busy_renderers() == [], "the frozen renderer still burns a core"
    worker = workers_by_id(daemon)[1]
    assert (worker["state"], worker["browser"]["connection"], worker["restarts"]) == ("idle", "connected", 0)
    assert len(remote.pages()) == before + 1


def test_a_killed_worker_leaves_no_page_on_the_remote_browser(make_daemon: Any, remote: Any) -> None:
    """`workers restart` SIGKILLs the worker: its browser context goes with its connection, so pages never pile up."""
    before = len(remote.pages())
    daemon = make_daemon(workers=1, config=config(remote, remote_workers(remote)[:1]))
    first = daemon.wait_workers_idle(1)[0]["pid"]
    assert len(remote.pages()) == before + 1
    for _ in range(2):
        daemon.ctl("workers", "restart", "1", check=True)
        daemon.wait_for(lambda: (w := workers_by_id(daemon)[1])["state"] == "idle" and w["pid"] != first, 60,
                        "the worker to start again and attach")
        first = workers_by_id(daemon)[1]["pid"]
        deadline = time.monotonic() + 10
        while len(remote.pages()) != before + 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(remote.pages()) == before + 1, remote.pages()


def test_a_remote_browser_that_is_not_there_at_start_is_waited_for(make_daemon: Any, remote: Any) -> None:
    """A worker whose endpoint refuses at start does not fail the daemon: it reconnects with backoff, and a wrong
    token is reported as the gateway's refusal without the token."""
    remote.kill()
    wrong = {"browser": "remote", "endpoint": remote.url(with_token=False) + "?token=wrong-secret-42"}
    daemon = make_daemon(workers=2, config=config(remote, [remote_workers(remote)[0], wrong]))
    workers = daemon.wait_for(lambda: (ws := workers_by_id(daemon)) and all(w["state"] == "reconnecting" for w in ws.values())
                              and all(w["browser"]["error"] for w in ws.values()) and ws, 60, "both workers reconnecting")
    remote.start()
    daemon.wait_for(lambda: workers_by_id(daemon)[1]["state"] == "idle", 60, "worker 1 to attach")
    daemon.wait_for(lambda: "401" in (workers_by_id(daemon)[2]["browser"]["error"] or ""), 60, "the refusal of the wrong token")
    worker = workers_by_id(daemon)[2]
    assert worker["state"] == "reconnecting" and "wrong-secret-42" not in json.dumps(worker), worker
    assert "wrong-secret-42" not in daemon.log.read_text() and workers[1]["restarts"] == 0
