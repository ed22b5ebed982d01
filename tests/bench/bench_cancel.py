"""Cancel benchmark: how soon a cancelled job's workers are free again while the site is still generating.

Run: .venv/bin/python tests/bench/bench_cancel.py [--workers 5] [--latency 60] [--trials 5]

Each trial submits one prompt per worker to a site that takes --latency
seconds per image, waits until every worker is generating and its prompt has
gone out, cancels the job, and times the moment every worker is idle again.
Without the abort that moment is the site's answer (--latency seconds, or the
answer deadline if that is sooner).  It then runs one more prompt, to show the
fleet goes on, and prints the cancel-to-free times (median, max), how many
workers were restarted (goal 0) and whether any image of a cancelled job was
written (goal none).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from benchlib import BenchDaemon


def trial(daemon: BenchDaemon, workers: int, latency: float, n: int) -> tuple[float, int]:
    """One cancel: seconds from the cancel to every worker idle, and images the cancelled job left."""
    job = daemon.submit([f"cancelled {n}.{i}" for i in range(workers)], latency=latency)
    deadline = time.monotonic() + 60
    while sum(w["state"] == "busy" for w in daemon.call("workers")["workers"]) < workers:
        if time.monotonic() > deadline:
            raise SystemExit("the workers did not all start generating within 60 s")
        time.sleep(0.05)
    time.sleep(2.0)  # the prompts are typed and sent: the site is generating
    started = time.monotonic()
    daemon.call("cancel", {"job": job})
    while sum(w["state"] == "idle" for w in daemon.call("workers")["workers"]) < workers:
        if time.monotonic() - started > latency + 60:
            raise SystemExit("the workers were not free again within the site's latency + 60 s")
        time.sleep(0.02)
    freed = time.monotonic() - started
    out = daemon.call("status", {"job": job})["jobs"][0]["out"]
    return freed, len(list(Path(out).glob("*.png")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=5)
    parser.add_argument("--latency", type=float, default=60.0, help="seconds the site takes per image")
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    daemon = BenchDaemon(args.workers, {"stagger_s": 0.0, "task_deadline_s": args.latency + 30})
    daemon.start(wait_idle=True)
    try:
        freed, images = [], 0
        for n in range(args.trials):
            seconds, left = trial(daemon, args.workers, args.latency, n)
            freed.append(seconds)
            images += left
            print(f"trial {n + 1}: {args.workers} workers free {seconds:.2f} s after the cancel", flush=True)
        restarts = sum(w["restarts"] for w in daemon.call("workers")["workers"])
        after = daemon.wait(daemon.submit(["after the cancels"], latency=0.5))
        print(f"\n{args.workers} workers on a {args.latency:g} s site, {args.trials} cancels mid-generation: "
              f"free again after median {statistics.median(freed):.2f} s, max {max(freed):.2f} s "
              f"(without the abort: the site's {args.latency:g} s); worker restarts {restarts} (goal 0); "
              f"images of cancelled jobs {images} (goal 0); a job after them: {after['done']}/1 done")
    finally:
        daemon.close()


if __name__ == "__main__":
    main()
