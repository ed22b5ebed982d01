"""What a person sees in a terminal, read back from a real tmux screen: watch and status at 80 and 160 columns,
submit --wait and demo drawing watch's view, and Ctrl-C (exit 130) that says what became of the job."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180),
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")]

DAEMON_WORKERS = 2
DAEMON_CONFIG = {"stagger_s": 0.0}
JOB_LINE = re.compile(r"^job (\w+) \((.*)\) (\w+): (\d+)/(\d+) done, (\d+) failed, (\d+) running, (\d+) pending")


class Tmux:
    """One command in a detached tmux window of a fixed size, on a private tmux server."""

    def __init__(self, server: Path, argv: list[str], cwd: Path, columns: int, rows: int = 40,
                 env: dict[str, str] | None = None) -> None:
        self.server = server
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
        # The shell outlives Ctrl-C (a no-op trap; the command still gets SIGINT) to print the command's exit code.
        # COLUMNS and LINES (set in the test run's environment) would pin rich's width; a terminal's own is wanted.
        command = (f"trap : INT; cd {shlex.quote(str(cwd))} && env -u COLUMNS -u LINES {exports} "
                   f"{shlex.join(argv)}; printf '\\n[exit %d]' $?; sleep 600")
        self.tmux("-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", str(columns), "-y", str(rows), command)

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", str(self.server), *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t")

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.screen())
            if match:
                return match
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} never showed; the screen:\n{self.screen()}")

    def exit_code(self, timeout: float = 60) -> int:
        return int(self.wait_for(r"\[exit (\d+)\]", timeout)[1])

    def press(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)


@pytest.fixture
def terminal(short_tmp: Path) -> Iterator[Any]:
    """Open commands in tmux windows of a private tmux server, whose socket and processes go with the test."""
    server = short_tmp / "tmux.sock"

    def open_window(argv: list[str], cwd: Path, columns: int, rows: int = 40, env: dict[str, str] | None = None) -> Tmux:
        return Tmux(server, argv, cwd, columns, rows, env)

    yield open_window
    subprocess.run(["tmux", "-S", str(server), "kill-server"], capture_output=True, timeout=30)


def ctl(daemon: Any, *args: str) -> list[str]:
    return [sys.executable, "-m", "tabfleetctl", "--socket", str(daemon.socket), *args]


def fits(screen: str, columns: int) -> None:
    long = [line for line in screen.splitlines() if len(line.rstrip()) > columns]
    assert not long, long


@pytest.mark.parametrize("columns", [80, 160])
def test_watch_stays_readable_at_80_and_160_columns(module_daemon: Any, terminal: Any, columns: int) -> None:
    """watch's live view keeps the job's id and its numbers on screen, within the width; 160 columns add running and pending."""
    d = module_daemon
    (d.work / "l.txt").write_text("\n".join(f"a long prompt about a lighthouse on a cliff at dawn, number {i}" for i in range(12)))
    job = json.loads(d.ctl("submit", "l.txt", "--name", "lighthouses on cliffs at dawn", "--knob", "latency=0.6",
                           "--json", check=True).stdout)["job"]
    window = terminal(ctl(d, "watch", job, "--interval", "0.3"), d.work, columns)
    window.wait_for(r"\b(?:[1-9]|1[0-2])/12\b")
    screen = window.screen()
    fits(screen, columns)
    header = next(line for line in screen.splitlines() if line.startswith("job "))
    for column in ("state", "progress", "done", "failed", "rate/min", "eta"):
        assert column in header, (column, header)
    if columns >= 120:
        assert "running" in header and "pending" in header, header
    assert job in screen and "memory" in screen and "current prompt" in screen
    assert window.exit_code() == 0
    final = window.screen()
    fits(final, columns)
    assert f"job {job} done: 12 done, 0 failed of 12" in final


def test_status_draws_a_fitted_table_with_ellipsis_at_80_columns(module_daemon: Any, terminal: Any) -> None:
    """status at 80 columns cuts a long name with an ellipsis, keeps the numbers, and shows the cancelled count."""
    d = module_daemon
    (d.work / "n.txt").write_text("\n".join(f"a cancelled toad {i}" for i in range(6)) + "\n")
    name = "a very long job name that cannot possibly fit in eighty columns"
    job = json.loads(d.ctl("submit", "n.txt", "--name", name, "--knob", "latency=3", "--json", check=True).stdout)["job"]
    d.ctl("cancel", job, check=True)
    window = terminal(ctl(d, "status", job), d.work, 80)
    assert window.exit_code() == 0
    screen = window.screen()
    fits(screen, 80)
    row = next(line for line in screen.splitlines() if line.startswith(job))
    assert "…" in row and name not in row and "cancelled" in row
    status = d.call("status", {"job": job})["jobs"][0]
    assert re.search(rf"\b{status['done']}/6\b", row) and str(status["cancelled"]) in row.split()


def test_submit_wait_draws_watchs_view_and_ctrl_c_leaves_the_job_running(module_daemon: Any, terminal: Any) -> None:
    """submit --wait on a terminal draws the live view; Ctrl-C exits 130, says the job carries on, and it does."""
    d = module_daemon
    (d.work / "w.txt").write_text("\n".join(f"a waited-for heron {i}" for i in range(10)) + "\n")
    window = terminal(ctl(d, "submit", "w.txt", "--knob", "latency=0.8", "--wait"), d.work, 100)
    job = window.wait_for(r"job (\w+): 10 prompts queued")[1]
    window.wait_for(r"progress")
    assert "#" not in window.screen(), "no hand-drawn # bar: the same view as watch"
    window.press("C-c")
    assert window.exit_code(30) == 130
    assert f"stopped waiting; job {job} carries on" in window.screen()
    assert d.wait_job(job, timeout=60)["done"] == 10


def test_submit_wait_off_a_terminal_prints_plain_lines(module_daemon: Any) -> None:
    """Off a terminal, submit --wait prints watch's plain job lines on stderr, and the final counts."""
    d = module_daemon
    (d.work / "plain.txt").write_text("\n".join(f"a plain sparrow {i}" for i in range(4)) + "\n")
    result = d.ctl("submit", "plain.txt", "--knob", "latency=0.3", "--wait", check=True)
    lines = result.stderr.splitlines()
    progress = [m for m in map(JOB_LINE.match, lines) if m]
    assert progress and progress[-1].group(3) == "done" and progress[-1].group(4) == "4", result.stderr
    job = progress[-1].group(1)
    assert lines[-1] == f"job {job} done: 4 done, 0 failed of 4"
    assert "[" not in result.stderr.split("\n")[0], "no hand-drawn bar"


