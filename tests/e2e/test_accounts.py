"""Named accounts on the demo site's sign-in (the `login` knob): sessions imported, kept, exported, and guarded."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import stat
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from tabfleetd.demo.demoimage import render_png
from tabfleetd.fleet.display import VirtualDisplay
from tabfleetd.files.outputs import output_name

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def demo_url(daemon: Any) -> str:
    return str(daemon.wait_for(lambda: daemon.call("ping")["demo_url"], 30, "the demo site to start"))


def sign_in_over_http(base: str, name: str) -> str:
    """Sign `name` in on the demo site as a person's browser elsewhere would; the session cookie's value."""
    parts = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.request("POST", "/signin", urllib.parse.urlencode({"name": name, "next": "/"}),
                       {"Content-Type": "application/x-www-form-urlencoded"})
    response = connection.getresponse()
    cookie = response.getheader("Set-Cookie") or ""
    connection.close()
    assert response.status == 303 and cookie.startswith("demo_account="), (response.status, cookie)
    assert "expires" not in cookie.lower() and "max-age" not in cookie.lower(), "a session cookie, gone with the browser"
    return cookie.split(";")[0].split("=", 1)[1]


def cookies_txt(path: Path, host: str, value: str) -> Path:
    path.write_text(f"# Netscape HTTP Cookie File\n#HttpOnly_{host}\tFALSE\t/\tFALSE\t0\tdemo_account\t{value}\n")
    return path


def accounts(daemon: Any) -> dict[str, dict[str, Any]]:
    return {a["name"]: a for a in json.loads(daemon.ctl("accounts", "--json", check=True).stdout)["accounts"]}


def workers_by_id(daemon: Any) -> dict[int, dict[str, Any]]:
    return {w["id"]: w for w in daemon.call("workers")["workers"]}


def stats(daemon: Any) -> dict[str, Any]:
    with urllib.request.urlopen(demo_url(daemon) + "/api/stats", timeout=10) as response:
        return dict(json.loads(response.read()))


def check_done(daemon: Any, job: str, prompts: list[str], timeout: float = 90) -> Path:
    status = daemon.wait_job(job, timeout)
    assert (status["state"], status["done"]) == ("done", len(prompts)), daemon.log_text()
    out = daemon.work / "tabfleet-out" / job
    for index, prompt in enumerate(prompts, 1):
        assert (out / output_name(index, prompt)).read_bytes() == render_png(prompt), prompt
    return out


def test_a_session_exported_from_one_workers_browser_signs_a_fresh_worker_in(make_daemon: Any) -> None:
    """Without sessions both accounts are signed out and stop; an imported session signs alice in and only bob's worker
    stays stopped; the session alice's browser kept (refreshed by the site) is exported and signs bob's fresh worker in."""
    daemon = make_daemon(workers=2, config={"workers": [{"account": "alice"}, {"account": "bob"}]})
    daemon.wait_workers_idle(2)
    prompts = [f"a signed-in teapot number {i}" for i in range(6)]
    job = daemon.submit(prompts, "latency=0.2", "login=1")
    daemon.wait_for(lambda: all(w["state"] == "blocked" for w in workers_by_id(daemon).values()), 60,
                    "both workers to stop, signed out")
    listed = accounts(daemon)
    assert (listed["alice"]["state"], listed["bob"]["state"]) == ("signed out", "signed out")
    assert "tabfleetctl login --account alice" in workers_by_id(daemon)[1]["health"]

    base = demo_url(daemon)
    imported = sign_in_over_http(base, "alice")
    cookies_txt(daemon.work / "alice.txt", urllib.parse.urlsplit(base).hostname, imported)
    result = daemon.ctl("accounts", "import", "alice", "alice.txt", check=True).stdout
    assert "account alice: 1 cookies imported; workers 1 use it now" in result
    out = check_done(daemon, job, prompts)
    assert {json.loads(line)["worker"] for line in (out / "manifest.jsonl").read_text().splitlines()} == {1}
    assert workers_by_id(daemon)[2]["state"] == "blocked", "a signed-out account stops only its own worker"
    listed = accounts(daemon)
    assert (listed["alice"]["state"], listed["bob"]["state"]) == ("signed in", "signed out")
    assert listed["alice"]["workers"] == [1] and listed["alice"]["last_used"]

    daemon.ctl("accounts", "export", "alice", "-o", "alice.json", check=True)
    assert stat.S_IMODE((daemon.work / "alice.json").stat().st_mode) == 0o600
    exported = json.loads((daemon.work / "alice.json").read_text())
    session = next(c for c in exported["cookies"] if c["name"] == "demo_account")
    assert session["value"] != imported and session["value"].startswith("alice."), "the browser's refreshed session"
    assert session["expires"] == -1 and session["httpOnly"]
    assert "demo_account\t" + session["value"] in daemon.ctl("accounts", "export", "alice", "--format", "netscape",
                                                                 check=True).stdout

    result = daemon.ctl("accounts", "import", "bob", "alice.json", check=True).stdout
    assert "workers 2 use it now" in result
    prompts = [f"a teapot for two number {i}" for i in range(8)]
    job = daemon.submit(prompts, "latency=0.5", "login=1")
    out = check_done(daemon, job, prompts)
    assert {json.loads(line)["worker"] for line in (out / "manifest.jsonl").read_text().splitlines()} == {1, 2}
    listed = accounts(daemon)
    assert (listed["alice"]["state"], listed["bob"]["state"]) == ("signed in", "signed in")
    files = daemon.state / "accounts"
    assert stat.S_IMODE(files.stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files.iterdir()} == {"alice.json": 0o600, "bob.json": 0o600}


def test_rotation_keeps_the_account_signed_in(make_daemon: Any) -> None:
    """The site's session cookie dies with each rotated Chromium; the account's session puts it back every time."""
    daemon = make_daemon(workers=1, config={"workers": [{"account": "alice"}], "rotate_after_tasks": 2})
    daemon.wait_workers_idle(1)
    prompts = ["a first warm-up"]
    check_done(daemon, daemon.submit(prompts, "latency=0.1"), prompts)  # starts the demo site
    cookies_txt(daemon.work / "alice.txt", urllib.parse.urlsplit(demo_url(daemon)).hostname,
                sign_in_over_http(demo_url(daemon), "alice"))
    daemon.ctl("accounts", "import", "alice", "alice.txt", check=True)
    prompts = [f"a rotating carousel number {i}" for i in range(7)]
    job = daemon.submit(prompts, "latency=0.1", "login=1")
    check_done(daemon, job, prompts)
    tasks = daemon.call("tasks", {"job": job})["tasks"]
    assert [t["attempts"] for t in tasks] == [1] * len(prompts), tasks
    assert workers_by_id(daemon)[1]["rotations"] >= 3
    assert stats(daemon)["signed_in"] == {"alice": len(prompts)}
    assert accounts(daemon)["alice"]["state"] == "signed in"


def login_window(daemon: Any) -> psutil.Process:
    profile = f"--user-data-dir={daemon.state / 'profiles' / 'worker-1'}"
    found = [p for p in psutil.process_iter(["cmdline"]) if profile in (p.info["cmdline"] or [])
             and any(a.startswith("--display=") for a in p.info["cmdline"])
             and not any(a.startswith("--type=") for a in p.info["cmdline"])]
    assert len(found) == 1, found
    return found[0]


def test_login_signs_an_account_in_and_keeps_its_session(make_daemon: Any, short_tmp: Path) -> None:
    """`login --account` shows the account on the display; the person signs in; once the window closes its session
    cookie (gone from the profile with the window) is the account's, and the worker is signed in with it."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed; the README's test command installs it (apt-get install xvfb)")
    screen = VirtualDisplay(short_tmp / "screen", short_tmp / "screen.log")  # stands in for a person's desktop
    try:
        display = asyncio.run(screen.start())
        daemon = make_daemon(workers=1, config={"workers": [{"account": "carol"}], "display": display})
        daemon.wait_workers_idle(1)
        prompts = [f"a signed picture number {i}" for i in range(3)]
        job = daemon.submit(prompts, "latency=0.2", "login=1")
        daemon.wait_for(lambda: workers_by_id(daemon)[1]["state"] == "blocked", 60, "carol's worker to stop")
        shown = daemon.ctl("login", "--account", "carol", "--site", "demo", "--knob", "login=1", "--knob", "person=carol",
                           check=True).stdout
        assert f"account carol (worker 1) is open on display {display}" in shown
        daemon.wait_for(lambda: stats(daemon)["signins"].get("carol"), 30, "the person to sign in at the window")
        time.sleep(2.5)  # the worker reads the window's cookies every second
        login_window(daemon).terminate()  # as closing its last window does
        daemon.wait_for(lambda: accounts(daemon)["carol"]["source"] == "login", 30, "the window's session to be kept")
        check_done(daemon, job, prompts)
        assert accounts(daemon)["carol"]["state"] == "signed in"
        assert stats(daemon)["signed_in"].get("carol") == len(prompts)
    finally:
        screen.stop()


