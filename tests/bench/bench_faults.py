"""Faults benchmark: the same 100 prompts clean and with the faults real services show, with default settings.

Run: .venv/bin/python tests/bench/bench_faults.py [--prompts 100] [--runs 1] [--seed 7]

5 workers on the demo site at 2 s per image (ideal 150/min), driven by a demo
profile whose timeouts.answer_s is 30, once clean and once with
error_rate=0.03, hang_rate=0.01 and lockup_rate=0.005 (seeded, so the faults
fall the same way each run).  Prints both rates against the ideal, the faulty
rate as a share of the clean one (goal: at least 80 %), whether every image is
its prompt's exact PNG, generations made twice, the faults met, and the CPU
seconds the frozen renderers had used when they were killed.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchlib import BenchDaemon

from tabfleetd.sites import profiles
from tabfleetd.demo.demoimage import render_png
from tabfleetd.files.outputs import output_name

WORKERS, LATENCY_S = 5, 2.0
FAULTS = {"error_rate": 0.03, "hang_rate": 0.01, "lockup_rate": 0.005}


def profile_text() -> str:
    """The demo profile with answer_s = 30, as a user would write it."""
    return profiles.builtin_text("demo").replace("answer_s = 0", "answer_s = 30").replace('name = "demo"', 'name = "demo-30"')


def run(count: int, seed: int, faults: dict[str, float]) -> dict[str, Any]:
    daemon = BenchDaemon(WORKERS)
    daemon.start(wait_idle=True)
    try:
        daemon.wait(daemon.submit([f"warm {i}" for i in range(WORKERS)], latency=LATENCY_S))
        prompts = [f"fault bench {seed} prompt {i}" for i in range(count)]
        knobs = {"latency": str(LATENCY_S), "seed": str(seed)} | {k: str(v) for k, v in faults.items()}
        started = time.monotonic()
        job = daemon.call("submit", {"filename": "faults.txt", "data": "\n".join(prompts).encode(), "cwd": str(daemon.work),
                                     "site": "demo-30", "profile": profile_text(), "profile_file": "demo-30.toml",
                                     "knobs": knobs})["job"]
        status = daemon.wait(job)
        wall = time.monotonic() - started
        out = Path(status["out"])
        exact = all((out / output_name(i, p)).read_bytes() == render_png(p)
                    for i, p in enumerate(prompts, start=1) if (out / output_name(i, p)).exists())
        events = daemon.call("events", {"job": job, "limit": 0, "kinds": ["task_retry", "task_failed"]})["events"]
        demo_url = daemon.call("ping")["demo_url"]
        with urllib.request.urlopen(f"{demo_url}/api/stats", timeout=10) as reply:
            generated = json.load(reply)["generated"]
        site = daemon.call("status")["limits"]["sites"].get("demo-30", {})
    finally:
        daemon.close()
    frozen = [e for e in events if e.get("frozen_cpu_s") is not None]
    kinds: dict[str, int] = {}
    for e in events:
        key = "frozen" if e.get("frozen_cpu_s") is not None else str(e.get("error_kind"))
        kinds[key] = kinds.get(key, 0) + 1
    return {"rate": status["done"] / wall * 60, "wall": wall, "done": status["done"], "failed": status["failed"],
            "exact": exact, "twice": sum(1 for p in prompts if generated.get(p, 0) > 1), "faults": kinds,
            "frozen_cpu_s": sum(e["frozen_cpu_s"] for e in frozen),
            "deadline": site.get("answer_deadline_s")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    ideal = WORKERS / LATENCY_S * 60
    for r in range(args.runs):
        seed = args.seed + r
        clean = run(args.prompts, seed, {})
        faulty = run(args.prompts, seed, FAULTS)
        for name, result in (("clean", clean), ("faulty", faulty)):
            print(f"run {r + 1} {name:6}: {result['rate']:.1f} images/min = {100 * result['rate'] / ideal:.1f} % of the ideal "
                  f"{ideal:.0f}/min ({result['done']} done, {result['failed']} failed in {result['wall']:.0f} s); "
                  f"every image exact: {result['exact']}; generated twice: {result['twice']}; "
                  f"answer deadline at the end {result['deadline']} s")
        print(f"run {r + 1}: faulty = {100 * faulty['rate'] / clean['rate']:.1f} % of clean (goal 80 %); faults met "
              f"{faulty['faults']}; CPU seconds of frozen renderers when killed: {faulty['frozen_cpu_s']:.1f}")


if __name__ == "__main__":
    main()
