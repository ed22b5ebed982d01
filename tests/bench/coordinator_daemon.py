"""tabfleetd with the benchmark-only instant worker (instant_worker.py) in place of the real one.

Only bench_coordinator.py runs this.  It takes tabfleetd's own command line.  The daemon is imported under the
main guard: each worker process (spawned) imports this file again, and must stay as small as the worker it is.
"""

from __future__ import annotations

if __name__ == "__main__":
    import instant_worker

    from tabfleetd.service import cli
    from tabfleetd.fleet import fleet

    fleet.WORKER_MAIN = instant_worker.main
    cli.main()
