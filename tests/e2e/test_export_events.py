"""tabfleetctl export and events over a finished real batch with a poison prompt."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tabfleetd.demo.demoimage import render_png
from tabfleetd.files.outputs import output_name

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

DAEMON_WORKERS = 2
DAEMON_CONFIG = {"retry_base_s": 0.1, "retry_cap_s": 0.2, "max_attempts": 2, "stagger_s": 0.0}
PROMPTS = [f"a tin robot number {i}, \"quoted\", with a comma" for i in range(8)] + ["[[error]] never an image"]


@pytest.fixture(scope="module")
def batch(module_daemon: Any) -> tuple[Any, str]:
    """One finished job: eight images and one prompt that failed after two attempts."""
    (module_daemon.work / "robots.txt").write_text("\n".join(PROMPTS) + "\n")
    result = module_daemon.ctl("submit", "robots.txt", "--knob", "latency=0.2", "--json", check=True)
    job = json.loads(result.stdout)["job"]
    final = module_daemon.wait_job(job, timeout=90)
    assert (final["done"], final["failed"]) == (8, 1)
    return module_daemon, job


def test_export_csv_has_every_task_with_outcome_file_and_attempts(batch: tuple[Any, str]) -> None:
    """CSV export: one row per task in order, done rows naming their real file, the failed one its error."""
    daemon, job = batch
    result = daemon.ctl("export", job, "--format", "csv", check=True)
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [int(r["index"]) for r in rows] == list(range(1, 10))
    for row, prompt in zip(rows[:8], PROMPTS):
        assert row["prompt"] == prompt and row["state"] == "done" and int(row["attempts"]) >= 1
        assert row["file"] == output_name(int(row["index"]), prompt)
        assert Path(row["path"]).read_bytes() == render_png(prompt)
        assert row["error"] == "" and row["sha256"]
    poison = rows[8]
    assert poison["state"] == "failed" and poison["attempts"] == "2" and poison["file"] == ""
    assert poison["error_kind"] and "Something went wrong" in poison["error"]


def test_export_jsonl_to_a_file(batch: tuple[Any, str]) -> None:
    """JSON lines export to -o FILE: typed values, nulls for the failed task's file, and a note on stderr."""
    daemon, job = batch
    result = daemon.ctl("export", job, "--format", "jsonl", "-o", "out.jsonl", check=True)
    assert f"9 tasks of job {job} written to out.jsonl" in result.stderr
    rows = [json.loads(line) for line in (daemon.work / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 9 and not list(daemon.work.glob(".out.jsonl*"))
    assert rows[0]["attempts"] >= 1 and isinstance(rows[0]["bytes"], int)
    assert rows[8]["state"] == "failed" and rows[8]["file"] is None and rows[8]["path"] is None


def test_export_of_an_unknown_job_is_refused(batch: tuple[Any, str]) -> None:
    """An unknown job exits 4 naming the job, and writes no file."""
    daemon, _ = batch
    result = daemon.ctl("export", "nosuchjob", "-o", "none.csv")
    assert result.returncode == 4 and "no job 'nosuchjob'" in result.stderr
    assert not (daemon.work / "none.csv").exists()


def test_events_show_done_retries_with_reason_and_failure(batch: tuple[Any, str]) -> None:
    """events JOB lists each done task once, each retry with its reason, and the final failure."""
    daemon, job = batch
    lines = daemon.ctl("events", job, check=True).stdout.splitlines()
    assert sum(" done 000" in line for line in lines) == 8
    retries = [line for line in lines if f"job {job} #9 retry after attempt" in line]
    assert len(retries) == 1 and all("Something went wrong" in line for line in retries)
    assert any(f"job {job} #9 FAILED after attempt 2" in line for line in lines)
    assert not any("now failed" in line for line in lines)  # job events only with --all
    assert any("now failed" in line for line in daemon.ctl("events", job, "--all", check=True).stdout.splitlines())


def test_events_json_and_limit(batch: tuple[Any, str]) -> None:
    """events --json prints the newest N events as JSON lines, oldest first."""
    daemon, job = batch
    events = [json.loads(line) for line in daemon.ctl("events", job, "--json", "--limit", "2", check=True).stdout.splitlines()]
    assert len(events) == 2 and events[0]["seq"] < events[1]["seq"]
    assert events[-1]["kind"] == "task_failed" and events[-1]["error_kind"]


def test_events_follow_prints_each_event_once_until_the_job_ends(batch: tuple[Any, str]) -> None:
    """events -f on a running job prints every task event exactly once and exits when the job ends."""
    daemon, _ = batch
    (daemon.work / "follow.txt").write_text("\n".join(f"a wax seal number {i}" for i in range(6)) + "\n")
    job = json.loads(daemon.ctl("submit", "follow.txt", "--knob", "latency=0.3", "--json", check=True).stdout)["job"]
    proc = subprocess.run([sys.executable, "-m", "tabfleetctl", "--socket", str(daemon.socket), "events", job, "-f", "--json"],
                          capture_output=True, text=True, timeout=60, cwd=daemon.work)
    assert proc.returncode == 0, proc.stderr
    done = [json.loads(line)["index"] for line in proc.stdout.splitlines() if json.loads(line)["kind"] == "task_done"]
    assert sorted(done) == list(range(1, 7))
