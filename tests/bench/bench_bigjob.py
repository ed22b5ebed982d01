"""Big-job benchmark: one job of a million prompts against the store, the control socket and the daemon's memory.

Run: .venv/bin/python tests/bench/bench_bigjob.py [--prompts N]   (default 1,000,000; 200,000 for a quick look)

One real tabfleetd with one worker (the demo site at 60 s per image, so the job stays queued). While each step
runs, another connection calls `status` every 50 ms. Figures per step:
  * how long it took;
  * status latency meanwhile (median, p99, max): a step that holds the store thread or the event loop shows here,
    and so would a gap in the watchdog's ping;
  * the daemon's RSS at the end of the step and its peak during it.
Steps: submit (parse and queue every prompt), tasks (page through every task, as `tabfleetctl tasks` does),
export (the whole stream), cancel (until every queued task is cancelled).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any

import psutil
from benchlib import BenchDaemon, pct

from tabfleetctl.client import Client


class Watcher(threading.Thread):
    """Calls status every 50 ms on its own connection and samples the daemon's RSS."""

    def __init__(self, daemon: BenchDaemon) -> None:
        super().__init__(daemon=True)
        self.socket = daemon.socket
        assert daemon.proc is not None
        self.proc = psutil.Process(daemon.proc.pid)
        self.latencies: list[float] = []
        self.peak_rss = 0
        self.running = True

    def run(self) -> None:
        with Client(self.socket, 300) as client:
            while self.running:
                started = time.monotonic()
                client.call("status")
                self.latencies.append(time.monotonic() - started)
                self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)
                time.sleep(0.05)

    def stop(self) -> None:
        self.running = False
        self.join()


def step(daemon: BenchDaemon, name: str, action: Any) -> tuple[Any, dict[str, Any]]:
    watcher = Watcher(daemon)
    watcher.start()
    started = time.monotonic()
    try:
        result = action()
    finally:
        wall = time.monotonic() - started
        watcher.stop()
    lat = watcher.latencies or [0.0]
    assert daemon.proc is not None
    rss = psutil.Process(daemon.proc.pid).memory_info().rss
    figures = {"step": name, "s": wall, "status_ms": (1000 * statistics.median(lat), 1000 * pct(lat, 0.99), 1000 * max(lat)),
               "calls": len(watcher.latencies), "rss_mb": rss / 2**20, "peak_rss_mb": max(watcher.peak_rss, rss) / 2**20}
    print(f"{name:8} {wall:7.1f} s   status ms median {figures['status_ms'][0]:6.1f}  p99 {figures['status_ms'][1]:7.1f}  "
          f"max {figures['status_ms'][2]:7.1f} ({figures['calls']} calls)   RSS {figures['rss_mb']:6.0f} MiB "
          f"(peak {figures['peak_rss_mb']:.0f})", flush=True)
    return result, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=1_000_000)
    args = parser.parse_args()
    daemon = BenchDaemon(1, {"stagger_s": 0.0, "max_tasks_per_job": 0, "max_queued_tasks": 0})
    daemon.start(wait_idle=True)
    try:
        assert daemon.proc is not None
        print(f"{args.prompts} prompts; daemon RSS at start {psutil.Process(daemon.proc.pid).memory_info().rss / 2**20:.0f} MiB")
        data = "\n".join(f"a lighthouse at dusk, study number {i}" for i in range(args.prompts)).encode()

        def submit() -> str:
            with Client(daemon.socket, 600) as client:
                return str(client.call("submit", {"filename": "big.txt", "data": data, "cwd": str(daemon.work),
                                                  "knobs": {"latency": "60"}})["job"])

        job, _ = step(daemon, "submit", submit)
        count, _ = step(daemon, "tasks", lambda: len(daemon.tasks(job)))
        assert count == args.prompts, count

        def export() -> int:
            with Client(daemon.socket, 600) as client:
                return sum(len(page["tasks"]) for page in client.stream("export", {"job": job}))

        exported, _ = step(daemon, "export", export)
        assert exported == args.prompts, exported

        def cancel() -> dict[str, Any]:
            with Client(daemon.socket, 600) as client:
                client.call("cancel", {"job": job})
                return dict(client.call("status", {"job": job})["jobs"][0])

        status, _ = step(daemon, "cancel", cancel)
        assert status["pending"] == 0 and status["cancelled"] >= args.prompts - 1, status
    finally:
        daemon.close()


if __name__ == "__main__":
    main()
