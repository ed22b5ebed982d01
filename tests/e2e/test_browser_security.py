"""Attacks on the browsers, performed for real: another local user looking for a DevTools port, a socket client's
profile that would run a command as the daemon or point a worker at loopback services, snapshot files and paths,
and one worker's cleanup reaching another's Chromium. Each fails while normal use goes on."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tabfleetd.sites import profiles
from tabfleetd.fleet.browser import Chromium, kill_profile_processes
from tabfleetd.fleet.devtools import connect_browser

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

DAEMON_WORKERS = 1
DAEMON_CONFIG = {"max_attempts": 1}
NOBODY = 65534

# Run as the other local user: every listening TCP socket this network namespace has, with its inode.
SCAN = r"""
import json
found = []
for name in ("/proc/net/tcp", "/proc/net/tcp6"):
    with open(name) as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                found.append({"port": int(fields[1].rsplit(":", 1)[1], 16), "inode": int(fields[9])})
print(json.dumps(found))
"""

# Run as the other local user: ask each port what a DevTools endpoint answers (its browser's websocket URL).
PROBE = r"""
import json, socket, sys
answers = {}
for port in sys.argv[1:]:
    try:
        with socket.create_connection(("127.0.0.1", int(port)), 3) as conn:
            conn.sendall(b"GET /json/version HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            conn.settimeout(3)
            data = b""
            try:
                while b"}" not in data and (chunk := conn.recv(65536)):
                    data += chunk
            except socket.timeout:
                pass
        answers[port] = "devtools" if b"webSocketDebuggerUrl" in data else "other"
    except OSError as exc:
        answers[port] = f"refused ({exc})"
print(json.dumps(answers))
"""

# Run as the other local user: try to reach a process's DevTools pipe through /proc.
OPEN_FD = r"""
import sys
try:
    open(sys.argv[1], "rb").close()
    print("opened")
except OSError as exc:
    print(type(exc).__name__)
"""


def need_a_second_user() -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as a second local user (uid 65534)")


def as_nobody(code: str, *args: str) -> str:
    """Run Python code as uid/gid 65534 with no groups; its stdout."""
    need_a_second_user()
    result = subprocess.run(["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
                             sys.executable, "-I", "-c", code, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def socket_inodes(pids: list[int]) -> set[int]:
    found = set()
    for pid in pids:
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for name in names:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{name}")
            except OSError:
                continue
            if target.startswith("socket:["):
                found.add(int(target[8:-1]))
    return found


def browser_pids(profile: Path) -> list[int]:
    """The processes of the Chromium using `profile` (browser, zygotes, renderers, utilities)."""
    flag = f"--user-data-dir={profile}"
    return [p.pid for p in psutil.process_iter(["cmdline"]) if flag in (p.info["cmdline"] or [])]


def listening_of(pids: list[int], scan: list[dict[str, int]]) -> list[dict[str, int]]:
    inodes = socket_inodes(pids)
    return [entry for entry in scan if entry["inode"] in inodes]


def demo_profile(path: Path, name: str, *edits: tuple[str, str]) -> Path:
    """The built-in demo profile under another name, with text replacements."""
    text = profiles.builtin_text("demo").replace('name = "demo"', f'name = "{name}"')
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")
    return path


def run_job(daemon: Any, site: str, prompts: list[str]) -> dict[str, Any]:
    (daemon.work / "p.txt").write_text("\n".join(prompts) + "\n")
    job_id = json.loads(daemon.ctl("submit", "p.txt", "--site", site, "--json", check=True).stdout)["job"]
    return daemon.wait_job(job_id, 90) | {"id": job_id}


def test_no_other_user_finds_a_devtools_port_or_reaches_the_pipe(module_daemon: Any, tmp_path: Path) -> None:
    """As uid 65534: no TCP socket of a worker's Chromium listens, and /proc does not hand out its pipe. The same
    scan finds and drives a Chromium started the old way (--remote-debugging-port), so the scan is not blind."""
    need_a_second_user()
    job = run_job(module_daemon, "demo", ["a lighthouse at dusk", "a kettle"])
    assert (job["state"], job["done"]) == ("done", 2)
    profile = module_daemon.state / "profiles" / "worker-1"
    pids = browser_pids(profile)
    assert pids, "the worker's Chromium is running"
    scan = json.loads(as_nobody(SCAN))
    assert listening_of(pids, scan) == []
    leader = min(pids, key=lambda pid: psutil.Process(pid).create_time())
    assert as_nobody(OPEN_FD, f"/proc/{leader}/fd/3").strip() == "PermissionError"
    assert not (profile / "DevToolsActivePort").exists()

    old_way = Chromium("/usr/bin/chromium", tmp_path / "old", tmp_path / "old.log", extra_args=("--remote-debugging-port=0",))
    try:
        browser = asyncio.run(connect_browser(old_way, 30, None))
        assert browser is not None
        exposed = listening_of(browser_pids(tmp_path / "old"), json.loads(as_nobody(SCAN)))
        assert exposed, "a DevTools port shows in the scan"
        answers = json.loads(as_nobody(PROBE, *(str(e["port"]) for e in exposed)))
        assert "devtools" in answers.values(), answers
    finally:
        old_way.kill()


def test_a_profile_cannot_run_a_command_as_the_daemon(module_daemon: Any, tmp_path: Path) -> None:
    """browser.args with --renderer-cmd-prefix is refused at submit, at sites check and at login, naming the key; the
    script never runs; allowed switches (language, window size, ...) reach the worker's Chromium."""
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.sh"
    evil.write_text(f"#!/bin/sh\ntouch {marker}\nexec \"$@\"\n")
    evil.chmod(0o755)
    daemon = module_daemon
    demo_profile(daemon.work / "evil.toml", "evil", ("headless = true", f'headless = true\nargs = ["--renderer-cmd-prefix={evil}"]'))
    (daemon.work / "p.txt").write_text("a harmless prompt\n")
    expected = (f"key 'browser.args' item 1 ('--renderer-cmd-prefix={evil}') is not allowed in a site profile")
    submitted = daemon.ctl("submit", "p.txt", "--site", "evil.toml")
    assert submitted.returncode == 4 and expected in submitted.stderr and "chromium_args" in submitted.stderr
    checked = daemon.ctl("sites", "check", "evil.toml")
    assert checked.returncode == 1 and expected in checked.stderr
    login = daemon.ctl("login", "--worker", "1", "--site", "evil.toml")
    assert login.returncode == 4 and expected in login.stderr

    demo_profile(daemon.work / "styled.toml", "styled", ("headless = true", 'headless = true\nargs = '
                 '["--lang=de-DE", "--window-size=1100,700", "--disable-blink-features=AutomationControlled"]'))
    job = run_job(daemon, "styled.toml", ["a lantern", "a quiet harbour"])
    assert (job["state"], job["done"]) == ("done", 2)
    cmdlines = [psutil.Process(pid).cmdline() for pid in browser_pids(daemon.state / "profiles" / "worker-1")]
    assert any("--lang=de-DE" in c and "--window-size=1100,700" in c for c in cmdlines)
    assert not any(str(evil) in " ".join(c) for c in cmdlines)
    assert not marker.exists()


@pytest.fixture
def loopback_service() -> Iterator[tuple[int, list[str]]]:
    """A local HTTP service that is not the demo site, recording every request it gets."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"internal secrets")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], hits
    finally:
        server.shutdown()
        server.server_close()


def test_a_profile_cannot_send_a_worker_to_loopback_or_private_addresses(module_daemon: Any,
                                                                         loopback_service: tuple[int, list[str]]) -> None:
    """start_url or login.probe_url naming a loopback service, the daemon's own demo port by address, a shorthand
    loopback address, a host off the allow-list or the cloud metadata address is refused at submit, naming the key;
    the service never sees a request, and the demo site still works."""
    port, hits = loopback_service
    daemon = module_daemon
    demo_port = daemon.call("ping")["demo_url"].rsplit(":", 1)[1].split("/")[0]
    cases = [
        (f"http://127.0.0.1:{port}/", "key 'start_url' host '127.0.0.1' is a loopback address"),
        (f"http://2130706433:{port}/", "key 'start_url' host '2130706433' is a loopback address"),
        (f"http://[::1]:{port}/", "key 'start_url' host '::1' is a loopback address"),
        (f"http://127.0.0.1:{demo_port}/", "key 'start_url' host '127.0.0.1' is a loopback address"),
        (f"http://localhost:{port}/", "key 'start_url' host 'localhost' is not a host this daemon allows"),
        ("http://10.0.0.1/", "key 'start_url' host '10.0.0.1' is a private address"),
    ]
    (daemon.work / "p.txt").write_text("one\n")
    for url, expected in cases:
        demo_profile(daemon.work / "far.toml", "far", ('start_url = "{demo}/?scope={job}"', f'start_url = "{url}"'))
        refused = daemon.ctl("submit", "p.txt", "--site", "far.toml")
        assert refused.returncode == 4 and expected in refused.stderr, (url, refused.stderr)
    demo_profile(daemon.work / "probe.toml", "probe", ("[login]\n", '[login]\nprobe_url = "http://169.254.169.254/latest/"'
                                                       '\nprobe_pattern = "x"\n'))
    refused = daemon.ctl("submit", "p.txt", "--site", "probe.toml")
    assert refused.returncode == 4 and "key 'login.probe_url' host '169.254.169.254' is a link-local address" in refused.stderr
    time.sleep(1)  # a worker that was sent there anyway would have loaded the page by now
    assert hits == []
    job = run_job(daemon, "demo", ["still drawing"])
    assert (job["state"], job["done"]) == ("done", 1)


def test_snapshots_are_the_daemons_alone_and_their_paths_stay_with_it(module_daemon: Any) -> None:
    """A missed selector saves a snapshot 0600 in a 0700 directory that uid 65534 cannot read; tasks and export
    name it relative to the snapshots dir only, never by its path under the state dir."""
    need_a_second_user()
    daemon = module_daemon
    demo_profile(daemon.work / "lost.toml", "lost", ('selectors = ["#prompt-textarea"]', 'selectors = ["#composer-v9"]'),
                 ("load_s = 30", "load_s = 1"))
    job = run_job(daemon, "lost.toml", ["a lost prompt"])
    assert job["state"] == "failed"
    folder = daemon.state / "snapshots" / "worker-1"
    shots = sorted(folder.glob("*.png"))
    assert shots and stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in (shots[-1], shots[-1].with_suffix(".html")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert as_nobody(OPEN_FD, str(shots[-1])).strip() == "PermissionError"
    listed = daemon.ctl("tasks", job["id"], check=True).stdout
    as_json = daemon.ctl("tasks", job["id"], "--json", check=True).stdout
    exported = daemon.ctl("export", job["id"], "--format", "jsonl", check=True).stdout
    error = json.loads(as_json.splitlines()[0])["error"]
    assert "#composer-v9" in error and f"worker-1/{shots[-1].name}" in error
    for text in (listed, as_json, exported):
        assert str(daemon.state) not in text and "snapshots/worker-1" not in text


def test_cleaning_up_one_profile_spares_every_other(tmp_path: Path) -> None:
    """Ending worker-1's leftovers kills processes naming worker-1's profile (or a path in it) and spares worker-10's,
    worker-1x's and worker-19's; ending the profiles dir's leftovers then kills the rest."""
    profiles_dir = tmp_path / "profiles"
    args = {
        "worker-1": [f"--user-data-dir={profiles_dir / 'worker-1'}"],
        "crashpad-1": [f"--database={profiles_dir / 'worker-1' / 'xdg' / 'chromium' / 'Crash Reports'}"],
        "worker-10": [f"--user-data-dir={profiles_dir / 'worker-10'}"],
        "crashpad-10": [f"--database={profiles_dir / 'worker-10' / 'xdg'}"],
        "worker-1x": [f"--user-data-dir={profiles_dir / 'worker-1x'}"],
        "worker-19": [f"--user-data-dir={profiles_dir / 'worker-19'}"],
    }
    procs = {name: subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", *a]) for name, a in args.items()}
    try:
        time.sleep(0.3)
        assert kill_profile_processes(profiles_dir / "worker-1") == 2
        for name, proc in procs.items():
            try:
                proc.wait(5 if name.endswith("-1") else 0.5)
            except subprocess.TimeoutExpired:
                pass
        alive = sorted(name for name, proc in procs.items() if proc.poll() is None)
        assert alive == ["crashpad-10", "worker-10", "worker-19", "worker-1x"]
        assert kill_profile_processes(profiles_dir) == 4
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()


def test_a_job_queued_before_the_allow_list_fails_without_running_its_switch(make_daemon: Any, tmp_path: Path) -> None:
    """A stored job whose profile has a switch the allow-list now refuses fails at once, as permanent, and the
    worker (never recycled for it) goes on with the next job."""
    daemon = make_daemon(workers=1, start=False)
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.sh"
    evil.write_text(f"#!/bin/sh\ntouch {marker}\nexec \"$@\"\n")
    evil.chmod(0o755)
    stored = profiles.builtin("demo")
    stored["browser"]["args"] = [f"--renderer-cmd-prefix={evil}"]  # as an older tabfleet would have stored it
    out = daemon.work / "old-out"
    out.mkdir()
    from tabfleetd.store.store import Store

    store = Store(daemon.state / "store")
    try:
        store.create_job(job_id="0ld0ld00", name="old", site="demo", knobs={}, out=str(out), prompts=["queued long ago"],
                         max_workers=0, max_attempts=3, source="old.txt", profile=stored)
    finally:
        store.close()
    daemon.start()
    status = daemon.wait_job("0ld0ld00", timeout=60)
    task = daemon.call("tasks", {"job": "0ld0ld00"})["tasks"][0]
    assert (status["state"], task["attempts"], task["error_kind"]) == ("failed", 1, "permanent"), task
    assert "browser.args" in task["error"] and not marker.exists()
    worker = daemon.call("workers")["workers"][0]
    assert worker["restarts"] == 0 and worker["rotations"] == 0
    assert daemon.wait_job(daemon.submit(["a new job after it"]), timeout=60)["done"] == 1


def test_a_job_queued_under_a_looser_site_policy_never_reaches_its_host(make_daemon: Any,
                                                                        loopback_service: tuple[int, list[str]]) -> None:
    """A stored job whose start_url the site policy now refuses (a loopback service, as if queued under an older
    policy) fails each task at once, naming the key, and the service never sees a request; other jobs still run."""
    port, hits = loopback_service
    daemon = make_daemon(workers=1, start=False)
    stored = profiles.builtin("demo")
    stored["start_url"] = f"http://127.0.0.1:{port}/"
    out = daemon.work / "old-out"
    out.mkdir()
    from tabfleetd.store.store import Store

    store = Store(daemon.state / "store")
    try:
        store.create_job(job_id="1005e000", name="old", site="demo", knobs={}, out=str(out),
                         prompts=["queued long ago", "and another"], max_workers=0, max_attempts=3, source="old.txt",
                         profile=stored)
    finally:
        store.close()
    daemon.start()
    status = daemon.wait_job("1005e000", timeout=60)
    tasks = daemon.call("tasks", {"job": "1005e000"})["tasks"]
    assert (status["state"], status["failed"]) == ("failed", 2)
    for task in tasks:
        assert task["error_kind"] == "permanent", task
        assert "key 'start_url' host '127.0.0.1' is a loopback address" in task["error"]
    assert daemon.wait_job(daemon.submit(["a new job after it"]), timeout=60)["done"] == 1
    assert hits == []
