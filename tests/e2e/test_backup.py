"""A backup of a running daemon's store and its restore, done the way README "Backup and restore" says."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tabfleetd.demo.demoimage import render_png
from tabfleetd.files.outputs import output_name
from tabfleetd.store.store import Store

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

# README's one-liner for machines without mdb_copy: the same hot copy, with the venv's own lmdb module.
HOT_COPY = "import lmdb, sys; lmdb.open(sys.argv[1], readonly=True, max_dbs=8).copy(sys.argv[2], compact=True)"


def test_a_hot_copy_of_the_store_restores_a_job_in_progress(make_daemon: Any, short_tmp: Path) -> None:
    """Copied while the daemon writes, the store restores into a new state dir: the job resumes and finishes exactly."""
    daemon = make_daemon(workers=1)
    prompts = [f"a backed-up badger {i}" for i in range(8)]
    job = daemon.submit(prompts, "latency=0.5")
    daemon.wait_for(lambda: daemon.call("status", {"job": job})["jobs"][0]["done"] >= 2, 60, "two images")
    backup = short_tmp / "backup"
    backup.mkdir()
    copier = ["mdb_copy", "-c"] if shutil.which("mdb_copy") else [sys.executable, "-c", HOT_COPY]
    subprocess.run([*copier, str(daemon.state / "store"), str(backup)], check=True, timeout=60, capture_output=True)
    daemon.stop()
    out = daemon.work / "tabfleet-out" / job
    on_disk = {int(p.name[:5]) for p in out.glob("*.png")}
    copy = Store(backup)
    try:
        done_in_copy = {t["index"] for t in copy.tasks_of(job) if t["state"] == "done"}
    finally:
        copy.close()
    assert done_in_copy and done_in_copy <= on_disk

    restored = make_daemon(workers=1, start=False, name="restored")
    (restored.state / "store").mkdir(parents=True)
    shutil.copy(backup / "data.mdb", restored.state / "store" / "data.mdb")
    restored.start()
    status = restored.wait_job(job, timeout=120)
    assert (status["state"], status["done"], status["total"]) == ("done", 8, 8)
    for index, prompt in enumerate(prompts, start=1):
        assert (out / output_name(index, prompt)).read_bytes() == render_png(prompt)
    adopted = {e["index"] for e in restored.call("events", {"job": job, "kinds": ["task_done"]})["events"] if e["adopted"]}
    assert adopted == on_disk - done_in_copy, "images made after the copy are adopted, not made again"


def test_the_python_one_liner_copies_too(make_daemon: Any, short_tmp: Path) -> None:
    """Without mdb_copy, README's python one-liner makes a copy that opens with the job in it."""
    daemon = make_daemon(workers=1)
    job = daemon.submit(["a copied vole"], "latency=0.1")
    daemon.wait_job(job)
    subprocess.run([sys.executable, "-c", HOT_COPY, str(daemon.state / "store"), str(short_tmp)], check=True, timeout=60)
    daemon.stop()
    restored = make_daemon(workers=1, start=False, name="restored")
    (restored.state / "store").mkdir(parents=True)
    shutil.copy(short_tmp / "data.mdb", restored.state / "store" / "data.mdb")
    restored.start()
    assert restored.call("status", {"job": job})["jobs"][0]["done"] == 1
