"""`tabfleetd --detach`: starts in the background, refuses a second start, stops with `tabfleetctl shutdown`."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import psutil
import pytest

from tabfleetd.service.exitcodes import EXIT_ALREADY_RUNNING, EXIT_CONFIG

pytestmark = pytest.mark.e2e


def detach(daemon: Any, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*daemon.argv(), "--detach", *extra], capture_output=True, text=True, timeout=120,
                          cwd=daemon.work, stdin=subprocess.DEVNULL, env=env)


def stop_if_running(pid: int) -> None:
    """Stop a detached daemon with SIGTERM if a failed check left it running, so teardown finds nothing."""
    try:
        proc = psutil.Process(pid)
        proc.terminate()
        proc.wait(60)
    except psutil.Error:
        pass


def test_detach_start_refuse_second_and_shutdown(make_daemon: Any, write_prompts: Any) -> None:
    """The command returns once the daemon answers; a second start is refused; shutdown --wait ends it and its browsers."""
    # A tiny log size, so the rotating log file rotates within the test.
    daemon = make_daemon(workers=1, start=False, config={"log_max_mb": 0.0003, "log_backups": 2, "log_level": "debug"})
    pidfile = daemon.root / "run" / "tabfleetd.pid"
    started = detach(daemon, "--pidfile", str(pidfile))
    assert started.returncode == 0, started.stderr
    pid = int(pidfile.read_text())
    try:
        assert f"pid {pid}" in started.stdout
        proc = psutil.Process(pid)
        assert proc.ppid() != os.getpid()  # double-forked away from the command
        assert os.getsid(pid) != os.getsid(0) and proc.terminal() is None  # own session, no terminal
        assert daemon.call("ping")["pid"] == pid

        again = detach(daemon, "--pidfile", str(daemon.root / "other.pid"))
        assert again.returncode == EXIT_ALREADY_RUNNING
        assert "already running" in again.stderr and str(pid) in again.stderr

        prompts = write_prompts(daemon.work / "p.txt", ["a paper boat"])
        done = daemon.ctl("submit", str(prompts), "--wait")
        assert done.returncode == 0, done.stdout + done.stderr

        stopped = daemon.ctl("shutdown", "--wait", check=True)
        assert f"(pid {pid}) has stopped" in stopped.stdout
    finally:
        stop_if_running(pid)
    assert not pidfile.exists()
    assert daemon.leftovers(wait=5) == []
    logs = sorted(p.name for p in (daemon.state / "logs").glob("tabfleetd.log*"))
    assert logs == ["tabfleetd.log", "tabfleetd.log.1", "tabfleetd.log.2"]  # rotated, only log_backups kept
    assert all((daemon.state / "logs" / name).stat().st_size <= 4096 for name in logs)
    assert "tabfleetd INFO tabfleetd.service.app: stopped" in (daemon.state / "logs" / "tabfleetd.log").read_text()


def test_detach_reports_a_failed_start_with_its_exit_code(make_daemon: Any) -> None:
    """A daemon that fails after detaching makes the command fail with the daemon's exit code and its log."""
    daemon = make_daemon(workers=1, start=False, config={"socket_group": "no-such-group-tabfleet"})
    result = detach(daemon)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "no-such-group-tabfleet" in result.stderr


def test_detach_is_refused_under_systemd(make_daemon: Any) -> None:
    """With NOTIFY_SOCKET set (a Type=notify unit) --detach would end the unit's main process, so it is refused."""
    daemon = make_daemon(workers=1, start=False)
    result = detach(daemon, env=os.environ | {"NOTIFY_SOCKET": "/run/systemd/notify"})
    assert result.returncode == EXIT_CONFIG
    assert "outside systemd" in result.stderr
    time.sleep(0.2)
    assert daemon.leftovers(wait=0) == []
