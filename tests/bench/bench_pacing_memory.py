"""Pacing-log memory: what the send logs of one site and its accounts hold once full, per send.

Run: .venv/bin/python tests/bench/bench_pacing_memory.py [--accounts 2] [--sends 8192]

Feeds one site's log and each account's log (the scheduler keeps both) with
--sends sends, each answered, under task keys like the scheduler's, and prints
the memory tracemalloc counts for them, in all and per send kept per log.
The logs keep their last LOG_KEPT sends each, so that is the most they hold.
To compare with an older tabfleetd, run it with that one's daemon/ first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import tracemalloc
import uuid

from tabfleetd.schedule.window import LOG_KEPT, SendLog
from tabfleetd.store.records import task_key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=2)
    parser.add_argument("--sends", type=int, default=2 * LOG_KEPT)
    args = parser.parse_args()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    site, accounts = SendLog(), [SendLog() for _ in range(args.accounts)]
    job = uuid.uuid4().hex[:8]
    t = 1_700_000_000.0
    for i in range(args.sends):
        key = task_key(job, i).decode()
        account = accounts[i % args.accounts]
        for log in (site, account):
            log.dispatched(key, t + i)
        for log in (site, account):
            log.answered(key, t + i + 0.5, refused=False)
    held = tracemalloc.get_traced_memory()[0] - before
    kept = sum(len(getattr(log, "sends", log)) for log in (site, *accounts))  # `sends`: the logs of a tabfleetd before this bench
    print(f"{args.sends} sends over 1 site and {args.accounts} accounts: {kept} kept in {1 + args.accounts} logs "
          f"(at most {LOG_KEPT} each), {held / 2**20:.2f} MB, {held / kept:.0f} bytes per send kept")


if __name__ == "__main__":
    main()
