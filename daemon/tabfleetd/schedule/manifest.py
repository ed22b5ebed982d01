"""A job's manifest.jsonl, kept in step with the store: one line per done task, written after its image."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..files import outputs
from ..states import TaskState
from ..store.store import Store

log = logging.getLogger(__name__)


def reconcile_manifest(store: Store, job: dict[str, Any]) -> bool:
    """Rewrite a job's manifest from the store when the two disagree; True when it was rewritten."""
    out = Path(job["out"])
    if not outputs.dir_exists(out):
        return False
    try:
        listed = {r.get("file") for r in outputs.manifest_records(out)}
    except Exception as exc:
        log.warning("manifest of job %s unreadable (%s); rewriting it", job["id"], exc)
        listed = set()
    if listed == store.done_files(job["id"]):  # file names only: a job may hold a million tasks
        return False
    done = [t for t in store.tasks_of(job["id"]) if t["state"] == TaskState.DONE.value]
    done.sort(key=lambda t: (t["finished"] or 0, t["index"]))
    outputs.rewrite_manifest(out, [manifest_record(t) for t in done])
    log.info("manifest of job %s rewritten from the store (%d lines)", job["id"], len(done))
    return True


def manifest_record(task: dict[str, Any]) -> dict[str, Any]:
    return {"index": task["index"], "prompt": task["prompt"], "file": task["file"], "sha256": task["sha256"],
            "bytes": task["bytes"], "attempts": task["attempts"], "worker": task["worker"],
            "started": task["started"], "finished": task["finished"]}
