"""Foundation benchmark: throughput against the ideal, daemon-side time per task, status latency, memory.

Run: .venv/bin/python tests/bench/bench_foundation.py [--quick]

Each scenario starts a real tabfleetd with real Chromium workers on the demo site.
Figures:
  * images/min with N workers at L s site latency, against the ideal N / L * 60,
    both over the whole job (submit to last image) and in steady state;
  * daemon-side time per task: on each worker, the gap between one task's end
    and the start of its next (result handling, store writes, manifest, dispatch);
  * status latency with 10,000 tasks in the store;
  * memory: PSS of each worker with its Chromium tree, and the daemon's RSS.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import psutil
from benchlib import BenchDaemon, pct

from tabfleetctl.client import Client


def throughput(workers: int, latency: float, per_worker: int) -> dict[str, Any]:
    daemon = BenchDaemon(workers, {"stagger_s": 0.0})
    daemon.start(wait_idle=True)
    try:
        # A warm-up prompt per worker opens the site on every page, as in a long run.
        daemon.wait(daemon.submit([f"warm {i}" for i in range(workers)], latency=latency))
        count = workers * per_worker
        started = time.monotonic()
        job = daemon.submit([f"bench prompt {i}" for i in range(count)], latency=latency)
        status = daemon.wait(job)
        wall = time.monotonic() - started
        tasks = daemon.tasks(job)
        memory = daemon.call("status")
    finally:
        daemon.close()
    assert status["done"] == count, status
    by_worker: dict[int, list[dict[str, Any]]] = {}
    for task in tasks:
        by_worker.setdefault(task["worker"], []).append(task)
    gaps = []
    for runs in by_worker.values():
        runs.sort(key=lambda t: t["started"])
        gaps += [b["started"] - a["finished"] for a, b in zip(runs, runs[1:])]
    first_end = min(t["finished"] for t in tasks)
    last_end = max(t["finished"] for t in tasks)
    steady = (count - workers) / (last_end - first_end) * 60
    ideal = workers / latency * 60
    per_task = [t["finished"] - t["started"] for t in tasks]
    return {
        "workers": workers, "latency": latency, "images": count, "ideal": ideal,
        "rate": count / wall * 60, "steady": steady, "gap_ms": [1000 * statistics.mean(gaps), 1000 * pct(gaps, 0.95)],
        "task_s": statistics.mean(per_task), "worker_mb": [w["rss_mb"] for w in memory["workers"]],
        "daemon_mb": memory["memory"]["daemon_rss_mb"],
    }


def status_latency(tasks: int, calls: int) -> dict[str, Any]:
    daemon = BenchDaemon(1)
    daemon.start()
    try:
        started = time.monotonic()
        job = daemon.submit([f"queued prompt {i}" for i in range(tasks)], latency=60)
        submit_s = time.monotonic() - started
        daemon.call("pause", {"job": job})
        fresh, reused = [], []
        for _ in range(calls):
            t0 = time.perf_counter()
            daemon.call("status")
            fresh.append(time.perf_counter() - t0)
        with Client(daemon.socket, 30) as client:
            for _ in range(calls):
                t0 = time.perf_counter()
                client.call("status", {"job": job})
                reused.append(time.perf_counter() - t0)
        total = daemon.call("status", {"job": job})["jobs"][0]["total"]
    finally:
        daemon.close()
    return {"tasks": total, "submit_s": submit_s, "fresh_ms": [1000 * pct(fresh, 0.5), 1000 * pct(fresh, 0.99)],
            "reused_ms": [1000 * pct(reused, 0.5), 1000 * pct(reused, 0.99)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images per worker")
    args = parser.parse_args()
    per_worker = 5 if args.quick else 15
    print(f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.1f} GiB; Chromium workers on the demo site")
    print(f"\n{'workers':>7} {'latency':>7} {'images':>6} {'ideal/min':>9} {'got/min':>8} {'% ideal':>7} {'steady/min':>10} "
          f"{'% ideal':>7} {'daemon gap ms (mean/p95)':>25} {'task s':>6}  worker PSS MB (with Chromium)   daemon RSS MB")
    for workers, latency in ((2, 1.0), (4, 1.0), (5, 2.0)):
        r = throughput(workers, latency, per_worker)
        print(f"{r['workers']:>7} {r['latency']:>7.1f} {r['images']:>6} {r['ideal']:>9.0f} {r['rate']:>8.1f} "
              f"{100 * r['rate'] / r['ideal']:>6.1f}% {r['steady']:>10.1f} {100 * r['steady'] / r['ideal']:>6.1f}% "
              f"{r['gap_ms'][0]:>13.1f} / {r['gap_ms'][1]:<9.1f} {r['task_s']:>6.2f}  "
              f"{', '.join(f'{m:.0f}' for m in r['worker_mb']):<30} {r['daemon_mb']:.0f}")
    s = status_latency(10_000, 100 if args.quick else 300)
    print(f"\nstatus with {s['tasks']} tasks in the store: submit of the 10,000-prompt file took {s['submit_s']:.2f} s;")
    print(f"  new connection + hello + status: p50 {s['fresh_ms'][0]:.2f} ms, p99 {s['fresh_ms'][1]:.2f} ms")
    print(f"  status on an open connection:    p50 {s['reused_ms'][0]:.2f} ms, p99 {s['reused_ms'][1]:.2f} ms")


if __name__ == "__main__":
    main()
