"""Unit tests for tabfleetctl's tables: whatever the width, they fit it, keep every number whole, and give way in order."""

from __future__ import annotations

import io
import time
from typing import Any

import pytest
from rich.console import Console

from tabfleetctl.samples import demo_prompts
from tabfleetctl.tables import ago, jobs_table, last_error_text, workers_table

NOW = time.time()


def job(job_id: str, name: str, state: str = "active", **counts: int) -> dict[str, Any]:
    base = {"done": 0, "failed": 0, "running": 0, "pending": 0, "cancelled": 0} | counts
    return {"id": job_id, "name": name, "state": state, "total": sum(base.values()), "rate_per_min": 123.4,
            "eta_s": 4000, "out": f"/srv/tabfleet/out/{job_id}/with/a/long/path", **base}


JOBS = [job("ab12cd34", "lighthouses on cliffs at dawn, a long name", done=1234, failed=5, running=3, pending=8758),
        job("ef56ab78", "cancelled toads", "cancelled", done=2, cancelled=4),
        job("99887766", "short", "done", done=6)]
WORKERS = [{"id": 1, "state": "busy", "health": "ok", "current_prompt": "a watercolour of a lighthouse " * 3,
            "tasks_done": 120, "rss_mb": 250.0, "profile_mb": 37.4, "restarts": 2, "last_error": "transient: Something went wrong",
            "last_error_at": NOW - 125, "account": {"cooling_until": NOW + 30}},
           {"id": 12, "state": "restarting", "health": "restarting in 9 s", "current_prompt": None, "tasks_done": 0,
            "rss_mb": 0.0, "restarts": 14, "last_error": None, "restart_at": NOW + 9}]


def render(table: Any, width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    console.print(table)
    return console.export_text().splitlines()


@pytest.mark.parametrize("width", [72, 80, 100, 120, 160, 220])
def test_tables_fit_any_width_and_keep_numbers_whole(width: int) -> None:
    """No line is wider than the terminal (72 columns and up), and every count, rate and ETA is printed whole."""
    jobs = render(jobs_table(JOBS, width, title=None, out=True), width)
    workers = render(workers_table(WORKERS, width, NOW, title=None, errors=True), width)
    assert all(len(line) <= width for line in jobs + workers), [line for line in jobs + workers if len(line) > width]
    text = "\n".join(jobs)
    for number in ("1234/10000", "ab12cd34", "ef56ab78", "123.4", "1h06m"):
        assert number in text, (number, text)
    assert "120" in "\n".join(workers) and "250 MB" in "\n".join(workers)


def test_what_gives_way_first_at_80_columns() -> None:
    """At 80 columns: the output path goes first, then running and pending (the bar shows them); cancelled stays."""
    header = render(jobs_table(JOBS, 80, title=None, out=True), 80)[0].split()
    assert header == ["job", "state", "progress", "done", "failed", "cancelled", "rate/min", "eta"]
    wide = render(jobs_table(JOBS, 220, title=None, out=True), 220)[0].split()
    assert wide == ["job", "state", "progress", "done", "failed", "cancelled", "running", "pending", "rate/min", "eta", "out"]


def test_ended_jobs_have_no_rate_or_eta_and_long_names_end_in_an_ellipsis() -> None:
    """A done or cancelled job shows blank rate and ETA; a name that does not fit is cut with '…'."""
    lines = render(jobs_table(JOBS, 80), 80)
    ended = next(line for line in lines if line.startswith("99887766"))
    assert ended.rstrip().endswith("0"), ended  # the failed count ends the row: no rate, no ETA
    active = next(line for line in lines if line.startswith("ab12cd34"))
    assert "…" in active and "123.4" in active and "1h06m" in active


def test_workers_show_the_profile_size_where_there_is_room() -> None:
    """Each worker's profile size is a column of its own, a dash where none was measured (a remote browser)."""
    header, _, first, second = render(workers_table(WORKERS, 160, NOW, title=None), 160)[:4]
    assert header.split()[-3:] == ["profile", "restarts", "cooling"], header
    assert first.split()[-5:-3] == ["37", "MB"] and second.split()[-4] == "-", (first, second)


def test_workers_show_cooling_and_the_age_of_the_last_error() -> None:
    """On a narrow terminal cooling joins health; the last error says how old it is."""
    narrow = "\n".join(render(workers_table(WORKERS, 100, NOW, errors=True), 100))
    assert "ok, cooling 30 s" not in narrow and "cooling 30 s" in narrow
    assert "2 min ago: tran" in narrow
    assert last_error_text({"last_error": "x"}, NOW) == "x"  # from a daemon that keeps no time for it
    assert [ago(s) for s in (0, 59, 61, 7200, 90000)] == ["0 s ago", "59 s ago", "1 min ago", "2 h ago", "1 d ago"]


def test_demo_prompts_are_distinct_however_many() -> None:
    """The demo's prompts: the written 36 first, then generated ones, never twice the same."""
    for count in (1, 36, 37, 996, 3000):
        prompts = demo_prompts(count)
        assert len(prompts) == count == len(set(prompts))
    assert demo_prompts(36) == demo_prompts(40)[:36]
