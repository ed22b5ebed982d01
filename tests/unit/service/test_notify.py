"""Unit tests for tabfleetd.service.notify: the environment, real datagram sockets, the status line and the watchdog loop."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tabfleetd.service.notify import Notifier, ServiceEnv, ServiceLink, status_line


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A bound datagram socket standing in for systemd's notification socket."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    yield str(path), sock
    sock.close()


def drain(sock: socket.socket) -> list[str]:
    sock.setblocking(False)
    out = []
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        return out
    finally:
        sock.settimeout(5)


def test_env_reads_socket_and_watchdog() -> None:
    """NOTIFY_SOCKET and WATCHDOG_USEC become the socket address and the watchdog period in seconds."""
    env = ServiceEnv.from_env({"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000"}, 42)
    assert env == ServiceEnv("/run/systemd/notify", 30.0)


def test_env_ignores_a_watchdog_meant_for_another_process() -> None:
    """WATCHDOG_PID naming another pid (an inherited environment) turns the watchdog off."""
    env = ServiceEnv.from_env({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "7"}, 42)
    assert env.watchdog_s is None
    assert ServiceEnv.from_env({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "42"}, 42).watchdog_s == 1.0


def test_env_without_systemd_is_empty() -> None:
    """Outside systemd nothing is set and junk values are ignored."""
    assert ServiceEnv.from_env({}, 1) == ServiceEnv(None, None)
    assert ServiceEnv.from_env({"WATCHDOG_USEC": "soon"}, 1).watchdog_s is None


def test_notifier_sends_lines_to_a_real_socket(listener: tuple[str, socket.socket]) -> None:
    """One send is one datagram of newline-separated KEY=VALUE fields."""
    path, sock = listener
    notifier = Notifier.connect(path)
    assert notifier.send("READY=1", "STATUS=ok")
    assert sock.recv(4096) == b"READY=1\nSTATUS=ok"
    notifier.close()


def test_notifier_reaches_the_abstract_namespace() -> None:
    """An address starting with '@' is an abstract socket, as systemd hands out."""
    name = f"tabfleet-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        assert Notifier.connect("@" + name).send("WATCHDOG=1")
        assert sock.recv(4096) == b"WATCHDOG=1"
    finally:
        sock.close()


def test_notifier_never_raises_when_nobody_listens(tmp_path: Path, listener: tuple[str, socket.socket]) -> None:
    """A missing socket or a listener that went away turns notifications off instead of failing the daemon."""
    assert not Notifier.connect(str(tmp_path / "absent.sock")).send("READY=1")
    assert not Notifier.connect(None).send("READY=1")
    path, sock = listener
    notifier = Notifier.connect(path)
    sock.close()
    Path(path).unlink()
    assert not notifier.send("STATUS=x")
    assert not notifier.enabled


def test_status_line_sums_jobs_and_workers() -> None:
    """The status line counts jobs by state, tasks by bucket and workers that are up."""
    jobs = [
        {"state": "active", "counts": {"done": 3, "failed": 1, "running": 2, "pending": 4, "cancelled": 0}},
        {"state": "paused", "counts": {"done": 1, "failed": 0, "running": 0, "pending": 5, "cancelled": 0}},
        {"state": "done", "counts": {"done": 10, "failed": 0, "running": 0, "pending": 0, "cancelled": 0}},
    ]
    line = status_line(jobs, ["idle", "busy", "starting"])
    assert line == "1 active job, 1 paused; tasks 14 done, 1 failed, 2 running, 9 pending; workers 2/3 up"
    assert "\n" not in line


def test_link_pings_only_while_the_probe_answers() -> None:
    """WATCHDOG=1 is sent while the health probe answers and held back while it fails; STATUS follows changes."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    healthy = True
    status = "a"

    async def probe() -> None:
        if not healthy:
            raise RuntimeError("store stuck")

    async def scenario() -> tuple[list[str], list[str]]:
        nonlocal healthy, status
        link = ServiceLink(Notifier(ours), watchdog_s=0.2, status_every_s=0.1)
        task = asyncio.create_task(link.run(lambda: status, probe))
        await asyncio.sleep(0.6)
        good = drain(theirs)
        healthy, status = False, "b"
        await asyncio.sleep(0.6)
        bad = drain(theirs)
        task.cancel()
        return good, bad

    good, bad = asyncio.run(scenario())
    ours.close()
    theirs.close()
    assert good.count("WATCHDOG=1") >= 3
    assert "STATUS=a" in good
    assert "WATCHDOG=1" not in bad
    assert bad == ["STATUS=b"]


def test_link_messages_for_ready_and_stopping() -> None:
    """READY carries the first status; STOPPING asks systemd for more stop time."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    link = ServiceLink(Notifier(ours))
    link.ready("starting")
    link.stopping(40)
    assert theirs.recv(4096) == b"READY=1\nSTATUS=starting"
    assert theirs.recv(4096) == b"STOPPING=1\nSTATUS=stopping\nEXTEND_TIMEOUT_USEC=40000000"
    ours.close()
    theirs.close()
