"""Attacks through output directories: a client (a second uid) plants symlinks and odd files where the daemon writes.

The client owns its --out directory, so everything in it may be a trap set for the daemon: a marker, a
manifest or an image name linked to one of the daemon's own files (here a stand-in for a Chromium cookie
database, readable by the daemon only). Each test plants the trap as uid 65534 with setpriv, runs a real
job through tabfleetctl, and checks that the daemon neither leaks, writes through nor serves the linked
file, while the rest of the job goes on.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tabfleetctl.client import DaemonError
from tabfleetd.files.outputs import MANIFEST, MARKER, output_name

NOBODY = 65534
SECRET = "session=c2VjcmV0LWNvb2tpZS12YWx1ZQ; the daemon's eyes only"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PORT = free_port()
DAEMON_WORKERS = 1
DAEMON_CONFIG = {"dashboard_port": PORT, "stagger_s": 0.0}

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(180),
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                       reason="planting files as a second uid needs root and setpriv"),
]


def as_client(*argv: str) -> None:
    """Run a command as uid/gid 65534: the less-trusted client who owns its output directory."""
    subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", *argv],
                   check=True, timeout=30)


@pytest.fixture(scope="module")
def area(module_daemon: Any) -> dict[str, Path]:
    """A directory the client may create its output directories in, and a secret file only the daemon may read."""
    os.chmod(module_daemon.root, 0o711)  # the client may pass through, not list
    clients = module_daemon.root / "clients"
    clients.mkdir(mode=0o1777, exist_ok=True)
    os.chmod(clients, 0o1777)
    secret = module_daemon.state / "Cookies"
    secret.write_text(SECRET)
    os.chmod(secret, 0o600)
    return {"clients": clients, "secret": secret}


def client_dir(area: dict[str, Path], name: str) -> Path:
    out = area["clients"] / name
    as_client("mkdir", str(out))
    return out


def submit(daemon: Any, prompts: list[str], out: Path, name: str) -> subprocess.CompletedProcess[str]:
    (daemon.work / f"{name}.txt").write_text("\n".join(prompts) + "\n")
    return daemon.ctl("submit", f"{name}.txt", "--out", str(out), "--knob", "latency=0.1", "--json")


def get(daemon: Any, path: str) -> tuple[int, bytes]:
    """GET from the dashboard with the daemon's access token (the attack here is the files, not the door)."""
    request = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", headers=daemon.web_headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def untouched(area: dict[str, Path], before: os.stat_result) -> bool:
    after = area["secret"].stat()
    return area["secret"].read_text() == SECRET and (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_a_marker_linked_to_a_secret_is_refused_without_leaking_it(module_daemon: Any, area: dict[str, Path]) -> None:
    """A .tabfleet-job symlinked to a daemon file: submit is refused, the message names the link, never the contents."""
    before = area["secret"].stat()
    out = client_dir(area, "marked")
    as_client("ln", "-s", str(area["secret"]), str(out / MARKER))
    refused = submit(module_daemon, ["a fox in snow"], out, "marked")
    assert refused.returncode == 4, refused
    assert f"{out / MARKER} is a symlink" in refused.stderr
    assert "c2VjcmV0" not in refused.stderr + refused.stdout and "eyes only" not in refused.stderr + refused.stdout
    assert untouched(area, before)
    # Normal use goes on: a clean directory of the same client works.
    job = json.loads(submit(module_daemon, ["a fox in snow"], client_dir(area, "clean"), "clean").stdout)["job"]
    assert module_daemon.wait_job(job)["done"] == 1


def test_a_manifest_linked_to_a_daemon_file_is_neither_truncated_nor_appended(module_daemon: Any, area: dict[str, Path]) -> None:
    """manifest.jsonl symlinked to a daemon file: the job completes, the file is unchanged, a real manifest replaces the link."""
    before = area["secret"].stat()
    out = client_dir(area, "manifest")
    as_client("ln", "-s", str(area["secret"]), str(out / MANIFEST))
    prompts = ["a lighthouse at dusk", "a heron at dawn", "a barn in fog"]
    result = submit(module_daemon, prompts, out, "manifest")
    assert result.returncode == 0, result.stderr
    status = module_daemon.wait_job(json.loads(result.stdout)["job"])
    assert status["state"] == "done" and status["done"] == 3
    assert untouched(area, before)
    manifest = out / MANIFEST
    assert not manifest.is_symlink() and manifest.is_file()
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert sorted(r["file"] for r in lines) == sorted(output_name(i, p) for i, p in enumerate(prompts, start=1))


def test_image_names_linked_to_a_cookie_file_are_not_adopted_nor_served(module_daemon: Any, area: dict[str, Path]) -> None:
    """A PNG name linked to the cookie file and one holding a FIFO fail their tasks; nothing links through to the dashboard."""
    before = area["secret"].stat()
    out = client_dir(area, "images")
    prompts = ["a red kite", "a blue whale", "a green frog"]
    names = [output_name(i, p) for i, p in enumerate(prompts, start=1)]
    as_client("ln", "-s", str(area["secret"]), str(out / names[0]))
    as_client("mkfifo", str(out / names[1]))
    result = submit(module_daemon, prompts, out, "images")
    job = json.loads(result.stdout)["job"]
    status = module_daemon.wait_job(job)
    assert (status["state"], status["done"], status["failed"]) == ("failed", 1, 2), status
    tasks = {t["index"]: t for t in module_daemon.call("tasks", {"job": job})["tasks"]}
    assert "is a symlink" in tasks[1]["error"] and "is not a regular file" in tasks[2]["error"]
    assert all("eyes only" not in (t["error"] or "") for t in tasks.values())
    assert untouched(area, before)
    assert get(module_daemon, f"/img/{job}/1")[0] == 404
    code, body = get(module_daemon, f"/img/{job}/3")
    assert code == 200 and body.startswith(b"\x89PNG")  # the real image is served
    # Later the client swaps the finished image for a link to the cookie file: the dashboard must not follow it.
    as_client("rm", str(out / names[2]))
    as_client("ln", "-s", str(area["secret"]), str(out / names[2]))
    code, body = get(module_daemon, f"/img/{job}/3")
    assert code == 404 and b"eyes only" not in body
    assert untouched(area, before)


def test_out_must_stay_inside_the_roots_and_out_of_the_state_dir(module_daemon: Any, area: dict[str, Path]) -> None:
    """--out in the state dir, outside the output roots, or through a planted symlink is refused; nothing is created."""
    (module_daemon.work / "one.txt").write_text("a quiet harbour\n")
    inside_state = module_daemon.ctl("submit", "one.txt", "--out", str(module_daemon.state / "profiles" / "x"))
    assert inside_state.returncode == 4 and "inside the daemon's own directory" in inside_state.stderr
    assert not (module_daemon.state / "profiles" / "x").exists()
    outside = module_daemon.ctl("submit", "one.txt", "--out", "/opt/tabfleet-attack")
    assert outside.returncode == 4 and "outside the output roots" in outside.stderr
    assert not Path("/opt/tabfleet-attack").exists()
    # A client that does not resolve paths itself sends one through its own symlink to the state dir.
    as_client("ln", "-s", str(module_daemon.state), str(area["clients"] / "to-state"))
    with pytest.raises(DaemonError, match="to-state is a symlink"):
        module_daemon.call("submit", {"filename": "one.txt", "data": b"a quiet harbour\n", "cwd": str(area["clients"]),
                                      "out": "to-state/planted"})
    assert not (module_daemon.state / "planted").exists()
    job = json.loads(module_daemon.ctl("submit", "one.txt", "--json", "--knob", "latency=0.1", check=True).stdout)["job"]
    assert module_daemon.wait_job(job)["done"] == 1  # the default, ./tabfleet-out/JOB, is inside a root
