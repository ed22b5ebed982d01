"""A damaged store: the daemon refuses it with one message and exit code 65, and --restore-store brings the jobs back."""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

EXIT_STORE_DAMAGED = 65


def damage(data: Any, how: str) -> None:
    size = data.stat().st_size
    if how == "empty":
        os.truncate(data, 0)
    elif how == "half":
        os.truncate(data, size // 2)
    else:  # garbage over every page after the two meta pages: the trees' roots included
        with open(data, "r+b") as f:
            f.seek(8192)
            f.write(os.urandom(size - 8192))


@pytest.mark.parametrize("how", ["empty", "half", "garbage"])
def test_a_damaged_store_stops_the_daemon_cleanly_and_can_be_restored(make_daemon: Any, how: str) -> None:
    """Truncated to 0, cut in half or overwritten: exit 65, one message naming the copy, no traceback; restore works."""
    # A pass every second, and a fresh copy whenever the last one is over 2 s old.
    daemon = make_daemon(workers=1, config={"housekeeping_interval_s": 1.0, "backup_interval_h": 2 / 3600})
    (daemon.work / "p.txt").write_text("a lighthouse at dusk\na fox in snow\n")
    job_id = json.loads(daemon.ctl("submit", "p.txt", "--json", "--knob", "latency=0.1", check=True).stdout)["job"]
    assert daemon.wait_job(job_id)["done"] == 2
    store = daemon.state / "store"
    finished = time.time()
    daemon.wait_for(lambda: (store / "data.mdb.prev").is_file() and (store / "data.mdb.prev").stat().st_mtime > finished + 0.1,
                    30, "a copy of the store made after the job ended")
    assert daemon.stop() == 0
    damage(store / "data.mdb", how)

    result = subprocess.run(daemon.argv(), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == EXIT_STORE_DAMAGED, result
    assert "Traceback" not in result.stderr
    message = [line for line in result.stderr.splitlines() if "damaged" in line]
    assert len(message) == 1 and "tabfleetd --restore-store" in message[0] and "data.mdb.prev" in message[0], result.stderr
    assert not [p for p in daemon.leftovers(wait=0) if p.pid != os.getpid()]  # nothing was started

    restored = subprocess.run([*daemon.argv(), "--restore-store"], capture_output=True, text=True, timeout=60)
    assert restored.returncode == 0 and "restored" in restored.stdout, restored
    assert list(store.glob("data.mdb.damaged-*"))  # the damaged file is kept for a post-mortem
    daemon.start()
    assert [j["id"] for j in daemon.call("status")["jobs"]] == [job_id]
    assert daemon.call("status", {"job": job_id})["jobs"][0]["done"] == 2


def test_without_a_copy_the_message_says_how_to_start_empty(make_daemon: Any) -> None:
    """A store emptied before any copy was made: exit 65, and the message says there is no copy to restore."""
    daemon = make_daemon(workers=1, config={"housekeeping_interval_s": 3600.0})
    daemon.submit(["a heron at dawn"], "latency=0.1")
    assert daemon.stop() == 0
    os.truncate(daemon.state / "store" / "data.mdb", 0)
    result = subprocess.run(daemon.argv(), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == EXIT_STORE_DAMAGED and "Traceback" not in result.stderr
    assert "There is no earlier copy" in result.stderr and "data.mdb is empty" in result.stderr
    restore = subprocess.run([*daemon.argv(), "--restore-store"], capture_output=True, text=True, timeout=60)
    assert restore.returncode == EXIT_STORE_DAMAGED and "no copy to restore" in restore.stderr
