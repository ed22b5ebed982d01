"""tabfleetctl watch and the subscribe stream, against a real daemon, real workers and the demo site."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tabfleetctl.client import Client
from tabfleetd import protocol

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


METRICS_PORT = free_port()
DAEMON_WORKERS = 2
# Fast retries so a poison prompt fails within a second; few connections so a leaked one shows.
DAEMON_CONFIG = {"retry_base_s": 0.1, "retry_cap_s": 0.2, "max_attempts": 2, "max_connections": 6,
                 "metrics_port": METRICS_PORT, "stagger_s": 0.0}
JOB_LINE = re.compile(r"^job (\w+) \((.*)\) (\w+): (\d+)/(\d+) done, (\d+) failed, (\d+) running, (\d+) pending")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def submit(daemon: Any, name: str, prompts: list[str], latency: float) -> str:
    (daemon.work / f"{name}.txt").write_text("\n".join(prompts) + "\n")
    result = daemon.ctl("submit", f"{name}.txt", "--knob", f"latency={latency}", "--json", check=True)
    return str(json.loads(result.stdout)["job"])


def ctl_argv(daemon: Any, *args: str) -> list[str]:
    return [sys.executable, "-m", "tabfleetctl", "--socket", str(daemon.socket), *args]


def metric(daemon: Any, name: str) -> float:
    request = urllib.request.Request(f"http://127.0.0.1:{METRICS_PORT}/metrics", headers=daemon.web_headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        families = text_string_to_metric_families(response.read().decode())
    return next(s.value for f in families for s in f.samples if s.name == name)


def test_watch_follows_a_batch_with_numbers_that_add_up(module_daemon: Any) -> None:
    """Plain watch over a batch with a poison prompt: counts always add up, only grow, and end matching status."""
    prompts = [f"a paper crane number {i}" for i in range(10)] + ["[[error]] a poison prompt"]
    job = submit(module_daemon, "cranes", prompts, 0.3)
    result = module_daemon.ctl("watch", job, "--interval", "0.5", timeout=90)
    assert result.returncode == 1, result.stderr  # the job ended with a failed task
    lines = result.stdout.splitlines()
    progress = [m for m in map(JOB_LINE.match, lines) if m]
    assert len(progress) >= 3, result.stdout
    last_done = 0
    for m in progress:
        assert m.group(1) == job and m.group(2) == "cranes"
        done, total, failed, running, pending = (int(m.group(i)) for i in (4, 5, 6, 7, 8))
        assert done + failed + running + pending == total == 11, m.group(0)
        assert done >= last_done
        last_done = done
    assert progress[-1].group(0) == f"job {job} (cranes) failed: 10/11 done, 1 failed, 0 running, 0 pending"
    assert any(f"job {job} #11 retry after attempt 1" in line and "Something went wrong" in line for line in lines)
    assert any(f"job {job} #11 FAILED after attempt 2" in line for line in lines)
    assert sum(f"job {job} #" in line and " done 000" in line for line in lines) <= 10
    assert lines[-1] == f"job {job} failed: 10 done, 1 failed of 11"
    status = module_daemon.call("status", {"job": job})["jobs"][0]
    assert (status["done"], status["failed"], status["state"]) == (10, 1, "failed")


def test_stream_pushes_snapshots_that_add_up_and_ends_with_the_job(module_daemon: Any) -> None:
    """The subscribe stream pushes frames on its own; each adds up; it closes after the frame showing the end."""
    job = submit(module_daemon, "stream", [f"a glass marble number {i}" for i in range(6)], 0.3)
    frames = []
    with Client(module_daemon.socket, 30) as client:
        for frame in client.stream("subscribe", {"job": job, "interval_s": 0.5}, idle_timeout=30):
            frames.append((time.monotonic(), frame))
    assert len(frames) >= 3
    for _, frame in frames:
        (view,) = frame["jobs"]
        assert view["done"] + view["failed"] + view["running"] + view["pending"] + view["cancelled"] == view["total"] == 6
        assert len(frame["workers"]) == 2 and frame["memory"]["total_mb"] > 0
    assert frames[-1][1]["jobs"][0]["state"] == "done" and frames[-1][1]["jobs"][0]["done"] == 6
    done_events = [e["index"] for _, f in frames for e in f["events"] if e["kind"] == "task_done"]
    assert len(done_events) == len(set(done_events))


def test_watch_draws_a_live_view_on_a_terminal(module_daemon: Any) -> None:
    """On a terminal, watch draws tables with rich and ends on the job's final numbers."""
    job = submit(module_daemon, "live", [f"a brass telescope number {i}" for i in range(6)], 0.3)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))
    proc = subprocess.Popen(ctl_argv(module_daemon, "watch", job, "--interval", "0.5"), stdin=slave, stdout=slave,
                            stderr=slave, cwd=module_daemon.work, env=os.environ | {"TERM": "xterm-256color"})
    os.close(slave)
    output = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif proc.poll() is not None:
                break
        assert proc.wait(10) == 0
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    screen = ANSI.sub("", output.decode(errors="replace"))
    assert "─" in screen and "workers" in screen and "current prompt" in screen
    assert "6/6" in screen and "100%" in screen and "memory" in screen
    assert f"job {job} done: 6 done, 0 failed of 6" in screen


