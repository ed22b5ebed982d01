"""Numbers a person can trust, from a real daemon: counts that add up with cancelled tasks, no rate or ETA for
ended jobs, recent jobs by default, a rate without an early spike, errors with their age, and output names
that keep non-Latin prompts meaningful without renaming the images of a job queued before an upgrade."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tabfleetctl.client import Client
from tabfleetd.demo.demoimage import render_png
from tabfleetd.files.outputs import output_name
from tabfleetd.store.store import Store

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def job_row(table: str, job: str) -> list[str]:
    return next(line.split() for line in table.splitlines() if line.startswith(job))


def test_status_shows_cancelled_counts_blank_rate_for_ended_jobs_and_recent_jobs_only(daemon: Any) -> None:
    """A cancelled job's counts add up in a cancelled column; ended jobs show no rate or ETA; --all lists every job."""
    ended = [daemon.submit([f"a finished snail {n}-{i}" for i in range(2)], "latency=0.05") for n in range(6)]
    for job in ended:
        daemon.wait_job(job)
    cancelled = daemon.submit([f"a cancelled slug {i}" for i in range(8)], "latency=2")
    daemon.wait_for(lambda: daemon.call("status", {"job": cancelled})["jobs"][0]["running"], 30, "a running task")
    daemon.ctl("cancel", cancelled, check=True)
    active = daemon.submit([f"a running hare {i}" for i in range(6)], "latency=1")
    daemon.wait_for(lambda: daemon.call("status", {"job": active})["jobs"][0]["done"], 60, "a first image")

    table = daemon.ctl("status", check=True).stdout
    header = table.splitlines()[0].split()
    assert header[:6] == ["job", "state", "progress", "done", "failed", "cancelled"], header
    row = job_row(table, cancelled)
    view = daemon.call("status", {"job": cancelled})["jobs"][0]
    assert view["done"] + view["failed"] + view["running"] + view["pending"] + view["cancelled"] == view["total"] == 8
    assert row[row.index(f"{view['done']}/8") + 2] == str(view["cancelled"]) and view["cancelled"] > 0, row
    assert view["rate_per_min"] == 0.0 and view["eta_s"] is None
    assert not any(cell.endswith("s") and "m" in cell for cell in row[-3:]), f"no ETA for an ended job: {row}"
    # Unfinished jobs and the five that ended last; the oldest is left out and said to be.
    assert ended[0] not in table and all(job in table for job in ended[2:]) and active in table
    assert "2 older finished jobs not shown: `tabfleetctl status --all`" in table
    everything = daemon.ctl("status", "--all", check=True).stdout
    assert all(job in everything for job in ended) and "not shown" not in everything
    assert json.loads(daemon.ctl("status", "--json", check=True).stdout)["hidden"] == 2
    running_row = job_row(table, active)
    assert float(running_row[-3 if running_row[-1].startswith("/") else -2]) > 0, running_row


def test_the_early_rate_never_spikes_above_the_ideal(make_daemon: Any) -> None:
    """Three workers at 2 s an image: every rate pushed while the job runs stays near the ideal 90/min, from the first image on."""
    daemon = make_daemon(workers=3)
    daemon.wait_workers_idle(3)
    job = daemon.submit([f"a measured crane {i}" for i in range(15)], "latency=2")
    rates = []
    with Client(daemon.socket, 30) as client:
        for frame in client.stream("subscribe", {"job": job, "interval_s": 0.2}, idle_timeout=30):
            view = frame["jobs"][0]
            if view["state"] == "active" and view["done"]:
                rates.append((view["done"], view["rate_per_min"]))
    assert len(rates) >= 5, rates
    ideal = 3 * 60 / 2
    assert all(0 < rate <= ideal * 1.1 for _, rate in rates), f"a spike over the ideal {ideal}/min: {rates}"
    assert max(rate for _, rate in rates) >= ideal * 0.6, rates  # and it does reach near the ideal


def test_a_workers_last_error_shows_its_age(daemon: Any) -> None:
    """An error from earlier stays in `workers` with how long ago it happened, not as if it were news."""
    job = daemon.submit(["[[error]] a poison gull"] + [f"a healthy gull {i}" for i in range(4)], "latency=0.1")
    daemon.wait_for(lambda: any(w["last_error"] for w in daemon.call("workers")["workers"]), 60, "an error")
    daemon.wait_job(job, timeout=120)
    time.sleep(2)
    workers = daemon.call("workers")["workers"]
    erred = [w for w in workers if w["last_error"]]
    assert erred and all(time.time() - w["last_error_at"] >= 2 for w in erred)
    table = daemon.ctl("workers", check=True).stdout
    assert "last error" in table.splitlines()[0]
    assert any(" s ago: transient: Something went wrong" in line for line in table.splitlines()), table


def test_non_latin_prompts_get_meaningful_names(daemon: Any) -> None:
    """Chinese, German and Russian prompts are transliterated into their file names, and each image is its own."""
    prompts = ["一只猫在月光下", "Straße im Regen", "Кот в сапогах", "🐱"]
    job = daemon.submit(prompts, "latency=0.1")
    assert daemon.wait_job(job)["done"] == 4
    out = daemon.work / "tabfleet-out" / job
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["00001-yi-zhi-mao-zai-yue-guang-xia.png", "00002-strasse-im-regen.png",
                     "00003-kot-v-sapogakh.png", "00004-cat.png"]
    for index, prompt in enumerate(prompts, start=1):
        assert (out / output_name(index, prompt)).read_bytes() == render_png(prompt)


def test_a_job_queued_before_the_upgrade_keeps_its_names_and_adopts_its_images(make_daemon: Any) -> None:
    """A job stored by an older tabfleetd (no name version) keeps the old names: its finished image is adopted, not redone."""
    daemon = make_daemon(start=False)
    prompts = ["Straße im Regen", "一只猫在月光下", "a plain heron"]
    out = daemon.work / "old-out"
    out.mkdir(parents=True)
    store = Store(daemon.state / "store")
    try:
        job = store.create_job(job_id="0ld0ld00", name="old", site="demo", knobs={"latency": "0.1"}, out=str(out),
                               prompts=prompts, max_workers=0, max_attempts=3, source="old.txt")
    finally:
        store.close()
    assert "names" not in job or job["names"] == 1
    # The image the old daemon finished and wrote, under its old name, just before it was stopped for the upgrade.
    (out / "00001-strae-im-regen.png").write_bytes(render_png(prompts[0]))
    daemon.start()
    assert daemon.wait_job(job["id"])["done"] == 3
    assert sorted(p.name for p in out.glob("*.png")) == ["00001-strae-im-regen.png", "00002-prompt.png", "00003-a-plain-heron.png"]
    events = daemon.call("events", {"job": job["id"], "kinds": ["task_done"]})["events"]
    assert [e["adopted"] for e in sorted(events, key=lambda e: e["index"])] == [True, False, False]
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert {r["file"] for r in manifest} == {"00001-strae-im-regen.png", "00002-prompt.png", "00003-a-plain-heron.png"}
    # A new job of the same prompts gets the new names.
    fresh = daemon.submit(prompts, "latency=0.1")
    daemon.wait_job(fresh)
    assert (Path(daemon.work) / "tabfleet-out" / fresh / "00001-strasse-im-regen.png").is_file()