def test_account_sessions_are_the_operators_alone(make_daemon: Any, short_tmp: Path, users: Any) -> None:
    """A socket client may list accounts but not import, remove or log in (without shared_fleet), and never export,
    whatever the config; nor read the session files."""
    os.chmod(short_tmp, 0o755)
    daemon = make_daemon(workers=1, config={"socket_group": str(users.gid)}, name="closed")
    daemon.wait_workers_idle(1)
    prompts = ["a kept session"]
    check_done(daemon, daemon.submit(prompts, "latency=0.1"), prompts)  # the worker keeps its session in its account
    daemon.wait_for(lambda: (daemon.state / "accounts" / "worker-1.json").exists(), 30, "the session to be kept")
    (daemon.work / "c.txt").write_text("127.0.0.1\tFALSE\t/\tFALSE\t0\tdemo_account\tx.y.z\n")
    os.chmod(daemon.work / "c.txt", 0o644)
    alice = users.member(users.alice)
    listed = daemon.ctl("accounts", "--json", user=alice)
    assert listed.returncode == 0 and [a["name"] for a in json.loads(listed.stdout)["accounts"]] == ["worker-1"]
    for args in (("accounts", "import", "worker-1", "c.txt"), ("accounts", "remove", "worker-1"),
                 ("login", "--account", "worker-1", "--site", "demo")):
        refused = daemon.ctl(*args, user=alice)
        assert refused.returncode == 4 and "only root or the daemon's user" in refused.stderr, (args, refused.stderr)
    refused = daemon.ctl("accounts", "export", "worker-1", user=alice)
    assert refused.returncode == 4 and "no setting allows others" in refused.stderr and "demo_session" not in refused.stdout
    peek = subprocess.run([*alice, "cat", str(daemon.state / "accounts" / "worker-1.json")], capture_output=True, text=True)
    assert peek.returncode != 0 and "Permission denied" in peek.stderr, peek
    assert accounts(daemon)["worker-1"]["cookies"] >= 1, "the session is still there"

    shared = make_daemon(workers=1, config={"socket_group": str(users.gid), "shared_fleet": True}, name="shared")
    shared.wait_workers_idle(1)
    shutil.copy(daemon.work / "c.txt", shared.work / "c.txt")
    assert shared.ctl("accounts", "import", "worker-1", "c.txt", user=alice).returncode == 0
    refused = shared.ctl("accounts", "export", "worker-1", user=alice)
    assert refused.returncode == 4 and "no setting allows others" in refused.stderr and "x.y.z" not in refused.stdout
    assert "x.y.z" in shared.ctl("accounts", "export", "worker-1", check=True).stdout
