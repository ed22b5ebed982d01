"""Control-socket fairness: one socket client cannot lock the others out or fill the daemon's memory.

Each test is an attack by a member of the socket group, run as another uid
(setpriv), while a second member and root keep using the daemon.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from typing import Any

import psutil
import pytest

from tabfleetd import protocol

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

DAEMON_WORKERS = 1
DAEMON_CONFIG = {"socket_group": "4242", "stagger_s": 0.0}  # users.gid
HELLO = protocol.encode(protocol.request("hello", {"version": protocol.PROTOCOL_VERSION}, 1))

# Run as the attacker: open COUNT connections, say hello on each, then ping each every second for ROUNDS
# rounds, counting the connections the daemon closed with a busy frame; keep the rest open until stdin closes.
IDLE_HOGS = r"""
import json, socket, sys, time
from tabfleetd import protocol
path, count, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def reply(sock):
    try:
        header = sock.recv(4, socket.MSG_WAITALL)
        return protocol.decode(sock.recv(protocol.body_length(header), socket.MSG_WAITALL)) if len(header) == 4 else None
    except OSError:
        return None
def call(sock, op, msg_id):
    try:
        sock.sendall(protocol.encode(protocol.request(op, {"version": protocol.PROTOCOL_VERSION}, msg_id)))
    except OSError:
        pass
    return reply(sock)
conns, greeted, busy = [], 0, 0
for _ in range(count):
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(5)
    sock.connect(path)
    answer = call(sock, "hello", 1)
    greeted += bool(answer and answer["ok"])
    conns.append(sock)
for n in range(rounds):
    for sock in list(conns):
        answer = call(sock, "ping", 2 + n)
        if not (answer and answer["ok"]):
            busy += bool(answer and answer["error"]["code"] == 1205)
            conns.remove(sock)
            sock.close()
    time.sleep(1)
print(json.dumps({"greeted": greeted, "alive": len(conns), "busy": busy}), flush=True)
sys.stdin.read()
"""

# Run as the attacker: open COUNT connections that never say hello; report how many the daemon has closed
# after WAIT seconds.
SILENT_HOGS = r"""
import json, select, socket, sys, time
path, count, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
conns = []
for _ in range(count):
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    conns.append(sock)
print(json.dumps({"opened": len(conns)}), flush=True)
time.sleep(wait)
closed = 0
for sock in conns:
    readable, _, _ = select.select([sock], [], [], 0)
    closed += bool(readable)
print(json.dumps({"closed": closed}), flush=True)
sys.stdin.read()
"""

# Run as the attacker: open COUNT subscribe streams and keep them until stdin closes.
STREAMS = r"""
import socket, sys
from tabfleetd import protocol
path, count = sys.argv[1], int(sys.argv[2])
conns = []
for _ in range(count):
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    sock.sendall(protocol.encode(protocol.request("hello", {"version": protocol.PROTOCOL_VERSION}, 1))
                 + protocol.encode(protocol.request("subscribe", {"interval_s": 1.0}, 2)))
    conns.append(sock)
print("streaming", flush=True)
sys.stdin.read()
"""

# Run as the attacker: on COUNT connections, announce a SIZE-byte frame; where the daemon does not refuse it
# at once, send all of it but the last KiB and stall.  Reports how many were refused as busy.
BIG_FRAMES = r"""
import json, select, socket, struct, sys
from tabfleetd import protocol
path, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
chunk = b"\xa5" * (1 << 20)
conns, busy, sent = [], 0, 0
for _ in range(count):
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(30)
    sock.connect(path)
    sock.sendall(protocol.encode(protocol.request("hello", {"version": protocol.PROTOCOL_VERSION}, 1)))
    header = sock.recv(4, socket.MSG_WAITALL)
    sock.recv(protocol.body_length(header), socket.MSG_WAITALL)
    sock.sendall(struct.pack(">I", size))
    if select.select([sock], [], [], 0.5)[0]:
        header = sock.recv(4, socket.MSG_WAITALL)
        reply = protocol.decode(sock.recv(protocol.body_length(header), socket.MSG_WAITALL))
        busy += reply["error"]["code"] == 1205
        sock.close()
        continue
    left = size - 1024
    while left > 0:
        sock.sendall(chunk[:min(left, len(chunk))])
        left -= len(chunk)
    sent += 1
    conns.append(sock)
