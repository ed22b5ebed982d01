"""The dashboard and metrics: only token holders read them, and no client can use up the daemon's descriptors."""

from __future__ import annotations

import http.client
import json
import os
import resource
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psutil
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture
def port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(port: int, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    """One GET, redirects not followed; the response is read whole."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


@contextmanager
def idle_connections(port: int, count: int) -> Iterator[None]:
    """Hold `count` TCP connections that send nothing (a second after opening them, for the daemon to take them in)."""
    idle = []
    try:
        for _ in range(count):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        time.sleep(1)
        yield
    finally:
        for sock in idle:
            sock.close()


def web_daemon(make_daemon: Any, short_tmp: Any, port: int, **config: Any) -> Any:
    os.chmod(short_tmp, 0o755)  # other users reach the group's socket
    daemon = make_daemon(workers=1, config={"dashboard_port": port, "metrics_port": port, "socket_group": "4242"} | config)
    daemon.wait_for(lambda: "dashboard at" in daemon.log_text(), 30, "the dashboard to listen")
    return daemon


def test_only_token_holders_read_the_dashboard_and_metrics(make_daemon: Any, short_tmp: Any, port: int, users: Any) -> None:
    """No token: 401; a wrong one: 403; Prometheus's bearer token and a one-time link's cookie get in; other users get nothing."""
    daemon = web_daemon(make_daemon, short_tmp, port)
    for path in ("/", "/api/state", "/metrics", "/dashboard.js", "/img/abc/1", "/no/such/page"):
        refused = request(port, path)
        assert refused.status == 401 and refused.getheader("WWW-Authenticate") == 'Bearer realm="tabfleet"', path
    assert request(port, "/metrics", {"Authorization": "Bearer not-the-token-at-all"}).status == 403
    assert request(port, "/api/state", {"Cookie": "tabfleet_session=forged"}).status == 403
    scraped = request(port, "/metrics", daemon.web_headers)
    assert scraped.status == 200 and scraped.getheader("Content-Type").startswith("text/plain")

    # A member of the socket group gets a one-time link; it sets an HttpOnly cookie that is not the token.
    link = daemon.ctl("dashboard", user=users.member(users.mallory), check=True).stdout.strip()
    path = link.removeprefix(f"http://127.0.0.1:{port}")
    signed_in = request(port, path)
    assert signed_in.status == 303 and signed_in.getheader("Location") == "/"
    cookie = signed_in.getheader("Set-Cookie")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    session = cookie.split(";")[0]
    token = daemon.web_headers["Authorization"].split()[1]
    assert token not in session
    assert request(port, "/api/state", {"Cookie": session}).status == 200
    assert request(port, path).status == 403, "a sign-in link works once"

    # Another local user cannot get a link, nor read the token from the state dir.
    outsider = users.prefix(users.alice)
    refused = daemon.ctl("dashboard", user=outsider)
    assert refused.returncode == 3 and "no permission" in refused.stderr
    peek = subprocess.run([*outsider, "cat", str(daemon.state / "web-token")], capture_output=True, text=True)
    assert peek.returncode != 0 and "Permission denied" in peek.stderr


def test_idle_http_connections_cannot_take_every_descriptor(make_daemon: Any, short_tmp: Any, port: int) -> None:
    """1100 idle connections against a 1024-descriptor daemon: at most web_max_connections stay; ping, submit and the dashboard work."""
    daemon = web_daemon(make_daemon, short_tmp, port)
    resource.prlimit(daemon.proc.pid, resource.RLIMIT_NOFILE, (1024, 1024))
    with idle_connections(port, 1100):
        fds = psutil.Process(daemon.proc.pid).num_fds()
        assert fds < 256 + 100, f"the daemon holds {fds} descriptors"
        assert daemon.ctl("ping", timeout=60).returncode == 0
        job = daemon.submit(["a paper boat"], "latency=0.2")
        assert daemon.wait_job(job, timeout=60)["done"] == 1
        assert request(port, "/api/state", daemon.web_headers).status == 200
    assert sum("closed the oldest" in line for line in daemon.log_text().splitlines()) <= 3


def test_accept_does_not_spin_when_descriptors_run_out(make_daemon: Any, short_tmp: Any, port: int) -> None:
    """With the cap above the descriptor limit, EMFILE sheds new connections without burning CPU or flooding the log."""
    daemon = web_daemon(make_daemon, short_tmp, port, web_max_connections=5000, web_idle_timeout_s=60.0)
    proc = psutil.Process(daemon.proc.pid)
    resource.prlimit(daemon.proc.pid, resource.RLIMIT_NOFILE, (300, 300))
    with idle_connections(port, 400):
        cpu = sum(proc.cpu_times()[:2])
        time.sleep(3)
        spent = sum(proc.cpu_times()[:2]) - cpu
        assert spent < 1.0, f"the daemon spent {spent:.2f} s of CPU in 3 s"
    assert sum("out of file descriptors" in line for line in daemon.log_text().splitlines()) <= 3
    deadline = time.monotonic() + 30
    while daemon.ctl("ping", timeout=60).returncode != 0:
        assert time.monotonic() < deadline, daemon.log_text()
        time.sleep(0.5)
    assert request(port, "/api/state", daemon.web_headers).status == 200


def test_silent_and_slow_http_clients_are_closed(make_daemon: Any, short_tmp: Any, port: int) -> None:
    """A connection that sends nothing, or half a request's headers, is closed after web_idle_timeout_s."""
    daemon = web_daemon(make_daemon, short_tmp, port, web_idle_timeout_s=2.0)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as silent, \
            socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
        slow.sendall(f"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())
        started = time.monotonic()
        assert silent.recv(1) == b"" and slow.recv(1) == b""
        assert time.monotonic() - started < 6
    assert json.loads(daemon.ctl("status", "--json", check=True).stdout)["jobs"] == []
