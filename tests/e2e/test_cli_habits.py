"""tabfleetctl as a script or a person uses it: --version, --json everywhere (errors too), exit codes that mean one
thing each, refused knob values, profile problems one per line, and checks that need no daemon."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tabfleetd import __version__
from tabfleetd.sites import profiles

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

DAEMON_WORKERS = 1
DAEMON_CONFIG = {"stagger_s": 0.0}


def ctl_alone(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """tabfleetctl with no daemon anywhere it looks."""
    return subprocess.run([sys.executable, "-m", "tabfleetctl", "--socket", str(cwd / "none.sock"), *args],
                          capture_output=True, text=True, timeout=60, cwd=cwd, env=env)


def json_error(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The one JSON error object tabfleetctl printed on stderr."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("{")]
    assert len(lines) == 1, result.stderr
    return json.loads(lines[0])["error"]


def test_version(tmp_path: Path) -> None:
    """`tabfleetctl --version` names the installed version and needs no daemon."""
    result = ctl_alone("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"tabfleetctl, version {__version__}"


def test_every_command_speaks_json(module_daemon: Any) -> None:
    """ping, pause/resume/cancel, workers set/restart, sites, sites show/check, status, shutdown's kin: each prints JSON."""
    d = module_daemon
    ping = json.loads(d.ctl("ping", "--json", check=True).stdout)
    assert ping["pong"] and ping["pid"] > 0 and ping["socket"] == str(d.socket) and "demo_url" in ping
    job = d.submit([f"a json moth {i}" for i in range(3)], "latency=0.5")
    for op, changed in (("pause", True), ("pause", False), ("resume", True), ("cancel", True), ("cancel", False)):
        result = json.loads(d.ctl(op, job, "--json", check=True).stdout)
        assert result["job"] == job and result["changed"] is changed, (op, result)
    assert json.loads(d.ctl("workers", "set", "1", "--json", check=True).stdout) == {"desired": 1, "target": 1}
    assert json.loads(d.ctl("workers", "restart", "1", "--json", check=True).stdout) == {"worker": 1, "restarting": True}
    assert json.loads(d.ctl("workers", "--json", check=True).stdout)["workers"][0]["id"] == 1
    assert {s["name"] for s in json.loads(d.ctl("sites", "--json", check=True).stdout)["sites"]} >= {"demo", "chatgpt"}
    assert json.loads(d.ctl("sites", "show", "demo", "--json", check=True).stdout)["text"] == profiles.builtin_text("demo")
    (d.work / "demo.toml").write_text(profiles.builtin_text("demo"))
    assert json.loads(d.ctl("sites", "check", "demo.toml", "--json", check=True).stdout) == {
        "file": "demo.toml", "ok": True, "name": "demo", "problems": [], "checked_by": "tabfleetctl and tabfleetd",
        "keys": []}
    status = json.loads(d.ctl("status", job, "--json", check=True).stdout)
    assert status["jobs"][0]["state"] == "cancelled"
    tasks = [json.loads(line) for line in d.ctl("tasks", job, "--json", check=True).stdout.splitlines()]
    assert len(tasks) == 3


def test_errors_as_json_carry_the_exit_code_and_the_daemon_code(module_daemon: Any) -> None:
    """With --json an error is one JSON object on stderr: the exit code, its kind, the daemon's numbered code."""
    d = module_daemon
    unknown = d.ctl("pause", "nosuchjob", "--json")
    assert unknown.returncode == 4 and unknown.stdout == ""
    assert json_error(unknown) == {"exit": 4, "kind": "refused", "code": 1301, "message": "no job 'nosuchjob'"}
    usage = d.ctl("workers", "set", "0", "--json")
    error = json_error(usage)
    assert usage.returncode == 2 and error["kind"] == "usage" and "0 is not in the range" in error["message"]
    human = d.ctl("pause", "nosuchjob")
    assert human.stderr.strip() == "tabfleetctl: error 1301: no job 'nosuchjob'"


def test_no_op_pause_resume_and_cancel_all_answer_alike(module_daemon: Any) -> None:
    """A request that cannot change the job (already paused, ended, done) exits 0 and says why: never an error."""
    d = module_daemon
    job = d.submit(["one quick owl"], "latency=0.1")
    assert d.wait_job(job)["state"] == "done"
    for op in ("pause", "resume", "cancel"):
        result = d.ctl(op, job)
        assert result.returncode == 0, (op, result.stderr)
        assert result.stdout.startswith(f"job {job} unchanged (done): "), (op, result.stdout)
    assert "every task is done already" in d.ctl("resume", job).stdout
    assert "the job has already ended (done)" in d.ctl("pause", job).stdout
    running = d.submit([f"a slow heron {i}" for i in range(4)], "latency=2")
    assert d.ctl("pause", running).stdout.startswith(f"job {running} paused")
    again = d.ctl("pause", running)
    assert again.returncode == 0 and "unchanged (paused): the job is paused already" in again.stdout
    d.ctl("cancel", running, check=True)


