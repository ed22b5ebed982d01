"""Pace and memory benchmark: throughput against the ideal, keeping to a site's limit, peak memory.

Run: .venv/bin/python tests/bench/bench_pace.py [--quick]

  1. 5 workers on a 2 s site: images per minute against the ideal 5 / 2 s = 150/min,
     with the fleet's peak memory (the governor's reading) against its limit and
     the peak PSS of each worker with its Chromium.
  2. A configured site rate of R per minute on a fast site: the rate achieved against R.
  3. A site that itself allows only R per minute ("N/S" rate-limit knob), with no
     configured rate: the rate achieved once the fleet has learnt it (AIMD), and
     how many rate-limit answers that cost.
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

from benchlib import BenchDaemon


def throughput_with_memory(count: int) -> dict[str, Any]:
    daemon = BenchDaemon(5, {"stagger_s": 0.0})
    daemon.start(wait_idle=True)
    peaks = {"percent": 0.0, "used_mb": 0, "limit_mb": 0, "worker_mb": 0.0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            status = daemon.call("status")
            memory = status["memory"]
            if (memory.get("percent") or 0) > peaks["percent"]:
                peaks.update(percent=memory["percent"], used_mb=memory["used_mb"], limit_mb=memory["total_mb"])
            peaks["worker_mb"] = max([peaks["worker_mb"]] + [w["rss_mb"] for w in status["workers"]])
            time.sleep(0.5)

    try:
        daemon.wait(daemon.submit([f"warm {i}" for i in range(5)], latency=2))
        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.monotonic()
        status = daemon.wait(daemon.submit([f"pace prompt {i}" for i in range(count)], latency=2))
        wall = time.monotonic() - started
        done.set()
        sampler.join()
    finally:
        daemon.close()
    return {"rate": status["done"] / wall * 60, "ideal": 150.0, **peaks}


def keeps_rate(rate: float, count: int, **knobs: Any) -> dict[str, Any]:
    config = {"stagger_s": 0.0, "retry_base_s": 1.0, "retry_cap_s": 5.0}
    if rate:
        config["site_rate_per_min"] = rate
    daemon = BenchDaemon(4, config)
    daemon.start(wait_idle=True)
    try:
        job = daemon.submit([f"limited prompt {i}" for i in range(count)], latency=0.2, **knobs)
        daemon.wait(job, every=0.5)
        tasks = daemon.tasks(job)
        pace = daemon.call("status")["limits"]["sites"]["demo"]
    finally:
        daemon.close()
    finishes = sorted(t["finished"] for t in tasks)
    half = len(finishes) // 2  # the second half: after the fleet has found the pace
    steady = (len(finishes) - 1 - half) / (finishes[-1] - finishes[half]) * 60
    overall = (len(finishes) - 1) / (finishes[-1] - finishes[0]) * 60
    return {"overall": overall, "steady": steady, "hits": pace["rate_limit_hits"], "final": pace["rate_per_min"],
            "done": sum(t["state"] == "done" for t in tasks), "count": len(tasks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    scale = 1 if args.quick else 2
    r = throughput_with_memory(25 * scale)
    print(f"5 workers, 2 s site: {r['rate']:.1f} images/min = {100 * r['rate'] / r['ideal']:.1f} % of the ideal 150/min")
    print(f"  peak memory {r['used_mb']} of {r['limit_mb']} MB = {r['percent']:.1f} % of the limit; "
          f"peak worker with its Chromium {r['worker_mb']:.0f} MB (PSS)")
    c = keeps_rate(60.0, 30 * scale)
    print(f"configured site rate 60/min, 4 workers on a 0.2 s site: {c['overall']:.1f}/min overall, "
          f"{c['steady']:.1f}/min in the second half ({100 * c['steady'] / 60:.0f} % of the limit), {c['hits']} rate-limit answers")
    s = keeps_rate(0.0, 40 * scale, rate_limit="10/20")
    print(f"site's own limit 10 per 20 s (30/min), nothing configured: {s['overall']:.1f}/min overall, "
          f"{s['steady']:.1f}/min in the second half ({100 * s['steady'] / 30:.0f} % of the limit); "
          f"{s['hits']} rate-limit answers; learnt rate {s['final']}/min; {s['done']}/{s['count']} done")


if __name__ == "__main__":
    main()
