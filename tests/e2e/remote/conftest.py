"""A remote browser for the tests: a real Chromium the test starts itself, outside the daemon's process tree.

Where the tests run as root and `ip netns` works, the browser lives in a network namespace of its own, joined
to the host by a veth pair, as a browser in a container or on another machine would be: the daemon reaches
it only through its address on the pair, and the browser reaches the demo site only through the host's.
Elsewhere it runs on loopback.  Either way Chromium's DevTools port listens on its own loopback only, and a
gateway (cdp_gateway.py) in front of it admits a token, as a browser service does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

GATEWAY = Path(__file__).with_name("cdp_gateway.py")
TOKEN = "tf-remote-7c1d9e0b5a"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return str(shutil.which(name))
    pytest.skip("no Chromium on PATH; the README's test command installs it")


class RemoteChromium:
    """One Chromium with a DevTools endpoint behind a token, in its own network namespace where it can be."""

    token = TOKEN

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tf-remote-"))
        self.netns: str | None = None
        self.chromium: subprocess.Popen[bytes] | None = None
        self.gateway: subprocess.Popen[bytes] | None = None
        self.host_ip = self.browser_ip = "127.0.0.1"
        self.devtools_port, self.port = 9222, 9223
        self.setup_network()

    def setup_network(self) -> None:
        """A namespace and a veth pair (10.213.N.0/30) when root and `ip` allow it; loopback ports otherwise."""
        pid = os.getpid()
        name, host_if, ns_if = f"tfr{pid}", f"tfh{pid % 100000}", f"tfb{pid % 100000}"
        subnet = f"10.213.{pid % 250 + 1}"
        steps = [["ip", "netns", "add", name],
                 ["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", name],
                 ["ip", "addr", "add", f"{subnet}.1/30", "dev", host_if], ["ip", "link", "set", host_if, "up"],
                 ["ip", "netns", "exec", name, "ip", "addr", "add", f"{subnet}.2/30", "dev", ns_if],
                 ["ip", "netns", "exec", name, "ip", "link", "set", ns_if, "up"],
                 ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"]]
        if os.geteuid() != 0 or shutil.which("ip") is None:
            self.loopback()
            return
        for step in steps:
            if subprocess.run(step, capture_output=True).returncode != 0:
                self.teardown_network(name, host_if)
                self.loopback()
                return
        self.netns, self.host_if = name, host_if
        self.host_ip, self.browser_ip = f"{subnet}.1", f"{subnet}.2"

    def loopback(self) -> None:
        self.devtools_port, self.port = free_port(), free_port()

    @staticmethod
    def teardown_network(name: str, host_if: str) -> None:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)

    def inside(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else argv

    def start(self) -> None:
        """Start Chromium (and the gateway, the first time) and wait until the endpoint answers."""
        if self.gateway is None:
            self.gateway = subprocess.Popen(self.inside([sys.executable, str(GATEWAY), self.browser_ip, str(self.port),
                                                         str(self.devtools_port), TOKEN]),
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        argv = [chromium_path(), "--headless=new", "--no-sandbox", "--no-first-run", "--disable-gpu",
                f"--remote-debugging-port={self.devtools_port}", f"--user-data-dir={self.root / 'profile'}", "about:blank"]
        log = open(self.root / "chromium.log", "ab")
        self.chromium = subprocess.Popen(self.inside(argv), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.get("/json/version")
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
        raise AssertionError(f"the remote Chromium did not answer:\n{(self.root / 'chromium.log').read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the whole browser, as a crashed container or host would vanish."""
        assert self.chromium is not None
        try:
            os.killpg(self.chromium.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.chromium.wait(10)
        deadline = time.monotonic() + 10
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.1)

    def url(self, with_token: bool = True) -> str:
        return f"http://{self.browser_ip}:{self.port}/" + (f"?token={TOKEN}" if with_token else "")

    def get(self, path: str) -> Any:
        request = urllib.request.Request(f"http://{self.browser_ip}:{self.port}{path}",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def pages(self) -> list[dict[str, Any]]:
        """The page targets the browser has open (in every browser context)."""
        return [t for t in self.get("/json/list") if t.get("type") == "page"]

    def processes(self) -> list[psutil.Process]:
        mark = str(self.root / "profile")
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            if any(mark in a for a in proc.info["cmdline"] or []):
                found.append(proc)
        return found

    def busy_renderers(self, seconds: float = 2.0) -> list[int]:
        """Renderer processes that burned more than half a core over `seconds`."""
        renderers = [p for p in self.processes() if "--type=renderer" in (p.cmdline() or [])]
        before = {}
        for proc in renderers:
            try:
                before[proc.pid] = sum(proc.cpu_times()[:2])
            except psutil.Error:
                pass
        time.sleep(seconds)
        busy = []
        for proc in renderers:
            try:
                if sum(proc.cpu_times()[:2]) - before.get(proc.pid, 0.0) > 0.5 * seconds:
                    busy.append(proc.pid)
            except psutil.Error:
                pass
        return busy

    def close(self) -> None:
        for proc in (self.chromium, self.gateway):
            if proc is not None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(10)
        for proc in self.processes():
            proc.kill()
        if self.netns:
            self.teardown_network(self.netns, self.host_if)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def remote() -> Iterator[RemoteChromium]:
    """A running remote Chromium behind a token gateway; removed, with its namespace, afterwards."""
    browser = RemoteChromium()
    try:
        browser.start()
        yield browser
    finally:
        browser.close()
