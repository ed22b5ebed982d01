"""Load test with injected faults: does every task finish, exactly once, while processes are being killed?

Run: .venv/bin/python tests/bench/bench_recovery.py --prompts 100      (about 1 minute)
     .venv/bin/python tests/bench/bench_recovery.py --prompts 1000
     .venv/bin/python tests/bench/bench_recovery.py --prompts 3000

A real tabfleetd with real Chromium workers runs one job on the demo site with
errors and hung requests injected, while this script kills a random worker's
Chromium every --chromium-kill-every seconds and kill -9s the daemon itself
every --daemon-kill-every seconds (then starts it again).  It reports:
  * success rate (tasks done / tasks), and the failed tasks with their errors;
  * duplicate generations: images the demo site made more than once for one
    prompt (the site's counters are read every second and before each kill, so
    a generation in the last second before a daemon kill can be missed);
  * for each kill, the time until the next task finished;
  * images per minute, against the fault-free ideal (workers / latency).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import urllib.request
from typing import Any

import psutil
from benchlib import BenchDaemon

from tabfleetctl.client import DaemonError, DaemonNotRunning


def site_counts(fleet: BenchDaemon) -> dict[str, int]:
    url = fleet.call("ping").get("demo_url")
    if not url:
        return {}
    try:
        with urllib.request.urlopen(f"{url}/api/stats", timeout=5) as reply:
            return json.load(reply)["generated"]
    except OSError:
        return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--error-rate", type=float, default=0.03)
    parser.add_argument("--hang-rate", type=float, default=0.01)
    parser.add_argument("--task-deadline", type=float, default=15.0)
    parser.add_argument("--chromium-kill-every", type=float, default=60.0)
    parser.add_argument("--daemon-kill-every", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    fleet = BenchDaemon(args.workers, {"task_deadline_s": args.task_deadline, "retry_base_s": 1.0, "retry_cap_s": 10.0,
                                       "max_attempts": 5, "grace_s": 2.0}, prefix="tf-load-")
    print(f"{args.prompts} prompts, {args.workers} workers, latency {args.latency} s, errors {args.error_rate:.0%}, "
          f"hangs {args.hang_rate:.0%}, Chromium kill every {args.chromium_kill_every:.0f} s, "
          f"daemon kill -9 every {args.daemon_kill_every:.0f} s; state in {fleet.root}")
    fleet.start()
    prompts = [f"load prompt {i} of {args.prompts}" for i in range(args.prompts)]
    job = fleet.call("submit", {"filename": "load.txt", "data": "\n".join(prompts).encode(), "cwd": str(fleet.work),
                                "knobs": {"latency": str(args.latency), "error_rate": str(args.error_rate),
                                          "hang_rate": str(args.hang_rate), "seed": str(args.seed)}})["job"]
    started = time.monotonic()
    generated: dict[str, int] = {}
    current: dict[str, int] = {}
    kills: list[tuple[str, float, int]] = []  # (what, when, done count at the kill)
    recoveries: list[tuple[str, float]] = []
    next_chromium = started + args.chromium_kill_every
    next_daemon = started + args.daemon_kill_every
    restarts: list[float] = []
    status: dict[str, Any] = {}
    while True:
        try:
            status = fleet.call("status", {"job": job})["jobs"][0]
            current = site_counts(fleet)
        except (DaemonNotRunning, DaemonError):
            time.sleep(0.2)
            continue
        now = time.monotonic()
        for what, when, done_then in list(kills):
            if status["done"] > done_then:
                recoveries.append((what, now - when))
                kills.remove((what, when, done_then))
        if status["state"] != "active":
            break
        if now >= next_daemon:
            for prompt, count in current.items():
                generated[prompt] = generated.get(prompt, 0) + count
            current = {}
            fleet.kill9()
            kills.append(("daemon kill -9", time.monotonic(), status["done"]))
            restarts.append(fleet.start())
            next_daemon = time.monotonic() + args.daemon_kill_every
        elif now >= next_chromium:
            workers = [w for w in fleet.call("workers")["workers"] if w["pid"]]
            victims = []
            for worker in rng.sample(workers, len(workers)):
                try:
                    victims = [p for p in psutil.Process(worker["pid"]).children() if "chrom" in p.name()]
                except psutil.Error:
                    continue
                if victims:
                    break
            if victims:
                victims[0].kill()
                kills.append(("Chromium kill", time.monotonic(), status["done"]))
            next_chromium = time.monotonic() + args.chromium_kill_every
        time.sleep(1.0)
    wall = time.monotonic() - started
    for prompt, count in current.items():
        generated[prompt] = generated.get(prompt, 0) + count
    tasks = fleet.tasks(job)
    root = fleet.root
    fleet.close()
    left = [p for p in psutil.process_iter(["cmdline"]) if any(str(root) in a for a in p.info["cmdline"] or [])]
    done = sum(t["state"] == "done" for t in tasks)
    failed = [t for t in tasks if t["state"] == "failed"]
    duplicates = sum(max(0, n - 1) for n in generated.values())
    print(f"\nsuccess: {done}/{len(tasks)} = {100 * done / len(tasks):.2f} %   failed: {len(failed)}")
    for task in failed[:10]:
        print(f"  failed #{task['index']} after {task['attempts']} attempts: {task['error_kind']}: {task['error']}")
    print(f"duplicate generations: {duplicates} (images generated {sum(generated.values())} for {len(generated)} prompts)")
    print(f"attempts: {sum(t['attempts'] for t in tasks)} for {len(tasks)} tasks; retried tasks: {sum(t['attempts'] > 1 for t in tasks)}")
    for what in ("Chromium kill", "daemon kill -9"):
        times = [t for w, t in recoveries if w == what]
        if times:
            print(f"{what}: {len(times)} times; next finished task after median {statistics.median(times):.1f} s, "
                  f"max {max(times):.1f} s")
    if restarts:
        print(f"daemon restarts answered the socket after median {statistics.median(restarts):.2f} s")
    ideal = args.workers / args.latency * 60
    print(f"images/min: {done / wall * 60:.1f} over {wall:.0f} s (fault-free ideal {ideal:.0f}/min)")
    print(f"processes left behind: {len(left)}")


if __name__ == "__main__":
    main()
