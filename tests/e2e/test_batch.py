"""A whole batch through the real daemon, real workers, real Chromium and the demo site."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tabfleetd.demo.demoimage import render_png
from tabfleetd.files.outputs import output_name

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def check_outputs(out: Path, prompts: list[str]) -> list[dict[str, Any]]:
    """Every prompt has its own exact PNG and one manifest line; nothing else is in the directory."""
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == len(prompts)
    by_index = {r["index"]: r for r in lines}
    assert sorted(by_index) == list(range(1, len(prompts) + 1))
    for index, prompt in enumerate(prompts, start=1):
        name = output_name(index, prompt)
        data = (out / name).read_bytes()
        assert data == render_png(prompt), f"{name} is not the image of its own prompt"
        record = by_index[index]
        assert record["prompt"] == prompt and record["file"] == name
        assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["bytes"] == len(data)
        assert record["attempts"] >= 1 and record["worker"] in (1, 2)
        assert record["started"] <= record["finished"]
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(output_name(i, p) for i, p in enumerate(prompts, start=1))
    assert not list(out.glob(".*.tmp"))
    return lines


def test_twenty_prompts_two_workers(daemon: Any, write_prompts: Any) -> None:
    """Twenty prompts with two workers give twenty files, each its prompt's exact PNG, and a 20-line manifest."""
    prompts = [f"a small robot number {i} painting a fence" for i in range(20)]
    write_prompts(daemon.work / "robots.txt", prompts)
    result = daemon.ctl("submit", "robots.txt", "--site", "demo", "--knob", "latency=0.3", "--json", "--wait", check=True)
    submitted = json.loads(result.stdout.strip().splitlines()[0])
    assert submitted["tasks"] == 20
    job = daemon.call("status", {"job": submitted["job"]})["jobs"][0]
    assert job["state"] == "done" and job["done"] == 20
    assert job["done"] + job["failed"] + job["running"] + job["pending"] + job["cancelled"] == job["total"]
    out = daemon.work / "tabfleet-out" / submitted["job"]
    assert Path(job["out"]) == out
    lines = check_outputs(out, prompts)
    assert {r["worker"] for r in lines} == {1, 2}, "both workers should have taken tasks"


def test_status_json_shape(daemon: Any, write_prompts: Any) -> None:
    """status --json reports jobs, workers and memory with counts that add up to the total."""
    write_prompts(daemon.work / "p.txt", ["one", "two", "three"])
    daemon.ctl("submit", "p.txt", "--knob", "latency=0.2", "--wait", check=True)
    status = json.loads(daemon.ctl("status", "--json", check=True).stdout)
    (job,) = status["jobs"]
    for key in ("id", "name", "state", "site", "out", "total", "done", "failed", "running", "pending", "rate_per_min", "eta_s"):
        assert key in job
    assert job["done"] + job["failed"] + job["running"] + job["pending"] + job["cancelled"] == job["total"] == 3
    assert len(status["workers"]) == 2
    for worker in status["workers"]:
        for key in ("id", "pid", "state", "tasks_done", "current_task", "rss_mb", "last_error", "restarts"):
            assert key in worker
    assert sum(w["tasks_done"] for w in status["workers"]) == 3
    assert status["memory"]["total_mb"] > 0
    table = daemon.ctl("status", check=True).stdout
    assert job["id"] in table and "current prompt" in table


def test_csv_and_jsonl_files(daemon: Any) -> None:
    """A .csv with a prompt column and a .jsonl file both become jobs whose images match their prompts."""
    (daemon.work / "c.csv").write_text('id,prompt\n1,"a quoted, comma prompt"\n2,plain prompt\n')
    (daemon.work / "j.jsonl").write_text('{"prompt": "json one"}\n\n{"prompt": "json two", "x": 1}\n')
    for name, prompts in (("c.csv", ["a quoted, comma prompt", "plain prompt"]), ("j.jsonl", ["json one", "json two"])):
        job_id = json.loads(daemon.ctl("submit", name, "--knob", "latency=0.1", "--json", check=True).stdout)["job"]
        assert daemon.wait_job(job_id)["done"] == 2
        check_outputs(daemon.work / "tabfleet-out" / job_id, prompts)


def test_two_jobs_never_share_files(daemon: Any, write_prompts: Any) -> None:
    """Two jobs of the same file write to their own directories, and a second job cannot take a used --out."""
    write_prompts(daemon.work / "same.txt", ["alpha", "beta"])
    first = json.loads(daemon.ctl("submit", "same.txt", "--knob", "latency=0.1", "--json", "--out", "shared", check=True).stdout)["job"]
    refused = daemon.ctl("submit", "same.txt", "--out", "shared")
    assert refused.returncode != 0 and "already holds the output of job" in refused.stderr
    second = json.loads(daemon.ctl("submit", "same.txt", "--knob", "latency=0.1", "--json", check=True).stdout)["job"]
    assert daemon.wait_job(first)["done"] == 2 and daemon.wait_job(second)["done"] == 2
    check_outputs(daemon.work / "shared", ["alpha", "beta"])
    check_outputs(daemon.work / "tabfleet-out" / second, ["alpha", "beta"])
    assert len(daemon.call("status")["jobs"]) == 2


def test_failed_tasks_fail_the_wait(make_daemon: Any, write_prompts: Any) -> None:
    """A prompt the site always refuses ends failed after its attempts, and submit --wait exits 1."""
    daemon = make_daemon(config={"max_attempts": 2, "retry_base_s": 0.1, "retry_cap_s": 0.2})
    write_prompts(daemon.work / "p.txt", ["fine prompt", "broken [[error]] prompt"])
    result = daemon.ctl("submit", "p.txt", "--knob", "latency=0.1", "--json", "--wait")
    assert result.returncode == 1, result.stderr
    job_id = json.loads(result.stdout.splitlines()[0])["job"]
    job = daemon.call("status", {"job": job_id})["jobs"][0]
    assert (job["state"], job["done"], job["failed"]) == ("failed", 1, 1)
    failed = daemon.call("tasks", {"job": job_id, "state": "failed"})["tasks"]
    assert len(failed) == 1 and failed[0]["attempts"] == 2 and "Something went wrong" in failed[0]["error"]
    lines = (daemon.work / "tabfleet-out" / job_id / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 1


def test_locked_renderer_and_hung_request_end_in_failure_not_a_stuck_worker(make_daemon: Any, write_prompts: Any) -> None:
    """A prompt that locks the renderer and one whose request never answers fail at the deadline; the rest finish."""
    daemon = make_daemon(config={"max_attempts": 1, "task_deadline_s": 4.0, "cdp_timeout_s": 3.0})
    prompts = ["before", "the page freezes [[lockup]]", "the request hangs [[hang]]", "after one", "after two"]
    write_prompts(daemon.work / "p.txt", prompts)
    result = daemon.ctl("submit", "p.txt", "--knob", "latency=0.2", "--json", "--wait", timeout=120)
    assert result.returncode == 1, result.stderr
    job_id = json.loads(result.stdout.splitlines()[0])["job"]
    tasks = {t["index"]: t for t in daemon.call("tasks", {"job": job_id})["tasks"]}
    assert [tasks[i]["state"] for i in range(1, 6)] == ["done", "failed", "failed", "done", "done"]
    assert tasks[2]["error_kind"] == "timeout" and tasks[3]["error_kind"] == "timeout"
    out = daemon.work / "tabfleet-out" / job_id
    for index in (1, 4, 5):
        assert (out / output_name(index, prompts[index - 1])).read_bytes() == render_png(prompts[index - 1])
    assert all(w["state"] == "idle" for w in daemon.wait_workers_idle(2))
