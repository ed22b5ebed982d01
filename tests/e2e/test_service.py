"""The daemon as a service: sd_notify on a real datagram socket, and pruning of finished jobs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e


def start_with_env(daemon: Any, env: dict[str, str]) -> None:
    """Start the fixture's daemon process with extra environment, as systemd would."""
    with open(daemon.log, "ab") as log:
        daemon.proc = subprocess.Popen(daemon.argv(), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                       env=os.environ | env)


def receive(sock: socket.socket, until: str, timeout: float = 30) -> list[str]:
    """Collect notification fields until a message carrying `until` arrives."""
    fields: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            message = sock.recv(4096).decode()
        except socket.timeout:
            break
        fields.extend(message.splitlines())
        if until in message:
            return fields
    raise AssertionError(f"no {until} within {timeout} s; got {fields}")


def test_notify_socket_gets_ready_status_watchdog_stopping(make_daemon: Any, short_tmp: Path) -> None:
    """A real NOTIFY_SOCKET receives READY (once the socket answers), STATUS, WATCHDOG pings and STOPPING, in order."""
    daemon = make_daemon(workers=1, start=False)
    path = short_tmp / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        start_with_env(daemon, {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000"})
        first = receive(sock, "READY=1")
        assert daemon.call("ping")["pong"]  # READY means the control socket answers now
        running = receive(sock, "workers 1/1 up")
        pings = receive(sock, "WATCHDOG=1") + receive(sock, "WATCHDOG=1")
        daemon.proc.send_signal(signal.SIGTERM)
        last = receive(sock, "STOPPING=1")
        assert daemon.proc.wait(60) == 0
    finally:
        sock.close()
    fields = first + running + pings + last
    kinds = [f.partition("=")[0] for f in fields]
    assert kinds[0] == "READY"
    assert kinds.index("STATUS") < kinds.index("WATCHDOG") < kinds.index("STOPPING")
    assert kinds.count("WATCHDOG") >= 2
    assert "STOPPING" not in kinds[:-3]
    status = [f for f in fields if f.startswith("STATUS=") and "workers" in f]
    assert status and all(";" in s for s in status)
    assert any(f.startswith("EXTEND_TIMEOUT_USEC=") for f in last)


def test_watchdog_meant_for_another_pid_is_not_fed(make_daemon: Any, short_tmp: Path) -> None:
    """With WATCHDOG_PID naming another process the daemon sends READY and STATUS but never WATCHDOG=1."""
    daemon = make_daemon(workers=1, start=False)
    path = short_tmp / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        start_with_env(daemon, {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"})
        fields = receive(sock, "READY=1") + receive(sock, "workers 1/1 up")
        time.sleep(1.0)
        daemon.stop()
        fields += receive(sock, "STOPPING=1")
    finally:
        sock.close()
    assert "WATCHDOG=1" not in fields


def test_finished_jobs_are_pruned_after_retention(make_daemon: Any, write_prompts: Any) -> None:
    """A finished job leaves the store after job_retention_h; its images stay on disk."""
    daemon = make_daemon(workers=1, config={"job_retention_h": 0.0005, "housekeeping_interval_s": 0.5})
    prompts = write_prompts(daemon.work / "p.txt", ["a quiet lake", "a loud city"])
    job = daemon.call("submit", {"filename": "p.txt", "data": prompts.read_bytes(), "cwd": str(daemon.work),
                                 "knobs": {"latency": "0.1"}})["job"]
    assert daemon.wait_job(job)["state"] == "done"
    out = Path(daemon.call("status", {"job": job})["jobs"][0]["out"])
    deadline = time.monotonic() + 30
    while any(j["id"] == job for j in daemon.call("status")["jobs"]):
        assert time.monotonic() < deadline, f"job {job} was not pruned:\n{daemon.log_text()}"
        time.sleep(0.3)
    assert daemon.ctl("tasks", job).returncode == 4
    assert sorted(p.name for p in out.glob("*.png")) == ["00001-a-quiet-lake.png", "00002-a-loud-city.png"]
    assert "pruned 1 finished jobs" in daemon.log_text()
