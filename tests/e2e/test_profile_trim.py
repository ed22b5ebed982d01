"""Browser profiles stay bounded: rotation sheds caches, crash dumps and history, the size cap sheds the rest,
and the account stays signed in through both."""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tabfleetd.fleet.profiletrim import tree_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

MB = 2**20
JUNK = ("Default/Cache/Cache_Data/f_junk", "Default/GPUCache/data_junk", "Crashpad/completed/junk.dmp",
        "Default/Code Cache/js/junk")


def demo_url(daemon: Any) -> str:
    return str(daemon.wait_for(lambda: daemon.call("ping")["demo_url"], 30, "the demo site to start"))


def sign_alice_in(daemon: Any) -> None:
    """Sign alice in on the demo site over HTTP and import that session cookie as the account's."""
    parts = urllib.parse.urlsplit(demo_url(daemon))
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.request("POST", "/signin", urllib.parse.urlencode({"name": "alice", "next": "/"}),
                       {"Content-Type": "application/x-www-form-urlencoded"})
    response = connection.getresponse()
    value = (response.getheader("Set-Cookie") or "").split(";")[0].split("=", 1)[1]
    connection.close()
    (daemon.work / "alice.txt").write_text(
        f"# Netscape HTTP Cookie File\n#HttpOnly_{parts.hostname}\tFALSE\t/\tFALSE\t0\tdemo_account\t{value}\n")
    daemon.ctl("accounts", "import", "alice", "alice.txt", check=True)


def signed_in(daemon: Any) -> dict[str, int]:
    """Prompts the demo site answered for each signed-in account."""
    with urllib.request.urlopen(demo_url(daemon) + "/api/stats", timeout=10) as response:
        return dict(json.loads(response.read())["signed_in"])


def run_signed_in(daemon: Any, prompts: list[str]) -> None:
    """A job on the sign-in-only demo site completes, every prompt answered for alice."""
    before = signed_in(daemon).get("alice", 0)
    job = daemon.submit(prompts, "latency=0.1", "login=1")
    status = daemon.wait_job(job, 90)
    assert (status["state"], status["done"]) == ("done", len(prompts)), daemon.log_text()
    assert signed_in(daemon).get("alice", 0) == before + len(prompts)


def add_junk(root: Path, names: tuple[str, ...], each_mb: int) -> None:
    for rel in names:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * each_mb * MB)


def worker_view(daemon: Any) -> dict[str, Any]:
    workers = json.loads(daemon.ctl("workers", "--json", check=True).stdout)["workers"]
    return dict(next(w for w in workers if w["id"] == 1))


def session_files(root: Path) -> set[str]:
    return {rel for rel in ("Default/Cookies", "Default/Local Storage", "Default/Preferences", "Local State")
            if (root / rel).exists()}


def test_a_rotated_profile_sheds_its_caches_and_keeps_its_session(make_daemon: Any) -> None:
    """Junk in the HTTP, code and GPU caches and the crash dumps is gone after the next rotation, the profile is
    smaller, the session's files are still there, and alice is still signed in."""
    daemon = make_daemon(workers=1, config={"workers": [{"account": "alice"}], "rotate_after_tasks": 3})
    daemon.wait_workers_idle(1)
    daemon.submit(["a warm-up"], "latency=0.1")
    sign_alice_in(daemon)
    run_signed_in(daemon, ["a harbour at noon"])  # 2 tasks on this browser: the job below rotates at its second
    root = daemon.state / "profiles" / "worker-1"
    kept = session_files(root)
    assert {"Default/Cookies", "Default/Local Storage", "Local State"} <= kept, kept
    add_junk(root, JUNK, 4)
    grown = tree_bytes(root)
    run_signed_in(daemon, ["a harbour at dusk", "a harbour at night"])
    assert worker_view(daemon)["rotations"] >= 1
    assert not [rel for rel in JUNK if (root / rel).exists()], "the junk outlived the rotation"
    assert tree_bytes(root) < grown - 12 * MB
    assert kept <= session_files(root)  # none of the session went (Chromium may write Preferences only later)
    daemon.wait_for(lambda: (worker_view(daemon)["profile_mb"] or 99) < grown / MB - 12, 15, "workers to show the trimmed size")
    assert "profile" in daemon.ctl("workers", check=True).stdout


def test_a_profile_over_its_cap_is_trimmed_while_idle_and_stays_signed_in(make_daemon: Any) -> None:
    """A profile grown past profile_max_mb (with files no list names) is trimmed by a browser restart at the next
    idle moment: all but the session goes, and alice's next prompts are still answered signed in."""
    daemon = make_daemon(workers=1, config={"workers": [{"account": "alice"}], "profile_max_mb": 20})
    daemon.wait_workers_idle(1)
    daemon.submit(["a warm-up"], "latency=0.1")
    sign_alice_in(daemon)
    run_signed_in(daemon, ["a lantern in the fog"])
    root = daemon.state / "profiles" / "worker-1"
    kept = session_files(root)
    add_junk(root, ("Default/Unlisted Growth/a", "Default/Unlisted Growth/b", "Default/GPUCache/data_junk"), 10)
    started = time.monotonic()
    daemon.wait_for(lambda: (worker_view(daemon)["profile_mb"] or 0) > 20, 15, "workers to show the grown profile")
    daemon.wait_for(lambda: (worker_view(daemon)["profile_mb"] or 99) < 20, 30, "the profile to be trimmed below its cap")
    assert time.monotonic() - started < 30
    assert not (root / "Default/Unlisted Growth").exists() and tree_bytes(root) < 20 * MB
    assert kept <= session_files(root)  # none of the session went (Chromium may write Preferences only later)
    assert "over profile_max_mb" in daemon.log.read_text()
    daemon.wait_workers_idle(1)
    run_signed_in(daemon, ["a lantern at dawn"])
