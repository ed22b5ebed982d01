"""Rate-limit benchmark: a site with its own limit and nothing configured; how close the fleet gets, at what cost.

Run: .venv/bin/python tests/bench/bench_ratelimit.py [--limit 48/60] [--windows 6] [--workers 5]

The demo site allows N generations per sliding window of S seconds (the
rate_limit knob) and answers "try again in K seconds" beyond that.  The
fleet (5 workers on a 1 s site, so 300/min could go) knows nothing of it.
Prints, for each window of S seconds from the first send, the generations the
site admitted and the rate-limit answers it gave; then the generations per full window after the
first (the last, cut short by the job's end, left out) as a share of N (goal: at least 90 %) and the most answers in
any later window (goal: at most 1).
"""

from __future__ import annotations

import argparse
from typing import Any

from benchlib import BenchDaemon


def run(limit: int, window: float, windows: int, workers: int) -> dict[str, Any]:
    daemon = BenchDaemon(workers, {"stagger_s": 0.0})
    daemon.start(wait_idle=True)
    try:
        count = limit * windows
        job = daemon.submit([f"limited {i}" for i in range(count)], latency=1.0, rate_limit=f"{limit}/{window:g}")
        daemon.wait(job, every=1.0)
        tasks = daemon.call("tasks", {"job": job})["tasks"]
        events = daemon.call("events", {"job": job, "limit": 0, "kinds": ["task_retry"]})["events"]
        pace = daemon.call("status")["limits"]["sites"]["demo"]
    finally:
        daemon.close()
    # A generation is admitted when it is sent, about one latency before it finishes.
    admitted = sorted(t["finished"] - 1.0 for t in tasks if t["state"] == "done")
    refused = sorted(e["time"] - 1.0 for e in events if e.get("error_kind") == "rate_limit")
    start = min(admitted[0], refused[0] if refused else admitted[0])
    rows = []
    t = start
    while t < admitted[-1]:
        rows.append((sum(1 for a in admitted if t <= a < t + window), sum(1 for r in refused if t <= r < t + window)))
        t += window
    # The windows after the first, less the last one, which the end of the job cuts short.  (Spacing the sends
    # from first to last overstates it: each window's sends bunch at its start.)
    full = rows[1:-1] or rows[1:2]
    rate = sum(admitted for admitted, _ in full) / len(full) if full else 0.0
    return {"rows": rows, "rate_per_window": rate, "answers": len(refused), "pace": pace}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", default="48/60", help="N/S: the site's own limit")
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--workers", type=int, default=5)
    args = parser.parse_args()
    n, s = args.limit.split("/")
    limit, window = int(n), float(s)
    r = run(limit, window, args.windows, args.workers)
    print(f"site limit {limit} per {window:g} s, {args.workers} workers on a 1 s site, nothing configured:")
    for i, (admitted, answers) in enumerate(r["rows"], start=1):
        print(f"  window {i}: {admitted} admitted ({100 * admitted / limit:.0f} % of {limit}), {answers} rate-limit answers")
    later = [answers for _, answers in r["rows"][1:]] or [0]
    print(f"full windows after the first: {r['rate_per_window']:.1f} per {window:g} s = {100 * r['rate_per_window'] / limit:.1f} % "
          f"of the limit (goal 90 %); most rate-limit answers in a later window: {max(later)} (goal 1); "
          f"{r['answers']} answers in all")
    print(f"learned: {r['pace'].get('window')} ({r['pace'].get('scope')}), {r['pace'].get('signals')} congestion signals")


if __name__ == "__main__":
    main()
