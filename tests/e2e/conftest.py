"""Fixtures that run the real tabfleetd and tabfleetctl as separate processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tabfleetctl.client import Client, DaemonNotRunning


class OtherUsers:
    """Other local users for attack tests, by uid: nobody (65534) and the uids just below it."""

    mallory, alice, trudy = 65534, 65533, 65532
    gid = 4242  # a socket_group with no /etc/group entry: membership can only come from the peer's real groups

    @staticmethod
    def prefix(uid: int, *groups: int) -> list[str]:
        """A command prefix that runs the rest as `uid` (its gid too) with exactly `groups` (setpriv)."""
        return ["setpriv", f"--reuid={uid}", f"--regid={uid}",
                f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups", "--"]

    def member(self, uid: int) -> list[str]:
        """`uid` as a member of the socket group."""
        return self.prefix(uid, self.gid)


@pytest.fixture(scope="session")
def users() -> OtherUsers:
    """Acting as other local users; skipped (saying why) where the tests cannot switch uid."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("acting as a second local user needs root and setpriv")
    return OtherUsers()


def processes_using(path: Path) -> list[psutil.Process]:
    """Live processes whose command line names a path under `path` (zombies excluded)."""
    found = []
    mark = str(path)
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and any(mark in a for a in proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def toml_value(value: Any) -> str:
    """A config value as TOML: booleans, numbers, strings, lists and (inline) tables, e.g. [[workers]] as a list of dicts."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, str) else repr(value)


class Daemon:
    """A tabfleetd started for one test, with helpers to drive it through tabfleetctl."""

    def __init__(self, root: Path, workers: int = 2, config: dict[str, Any] | None = None) -> None:
        self.root = root
        self.socket = root / "s.sock"
        self.state = root / "state"
        self.work = root / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.log = root / "daemon.log"
        self.workers = workers
        self.config_path = root / "tabfleetd.toml"
        # Workers start together in tests (the 2 s production stagger has a test of its own).
        config = {"stagger_s": 0.0} | (config or {})
        lines = [f"{k} = {toml_value(v)}" for k, v in config.items()]
        self.config_path.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "tabfleetd", "--socket", str(self.socket), "--state-dir", str(self.state),
                "--workers", str(self.workers), "--config", str(self.config_path)]

    def start(self, timeout: float = 60) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"tabfleetd exited with {self.proc.returncode}:\n{self.log_text()}"
            try:
                with Client(self.socket, 5) as client:
                    client.call("ping")
                return
            except DaemonNotRunning:
                time.sleep(0.1)
        raise AssertionError(f"tabfleetd did not answer within {timeout} s:\n{self.log_text()}")

    @property
    def web_headers(self) -> dict[str, str]:
        """The Authorization header the dashboard and metrics require (the token the daemon made in its state dir)."""
        return {"Authorization": "Bearer " + (self.state / "web-token").read_text().strip()}

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]

    def call(self, op: str, args: dict[str, Any] | None = None) -> Any:
        with Client(self.socket, 30) as client:
            return client.call(op, args)

    def ctl(self, *args: str, timeout: float = 120, check: bool = False,
            user: list[str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run tabfleetctl on this daemon's socket (as another user with `user`, an OtherUsers prefix)."""
        result = subprocess.run([*(user or []), sys.executable, "-m", "tabfleetctl", "--socket", str(self.socket), *args],
                                capture_output=True, text=True, timeout=timeout, cwd=self.work)
        if check:
            assert result.returncode == 0, f"tabfleetctl {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
        return result

    def submit(self, prompts: list[str], *knobs: str) -> str:
        """Submit prompts (with KEY=VALUE site knobs) through tabfleetctl; return the job id."""
        (self.work / "p.txt").write_text("\n".join(prompts) + "\n")
        args = ["submit", "p.txt", "--json"] + [a for k in knobs for a in ("--knob", k)]
        return json.loads(self.ctl(*args, check=True).stdout)["job"]

    def wait_for(self, predicate: Any, timeout: float, what: str) -> Any:
        """Poll until predicate() is truthy and return it; fail with the daemon's log after `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log_text()}")

    def wait_job(self, job: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.call("status", {"job": job})["jobs"][0]
            if status["state"] in ("done", "failed", "cancelled"):
                return status
            time.sleep(0.2)
        raise AssertionError(f"job {job} did not end within {timeout} s:\n{self.log_text()}")

    def wait_workers_idle(self, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            workers = self.call("workers")["workers"]
            if sum(w["state"] == "idle" for w in workers) >= count:
                return workers
            time.sleep(0.1)
        raise AssertionError(f"{count} workers were not idle within {timeout} s:\n{self.log_text()}")

    def stop(self, timeout: float = 60) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"tabfleetd did not stop within {timeout} s:\n{self.log_text()}") from None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def leftovers(self, wait: float = 10) -> list[psutil.Process]:
        """Processes still using this daemon's state dir after `wait` seconds."""
        deadline = time.monotonic() + wait
        while True:
            left = processes_using(self.state)
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.2)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temporary directory (Unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="tf-"))
    try:
        yield path
    finally:
        for proc in processes_using(path):
            try:
                proc.kill()
            except psutil.Error:
                pass
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_daemon(short_tmp: Path) -> Iterator[Any]:
    """Start real daemons in a private directory; on teardown stop them and check nothing is left."""
    started: list[Daemon] = []

    def make(workers: int = 2, config: dict[str, Any] | None = None, start: bool = True, name: str = "d") -> Daemon:
        daemon = Daemon(short_tmp / name, workers, config)
        started.append(daemon)
        if start:
            daemon.start()
        return daemon

    yield make
    for daemon in started:
        daemon.stop()
    for daemon in started:
        left = daemon.leftovers()
        assert not left, f"processes outlived tabfleetd: {[p.pid for p in left]}"


@pytest.fixture
def daemon(make_daemon: Any) -> Daemon:
    """One running daemon with two workers."""
    return make_daemon()


def prompts_file(path: Path, prompts: list[str]) -> Path:
    path.write_text("\n".join(prompts) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def write_prompts() -> Any:
    return prompts_file




@pytest.fixture(scope="module")
def module_daemon(request: pytest.FixtureRequest) -> Iterator[Daemon]:
    """One daemon shared by a whole module, configured by the module's DAEMON_CONFIG and DAEMON_WORKERS."""
    root = Path(tempfile.mkdtemp(prefix="tf-m-"))
    daemon = Daemon(root, getattr(request.module, "DAEMON_WORKERS", 1), getattr(request.module, "DAEMON_CONFIG", None))
    try:
        daemon.start()
        yield daemon
        daemon.stop()
        left = daemon.leftovers()
        assert not left, f"processes outlived tabfleetd: {[p.pid for p in left]}"
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)