def test_local_file_errors_have_their_own_exit_code(module_daemon: Any, tmp_path: Path) -> None:
    """An export that cannot be written exits 7, not 1 (which means failed tasks); nothing half-written is left."""
    d = module_daemon
    job = d.submit(["an exported wren"], "latency=0.1")
    d.wait_job(job)
    result = d.ctl("export", job, "-o", "/nonexistent/dir/x.csv")
    assert result.returncode == 7 and "cannot write /nonexistent/dir/x.csv: No such file or directory" in result.stderr
    assert json_error(d.ctl("export", job, "-o", "/nonexistent/dir/x.csv", "--json"))["kind"] == "file"
    jsonl = [json.loads(line) for line in d.ctl("export", job, "--json", check=True).stdout.splitlines()]
    assert jsonl[0]["state"] == "done"


def test_bad_knob_values_are_refused(module_daemon: Any) -> None:
    """`--knob latency=abc` is refused at submit with the knob named, and nothing is queued."""
    d = module_daemon
    (d.work / "k.txt").write_text("a knobbly toad\n")
    before = len(d.call("status")["jobs"])
    for knob, words in (("latency=abc", "site knob latency='abc' must be a number"),
                        ("error_rate=2", "site knob error_rate='2' must be within 0..1"),
                        ("rate_limit=often", "site knob rate_limit='often' must be N/S")):
        result = d.ctl("submit", "k.txt", "--knob", knob)
        assert result.returncode == 4 and words in result.stderr, (knob, result.stderr)
    assert "unknown site knob 'latncy'" in d.ctl("submit", "k.txt", "--knob", "latncy=1").stderr
    assert len(d.call("status")["jobs"]) == before


def test_submit_with_a_bad_profile_lists_one_problem_per_line(tmp_path: Path) -> None:
    """submit --site bad.toml prints each problem on its own line, like sites check, before any daemon is asked."""
    text = profiles.builtin_text("demo").replace("count = 1", "count = 0").replace("[result]", "[result]\nselecter = 'x'")
    (tmp_path / "bad.toml").write_text(text)
    (tmp_path / "p.txt").write_text("a prompt\n")
    submit = ctl_alone("submit", "p.txt", "--site", "bad.toml", cwd=tmp_path)
    check = ctl_alone("sites", "check", "bad.toml", cwd=tmp_path)
    assert submit.returncode == 4 and check.returncode == 1  # refused; "has problems"
    problems = [line for line in check.stderr.splitlines() if line.startswith("bad.toml: ")]
    assert len(problems) >= 2 and all(line in submit.stderr.splitlines() for line in problems), submit.stderr
    assert "bad.toml: key 'result.count' must be at least 1, not 0" in problems
    error = json_error(ctl_alone("submit", "p.txt", "--site", "bad.toml", "--json", cwd=tmp_path))
    assert error["code"] == 1403 and len(error["problems"]) == len(problems)


def test_ping_names_the_demo_site_once_it_is_served(module_daemon: Any) -> None:
    """ping prints the demo site's address when the daemon serves one."""
    d = module_daemon
    d.wait_job(d.submit(["a pinged finch"], "latency=0.1"))
    lines = d.ctl("ping", check=True).stdout.splitlines()
    assert lines[0].startswith("tabfleetd is up (pid ") and str(d.socket) in lines[0]
    demo_url = d.call("ping")["demo_url"]
    assert demo_url and lines[1] == f"demo site: {demo_url}"


def test_ctrl_c_anywhere_exits_130(module_daemon: Any) -> None:
    """SIGINT while a command waits (reading a FIFO nobody writes, or events -f) exits 130, never 'Aborted!' and 1."""
    d = module_daemon
    os.mkfifo(d.work / "fifo.txt")
    for args in (["submit", "fifo.txt"], ["events", "-f"]):
        proc = subprocess.Popen([sys.executable, "-m", "tabfleetctl", "--socket", str(d.socket), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=d.work)
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 130 and "Aborted" not in err, (args, proc.returncode, err)
