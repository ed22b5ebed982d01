"""A job's export: every task with its outcome, file and attempts, in pages for a stream."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import Any

PAGE = 500  # tasks per frame: a 3000-task job with long prompts stays far below the frame limit

# The columns, in order; tabfleetctl writes CSV headers from this order.
FIELDS = ("index", "prompt", "state", "attempts", "file", "path", "sha256", "bytes", "error_kind", "error",
          "worker", "started", "finished")


def export_row(job: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
    """One task as an export row; `path` is absolute and only set for a task that has a file."""
    row = {k: task.get(k) for k in FIELDS if k != "path"}
    row["path"] = str(Path(job["out"]) / task["file"]) if task.get("file") else None
    return {k: row[k] for k in FIELDS}


Fetch = Callable[[int], Awaitable[tuple[list[dict[str, Any]], "int | None"]]]


async def pages(job: dict[str, Any], fetch: Fetch) -> AsyncGenerator[dict[str, Any], None]:
    """The job's tasks in index order, each page naming the job and the columns.

    ``fetch(after)`` reads the next page from the store (Store.tasks_page) only when the stream wants it, so
    a million-task export never holds more than one page in memory.
    """
    head = {"job": job["id"], "name": job["name"], "state": job["state"], "total": job["total"], "fields": list(FIELDS)}
    after: int | None = 0
    first = True
    while after is not None:
        tasks, after = await fetch(after)
        if tasks or first:
            yield head | {"tasks": [export_row(job, t) for t in tasks]}
        first = False