def test_demo_ctrl_c_cancels_its_job_and_stops_its_daemon(short_tmp: Path, terminal: Any, make_daemon: Any) -> None:
    """Ctrl-C in a demo that started its daemon: exit 130, the demo's job is cancelled (not left to finish later)."""
    home, work = short_tmp / "home", short_tmp / "work"
    home.mkdir()
    work.mkdir()
    sock = short_tmp / "demo.sock"
    env = {"HOME": str(home), "TABFLEET_SOCKET": str(sock)}
    window = terminal([sys.executable, "-m", "tabfleetctl", "demo", "--count", "40", "--latency", "1"], work, 120, env=env)
    job = window.wait_for(r"job (\w+): 40 sample prompts sent")[1]
    window.wait_for(r"[1-9]\d*/40")
    window.press("C-c")
    assert window.exit_code(90) == 130
    screen = window.screen()
    assert f"the demo's job {job} is cancelled" in screen and "has stopped" in screen, screen
    # The same state dir, opened again: the demo's job is cancelled, so no later run finishes its prompts.
    again = make_daemon(start=False, name="again")
    again.state = home / ".local" / "state" / "tabfleet"
    again.start()
    status = again.call("status", {"job": job})["jobs"][0]
    assert status["state"] == "cancelled" and status["done"] + status["cancelled"] == 40 and status["cancelled"] > 0
