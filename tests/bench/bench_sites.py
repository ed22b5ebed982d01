"""Site-engine benchmark: images per minute and per-task overhead on the fixture pages, through the real daemon.

Run: .venv/bin/python tests/bench/bench_sites.py [--prompts 60] [--workers 3] [--latency 1.0] [--pages form,chat]

For each page, W workers make N images on a local fixture page that answers in LATENCY seconds:
  - form: a form-style UI (tests/e2e/sites/pages/form.html with form.toml): a prompt box that keeps its text,
    Generate, one result slot updated in place, confirmed by its busy signal;
  - chat: a chat-style UI (pages/chat.html with fixture.toml): a composer, a send button, one turn per prompt.
It prints images/min against the ideal W × 60 / LATENCY (goal: at least 90 %), and the overhead per task above
the page's own time: end to end (wall time × W / N − LATENCY, dispatch included) and inside the worker
(a task's start to its finish as the worker reports them, − LATENCY). A warm-up job per worker loads the page first.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchlib import BenchDaemon

SITES = Path(__file__).resolve().parents[1] / "e2e" / "sites"
sys.path.insert(0, str(SITES))
from conftest import FixtureSite  # noqa: E402  (the tests' fixture web server, run here on its own loop)

PAGES = {"form": ("/form", "form.toml"), "chat": ("/chat", "fixture.toml")}


class Server:
    """The fixture site on a background event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.site = FixtureSite()

    def __enter__(self) -> FixtureSite:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.site.start(), self.loop).result(30)
        return self.site

    def __exit__(self, *exc: Any) -> None:
        asyncio.run_coroutine_threadsafe(self.site.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)


def run_page(site: FixtureSite, page: str, prompts: int, workers: int, latency: float) -> dict[str, Any]:
    path, profile_file = PAGES[page]
    url = site.url(path, latency=int(latency * 1000), tag=f"bench-{page}")
    text = re.sub(r"(?m)^start_url = .*$", f'start_url = "{url}"', (SITES / profile_file).read_text())
    daemon = BenchDaemon(workers, {"stagger_s": 0.0})
    daemon.start(wait_idle=True)

    def submit(items: list[str]) -> str:
        return daemon.call("submit", {"filename": "bench.txt", "data": "\n".join(items).encode(), "cwd": str(daemon.work),
                                      "site": page, "profile": text, "profile_file": profile_file})["job"]

    try:
        daemon.wait(submit([f"warm up {page} {i}" for i in range(workers)]))
        started = time.monotonic()
        job = submit([f"{page} bench prompt {i}" for i in range(prompts)])
        status = daemon.wait(job)
        wall = time.monotonic() - started
        tasks = daemon.call("tasks", {"job": job})["tasks"]
    finally:
        daemon.close()
    in_worker = [t["finished"] - t["started"] for t in tasks if t["state"] == "done" and t["started"] and t["finished"]]
    ideal = workers * 60 / latency
    rate = status["done"] / wall * 60
    return {"page": page, "done": status["done"], "failed": status["failed"], "wall": wall, "rate": rate, "ideal": ideal,
            "share": rate / ideal, "overhead_end_to_end": wall * workers / max(1, status["done"]) - latency,
            "overhead_in_worker": statistics.mean(in_worker) - latency if in_worker else float("nan"),
            "overhead_in_worker_p90": sorted(in_worker)[int(0.9 * (len(in_worker) - 1))] - latency if in_worker else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=60)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--pages", default="form,chat")
    args = parser.parse_args()
    print(f"{args.workers} workers, {args.prompts} prompts per page, pages answering in {args.latency:.1f} s")
    with Server() as site:
        for page in args.pages.split(","):
            r = run_page(site, page.strip(), args.prompts, args.workers, args.latency)
            goal = "ok" if r["share"] >= 0.9 else "BELOW the 90 % goal"
            print(f"{r['page']:5s} {r['done']} done, {r['failed']} failed in {r['wall']:.1f} s: {r['rate']:.1f} images/min "
                  f"of an ideal {r['ideal']:.0f} ({r['share']:.0%}, {goal})")
            print(f"      overhead per task above the page's {args.latency:.1f} s: {r['overhead_end_to_end'] * 1000:.0f} ms end to "
                  f"end, {r['overhead_in_worker'] * 1000:.0f} ms in the worker (p90 {r['overhead_in_worker_p90'] * 1000:.0f} ms)")


if __name__ == "__main__":
    main()
