"""Coordinator benchmark: what one tabfleetd sustains when its workers cost nothing.

Run: .venv/bin/python tests/bench/bench_coordinator.py [--workers 300] [--tasks 30000] [--out-root DIR]

The daemon runs with the benchmark-only instant worker (instant_worker.py, through coordinator_daemon.py): real
worker processes that speak the worker protocol and heartbeat every second, but answer each task at once with a
ready image they write as a worker does.  Everything else is the real daemon: dispatch, two synced LMDB write
transactions per task, the manifest line, events, the control socket.  Figures, in the steady state (10 % to
90 % of the job done):
  * the daemon's CPU while the fleet only heartbeats (idle);
  * tasks per second the daemon sustains (and so accounts it could serve at one image a minute each);
  * its CPU (share of one core) and RSS;
  * the store's synced write transactions per second, and bytes the daemon wrote per second;
  * `status` latency (p50, p95, max), asked twice a second meanwhile.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
from benchlib import BenchDaemon, pct

HERE = Path(__file__).resolve().parent
IDLE_S = 5.0


def commits(metrics_url: str, headers: dict[str, str]) -> float:
    text = urllib.request.urlopen(urllib.request.Request(metrics_url, headers=headers), timeout=30).read().decode()
    line = next(line for line in text.splitlines() if line.startswith("tabfleet_store_write_transactions_total"))
    return float(line.split()[-1])


def io_written(pid: int) -> int:
    return int(psutil.Process(pid).io_counters().write_bytes)


def run(workers: int, tasks: int, out_root: Path) -> dict[str, Any]:
    probe = Path(tempfile.mkstemp(prefix="tf-bench-mem-")[1])
    probe.write_text("1000 1000000\n")  # the memory governor sees plenty: the fleet's size is the benchmark's
    port = free_port()
    daemon = BenchDaemon(workers, {"stagger_s": 0.0, "memory_probe": f"file:{probe}", "metrics_port": port,
                                   "output_roots": [str(out_root)]},
                         prefix="tf-bench-coord-", command=[sys.executable, str(HERE / "coordinator_daemon.py")])
    try:
        started = time.monotonic()
        daemon.start(wait_idle=True)
        ready_s = time.monotonic() - started
        pid = daemon.call("ping")["pid"]
        proc = psutil.Process(pid)
        headers = {"Authorization": "Bearer " + (daemon.root / "state" / "web-token").read_text().strip()}
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        idle_cpu = proc.cpu_percent(None)
        time.sleep(IDLE_S)  # the fleet only heartbeats: what the workers cost the daemon by being there
        idle_cpu = proc.cpu_percent(None) / 100
        out = out_root / "bench-coordinator"
        job = daemon.call("submit", {"filename": "bench.txt", "data": "\n".join(f"task {i}" for i in range(tasks)).encode(),
                                     "cwd": str(out_root), "out": str(out)})["job"]
        latencies: list[float] = []
        samples: list[tuple[float, int, float, float, int]] = []  # time, done, cpu s, commits, bytes written
        stop = threading.Event()

        def ask_status() -> None:
            while not stop.is_set():
                t0 = time.monotonic()
                daemon.call("status")
                latencies.append(time.monotonic() - t0)
                stop.wait(0.5)

        asker = threading.Thread(target=ask_status, daemon=True)
        asker.start()
        while True:
            status = daemon.call("status", {"job": job})["jobs"][0]
            times = proc.cpu_times()
            samples.append((time.monotonic(), status["done"], times.user + times.system, commits(metrics_url, headers),
                            io_written(pid)))
            if status["state"] in ("done", "failed", "cancelled"):
                break
            time.sleep(0.5)
        stop.set()
        asker.join(5)
        rss_mb = proc.memory_info().rss / 2**20
    finally:
        daemon.close()
        probe.unlink(missing_ok=True)
    low = next(s for s in samples if s[1] >= 0.1 * tasks)
    high = next(s for s in samples if s[1] >= 0.9 * tasks)
    span = max(1e-6, high[0] - low[0])
    return {"workers": workers, "tasks": tasks, "state": status["state"], "done": status["done"],
            "fleet_ready_s": round(ready_s, 1), "idle_cpu_share": round(idle_cpu, 3), "tasks_per_s": round((high[1] - low[1]) / span, 1),
            "accounts_at_1_per_min": round((high[1] - low[1]) / span * 60),
            "daemon_cpu_share": round((high[2] - low[2]) / span, 2), "daemon_rss_mb": round(rss_mb),
            "store_write_txn_per_s": round((high[3] - low[3]) / span, 1),
            "daemon_written_mb_per_s": round((high[4] - low[4]) / span / 2**20, 2),
            "status_ms": {"p50": round(statistics.median(latencies) * 1000, 1), "p95": round(pct(latencies, 0.95) * 1000, 1),
                          "max": round(max(latencies) * 1000, 1), "calls": len(latencies)}}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=300)
    parser.add_argument("--tasks", type=int, default=30000)
    parser.add_argument("--out-root", type=Path, default=None, help="where the images go (default: a temp dir; "
                        "/dev/shm takes the disk out of the figures except the store's)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out_root = Path(tempfile.mkdtemp(prefix="tf-bench-out-", dir=args.out_root))
    try:
        result = run(args.workers, args.tasks, out_root)
    finally:
        import shutil

        shutil.rmtree(out_root, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    s = result["status_ms"]
    print(f"{result['workers']} instant workers, {result['tasks']} tasks ({result['state']}, {result['done']} done); "
          f"fleet up in {result['fleet_ready_s']} s; idle, the daemon uses {result['idle_cpu_share'] * 100:.1f} % of a core")
    print(f"  sustained: {result['tasks_per_s']} tasks/s = {result['accounts_at_1_per_min']} accounts at one image a minute")
    print(f"  daemon: {result['daemon_cpu_share'] * 100:.0f} % of a core, RSS {result['daemon_rss_mb']} MB")
    print(f"  store: {result['store_write_txn_per_s']} synced write transactions/s; daemon wrote "
          f"{result['daemon_written_mb_per_s']} MB/s")
    print(f"  status latency: p50 {s['p50']} ms, p95 {s['p95']} ms, max {s['max']} ms ({s['calls']} calls)")


if __name__ == "__main__":
    main()
