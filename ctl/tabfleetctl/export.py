"""tabfleetctl export: a job's tasks, streamed from the daemon page by page, written as CSV or JSON lines."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from typing import Any, TextIO

FORMATS = ("csv", "jsonl")


def write(pages: Iterable[dict[str, Any]], fmt: str, out: TextIO) -> int:
    """Write every task of every page to `out`; return how many tasks were written."""
    count = 0
    writer: csv.DictWriter[str] | None = None
    for page in pages:
        if fmt == "csv" and writer is None:
            # The daemon names the columns, so a column it adds later needs no client change.
            writer = csv.DictWriter(out, fieldnames=page["fields"], extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
        for task in page["tasks"]:
            if writer is not None:
                writer.writerow({k: "" if v is None else v for k, v in task.items()})
            else:
                out.write(json.dumps(task, ensure_ascii=False) + "\n")
            count += 1
    return count