def test_ctrl_c_stops_watching_and_leaves_the_job_running(module_daemon: Any) -> None:
    """SIGINT ends watch with 130 and a note; the job carries on to the end."""
    job = submit(module_daemon, "ctrlc", [f"a clay teapot number {i}" for i in range(8)], 0.4)
    proc = subprocess.Popen(ctl_argv(module_daemon, "watch", job), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=module_daemon.work)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert JOB_LINE.match(first), first
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert f"stopped watching; job {job} carries on" in err
    status = module_daemon.call("status", {"job": job})["jobs"][0]
    assert status["state"] == "active"
    assert module_daemon.wait_job(job, timeout=60)["done"] == 8


def test_subscriptions_survive_clients_that_leave_mid_stream(module_daemon: Any) -> None:
    """Clients that vanish mid-stream (after a frame, inside a frame, or after garbage) leave nothing behind."""
    job = submit(module_daemon, "leavers", [f"a felt mouse number {i}" for i in range(6)], 0.3)
    hello = protocol.encode(protocol.request("hello", {"version": protocol.PROTOCOL_VERSION}, 1))
    subscribe = protocol.encode(protocol.request("subscribe", {"job": None, "interval_s": 0.1}, 2))
    # Twice max_connections, one after the other: a connection or task that leaked would lock the next ones out.
    for i in range(12):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(str(module_daemon.socket))
        sock.sendall(hello + subscribe)
        received = b""
        want = 2000 if i % 3 else 10  # most leave after whole frames, some inside the first frame's header
        while len(received) < want:
            chunk = sock.recv(want - len(received))
            assert chunk, "the daemon closed the stream"
            received += chunk
        if i % 4 == 3:
            sock.sendall(b"\x00\x00\x00\x05junk")  # a protocol breach mid-stream ends only this stream
        sock.close()
    deadline = time.monotonic() + 10
    while (metric(module_daemon, "tabfleet_subscriptions"), metric(module_daemon, "tabfleet_control_connections")) != (0, 0):
        assert time.monotonic() < deadline, "subscriptions or connections were left open"
        time.sleep(0.1)
    with Client(module_daemon.socket, 30) as client:
        frames = client.stream("subscribe", {"job": job, "interval_s": 0.2}, idle_timeout=30)
        assert next(frames)["jobs"][0]["id"] == job
    assert module_daemon.wait_job(job, timeout=60)["done"] == 6
    assert "Traceback" not in module_daemon.log_text()