print(json.dumps({"busy": busy, "stalled": sent}), flush=True)
sys.stdin.read()
"""


@pytest.fixture(scope="module")
def shared(module_daemon: Any, users: Any) -> Any:
    """The module's daemon, its directory opened so that other users can reach the group's socket."""
    os.chmod(module_daemon.root, 0o755)
    return module_daemon


def attacker(daemon: Any, user: list[str], script: str, *args: Any) -> subprocess.Popen[str]:
    """Run a script of this module as another user (an OtherUsers prefix), on the daemon's socket."""
    return subprocess.Popen([*user, sys.executable, "-c", script, str(daemon.socket), *map(str, args)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def report(proc: subprocess.Popen[str]) -> dict[str, Any]:
    line = proc.stdout.readline()  # type: ignore[union-attr]
    assert line, f"the attacker ended early (exit {proc.poll()})"
    return json.loads(line)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.stdin.close()  # type: ignore[union-attr]
    proc.wait(30)


def alice_works(daemon: Any, users: Any) -> None:
    """Another group member's ping and status succeed."""
    member = users.member(users.alice)
    result = daemon.ctl("ping", user=member, timeout=60)
    assert result.returncode == 0 and "tabfleetd is up" in result.stdout, result.stderr
    assert daemon.ctl("status", user=member, timeout=60).returncode == 0


def log_lines(daemon: Any, words: str) -> int:
    return sum(words in line for line in daemon.log_text().splitlines())


def test_idle_connections_of_one_user_do_not_lock_others_out(shared: Any, users: Any) -> None:
    """64 greeted connections that keep pinging: the user keeps 32, the rest are told busy, and others work meanwhile."""
    hogs = attacker(shared, users.member(users.mallory), IDLE_HOGS, 64, 3)
    try:
        counts = report(hogs)
        assert counts["greeted"] == 64, counts  # each new one displaced the same user's oldest idle one
        assert counts["alive"] <= 32 and counts["busy"] >= 32, counts
        alice_works(shared, users)
        (shared.work / "p.txt").write_text("a quiet harbour\n")
        submitted = shared.ctl("submit", "p.txt", "--json", user=users.member(users.alice), timeout=60)
        assert submitted.returncode == 0, submitted.stderr
        assert shared.wait_job(json.loads(submitted.stdout)["job"], timeout=60)["done"] == 1
    finally:
        stop(hogs)
    assert log_lines(shared, "to make room") <= 3, "drops must be logged at a bounded rate"


def test_connections_that_never_say_hello(shared: Any, users: Any) -> None:
    """300 silent connections cost their owner its own older ones, are all closed after hello_timeout_s, and others work."""
    hogs = attacker(shared, users.member(users.mallory), SILENT_HOGS, 300, 7)
    try:
        assert report(hogs)["opened"] == 300
        alice_works(shared, users)
        assert report(hogs)["closed"] == 300
    finally:
        stop(hogs)
    with socket.socket(socket.AF_UNIX) as sock:  # before hello, a frame over 64 KiB is refused unread
        sock.connect(str(shared.socket))
        sock.sendall(protocol.HEADER.pack(protocol.HELLO_MAX_FRAME + 1))
        reply = protocol.decode(sock.recv(1024)[4:])
        assert reply["error"]["code"] == 1101 and "before hello" in reply["error"]["message"]
    alice_works(shared, users)


def test_big_trickled_frames_do_not_fill_memory(shared: Any, users: Any) -> None:
    """Two users each stalling 8 frames of 60 MiB: one each is read (128 MiB budget), the rest refused; RSS stays bounded."""
    daemon_proc = psutil.Process(shared.proc.pid)
    before = daemon_proc.memory_info().rss
    size = 60 << 20
    hogs = [attacker(shared, users.member(uid), BIG_FRAMES, 8, size) for uid in (users.mallory, users.trudy)]
    try:
        counts = [report(h) for h in hogs]
        assert [c["stalled"] for c in counts] == [1, 1] and [c["busy"] for c in counts] == [7, 7], counts
        grown = (daemon_proc.memory_info().rss - before) >> 20
        assert grown < 200, f"the daemon grew by {grown} MiB"
        alice_works(shared, users)
        # A big request of a third member still fits the budget: a 1 MiB prompt file (comments, and one prompt).
        (shared.work / "big.txt").write_text("# a comment line to make the request big\n" * 25_000 + "a lone kite\n")
        submitted = shared.ctl("submit", "big.txt", "--json", user=users.member(users.alice), timeout=60)
        assert submitted.returncode == 0, submitted.stderr
        assert json.loads(submitted.stdout)["tasks"] == 1
    finally:
        for h in hogs:
            stop(h)


def test_a_body_must_keep_arriving(shared: Any, users: Any) -> None:
    """A 4 MiB request sent at 128 KiB/s (under body_min_rate_kib_s) is dropped after about 5 + 4 s, not 30 s per read."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(shared.socket))
        sock.sendall(HELLO)
        sock.recv(1024)
        sock.sendall(protocol.HEADER.pack(4 << 20))
        started = time.monotonic()
        dropped = None
        while time.monotonic() - started < 20:
            try:
                sock.sendall(b"\x00" * (64 << 10))
            except OSError:
                dropped = time.monotonic() - started
                break
            if select.select([sock], [], [], 0.5)[0] and sock.recv(1) == b"":
                dropped = time.monotonic() - started
                break
    assert dropped is not None and 7 < dropped < 14, dropped
    assert log_lines(shared, "arrived slower than") >= 1
    alice_works(shared, users)


def test_when_all_is_busy_tabfleetctl_says_busy_not_stopped(make_daemon: Any, short_tmp: Any, users: Any) -> None:
    """With every unreserved connection streaming, a member's tabfleetctl retries, then says busy (exit 5); root still gets in."""
    os.chmod(short_tmp, 0o755)
    daemon = make_daemon(workers=1, config={"socket_group": str(users.gid), "max_connections": 6,
                                            "reserved_connections": 3})
    streams = attacker(daemon, users.member(users.mallory), STREAMS, 3)
    try:
        assert streams.stdout.readline().strip() == "streaming"  # type: ignore[union-attr]
        time.sleep(0.5)
        started = time.monotonic()
        refused = daemon.ctl("ping", user=users.member(users.alice), timeout=60)
        assert refused.returncode == 5, (refused.returncode, refused.stderr)
        assert "busy" in refused.stderr and "not running" not in refused.stderr
        assert time.monotonic() - started > 4, "tabfleetctl should retry for a few seconds first"
        assert daemon.ctl("ping").returncode == 0, "root's reserved connections"
    finally:
        stop(streams)
    time.sleep(0.5)
    assert daemon.ctl("ping", user=users.member(users.alice)).returncode == 0
