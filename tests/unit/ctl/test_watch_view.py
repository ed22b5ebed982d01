"""Unit tests for tabfleetctl's watch views (plain lines and the rich live view) and its export writer."""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any

from rich.console import Console

from tabfleetctl.export import write
from tabfleetctl.tables import segment_widths
from tabfleetctl.watch import LiveView, PlainView

NOW = time.time()


def job(**counts: int) -> dict[str, Any]:
    base = {"done": 0, "failed": 0, "running": 0, "pending": 0, "cancelled": 0} | counts
    return {"id": "ab12cd34", "name": "robots", "state": "active", "site": "demo", "total": sum(base.values()),
            "rate_per_min": 12.5, "eta_s": 95, **base}


def worker(wid: int, **extra: Any) -> dict[str, Any]:
    return {"id": wid, "pid": 100 + wid, "state": "busy", "tasks_done": 3, "rss_mb": 250.0, "restarts": 0,
            "current_prompt": None, "last_error": None} | extra


def snapshot(jobs: list[dict[str, Any]], workers: list[dict[str, Any]], events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"jobs": jobs, "workers": workers, "events": events or [], "missed_events": False, "time": NOW,
            "memory": {"used_mb": 4096, "total_mb": 16384, "percent": 25.0, "daemon_rss_mb": 50.0}}


def test_segments_always_fill_the_bar_exactly() -> None:
    """The bar's segments add up to its width for any mix of counts, and follow the counts."""
    for counts in ({"done": 1, "pending": 2}, {"done": 333, "failed": 1, "running": 2, "pending": 664},
                   {"done": 7}, {"pending": 0}, {"done": 1, "failed": 1, "cancelled": 1, "running": 1, "pending": 1}):
        widths = segment_widths(job(**counts), 30)
        assert sum(widths) == 30, (counts, widths)
    assert segment_widths(job(done=10, pending=20), 30) == [10, 0, 0, 0, 20]


def test_plain_view_prints_a_line_per_change_and_per_event() -> None:
    """Plain lines: the job line again only when counts change, each event once, worker health changes once."""
    lines: list[str] = []
    view = PlainView(lines.append)
    view.update(snapshot([job(done=1, pending=3)], [worker(1, health="ok")]))
    view.update(snapshot([job(done=1, pending=3) | {"rate_per_min": 99.0}], [worker(1, health="ok")]))
    retry = {"seq": 5, "time": NOW, "kind": "task_retry", "job": "ab12cd34", "index": 2, "attempts": 1,
             "error_kind": "rate_limited", "error": "try again in 5 seconds", "retry_at": NOW + 5}
    view.update(snapshot([job(done=2, pending=2)], [worker(1, health="restarting in 9 s")], [retry]))
    view.update(snapshot([job(done=2, pending=2)], [worker(1, health="restarting in 8 s")]))
    assert len(lines) == 4, lines
    assert lines[0].startswith("job ab12cd34 (robots) active: 1/4 done, 0 failed, 0 running, 3 pending")
    assert "retry after attempt 1, next try in 5 s: rate_limited: try again in 5 seconds" in lines[1]
    assert lines[2].startswith("job ab12cd34 (robots) active: 2/4 done")
    assert lines[3] == "worker 1: restarting in 9 s"


def test_live_view_shows_counts_workers_memory_and_literal_prompts() -> None:
    """The rich view shows each count, the workers with health and cooling, memory, and prompts as typed."""
    console = Console(file=io.StringIO(), width=160, record=True, color_system=None, force_terminal=True)
    view = LiveView(console=console)
    failed = {"seq": 9, "time": NOW, "kind": "task_failed", "job": "ab12cd34", "index": 4, "attempts": 5,
              "error_kind": "site_error", "error": "content policy"}
    view.update(snapshot([job(done=7, failed=1, running=2, pending=0)],
                         [worker(1, health="ok", current_prompt="a [[error]] [bold]robot[/bold]"),
                          worker(2, state="restarting", health="restarting in 12 s", restart_at=NOW + 12, restarts=2)],
                         [failed]))
    view.close()
    text = console.export_text()
    assert "7/10" in text and " 80%" in text
    assert "a [[error]] [bold]robot[/bold]" in text
    assert "restarting in 12 s" in text and "12 s" in text
    assert "4.0 of 16.0 GiB" in text and "workers 500 MB" in text
    assert "FAILED after attempt 5: site_error: content policy" in text


def pages() -> list[dict[str, Any]]:
    fields = ["index", "prompt", "state", "attempts", "file", "error"]
    return [{"fields": fields, "tasks": [{"index": 1, "prompt": 'a "quoted",\nprompt', "state": "done", "attempts": 2,
                                          "file": "00001-a.png", "error": None}]},
            {"fields": fields, "tasks": [{"index": 2, "prompt": "b", "state": "failed", "attempts": 5, "file": None,
                                          "error": "boom"}]}]


def test_export_csv_round_trips() -> None:
    """CSV export has the daemon's columns as header and survives quotes and newlines in prompts."""
    out = io.StringIO()
    assert write(pages(), "csv", out) == 2
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert rows[0]["prompt"] == 'a "quoted",\nprompt' and rows[0]["attempts"] == "2" and rows[0]["error"] == ""
    assert rows[1]["state"] == "failed" and rows[1]["file"] == ""


def test_export_jsonl_keeps_types() -> None:
    """JSON lines keep numbers as numbers and missing values as null."""
    out = io.StringIO()
    write(pages(), "jsonl", out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert rows[1] == {"index": 2, "prompt": "b", "state": "failed", "attempts": 5, "file": None, "error": "boom"}
