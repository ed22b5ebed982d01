"""What the benchmark scripts share: a real tabfleetd in a temporary directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tabfleetctl.client import Client, DaemonError, DaemonNotRunning


class BenchDaemon:
    """A tabfleetd with real Chromium workers, its state and outputs in a temporary directory."""

    def __init__(self, workers: int, config: dict[str, Any] | None = None, prefix: str = "tf-bench-",
                 command: list[str] | None = None) -> None:
        self.command = command or [sys.executable, "-m", "tabfleetd"]  # or a benchmark's own entry point
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.socket = self.root / "s.sock"
        self.work = self.root / "work"
        self.work.mkdir()
        self.workers = workers
        self.config = self.root / "tabfleetd.toml"
        self.config.write_text("".join(f"{k} = {toml(v)}\n" for k, v in (config or {}).items()))
        self.log = open(self.root / "daemon.log", "ab")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_idle: bool = False) -> float:
        """Start the daemon; return the seconds until its socket answered."""
        started = time.monotonic()
        self.proc = subprocess.Popen([*self.command, "--socket", str(self.socket), "--state-dir",
                                      str(self.root / "state"), "--workers", str(self.workers), "--config",
                                      str(self.config), "--log-level", "warning"], stdout=self.log, stderr=self.log)
        while True:
            try:
                self.call("ping")
                break
            except (DaemonNotRunning, DaemonError):
                if self.proc.poll() is not None or time.monotonic() - started > 60:
                    raise SystemExit(f"tabfleetd did not start; see {self.root / 'daemon.log'}") from None
                time.sleep(0.05)
        answered = time.monotonic() - started
        while wait_idle and sum(w["state"] == "idle" for w in self.call("workers")["workers"]) < self.workers:
            time.sleep(0.1)
        return answered

    def call(self, op: str, args: dict[str, Any] | None = None) -> Any:
        with Client(self.socket, 120) as client:
            return client.call(op, args)

    def tasks(self, job: str) -> list[dict[str, Any]]:
        """Every task of the job, following the `tasks` op's pages."""
        found: list[dict[str, Any]] = []
        after: int | None = 0
        while after is not None:
            page = self.call("tasks", {"job": job, "after": after, "limit": 5000})
            found += page["tasks"]
            after = page["next"]
        return found

    def submit(self, prompts: list[str], **knobs: Any) -> str:
        return self.call("submit", {"filename": "bench.txt", "data": "\n".join(prompts).encode(), "cwd": str(self.work),
                                    "knobs": {k: str(v) for k, v in knobs.items()}})["job"]

    def wait(self, job: str, every: float = 0.05) -> dict[str, Any]:
        while True:
            status = self.call("status", {"job": job})["jobs"][0]
            if status["state"] in ("done", "failed", "cancelled"):
                return status
            time.sleep(every)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        try:
            self.call("shutdown")
            assert self.proc is not None
            self.proc.wait(60)
        except Exception:
            if self.proc is not None:
                self.proc.kill()
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)


def toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    return str(value)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]
