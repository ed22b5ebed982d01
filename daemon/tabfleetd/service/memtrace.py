"""Opt-in tracemalloc for the daemon: which allocation sites grew since the last look.

``trace_memory_frames`` (config) starts tracemalloc with that many frames per
allocation at daemon start; the ``memory_growth`` op asks for a snapshot, diffs
it against the previous one and returns the sites that grew most.  A snapshot
of a big heap takes a good part of a second, so it is taken in a thread: the
event loop keeps serving meanwhile (tracemalloc takes its own lock).
"""

from __future__ import annotations

import asyncio
import linecache
import os
import threading
import time
import tracemalloc
from typing import Any

# tracemalloc's own bookkeeping, the linecache it fills and the totals kept here are not the daemon's growth.
_EXCLUDE = (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, linecache.__file__),
            tracemalloc.Filter(False, __file__), tracemalloc.Filter(False, "<unknown>"))
_OWN_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def start(frames: int) -> bool:
    """Start tracing with `frames` frames per allocation (0: leave it off); True if tracing is on."""
    if frames > 0 and not tracemalloc.is_tracing():
        tracemalloc.start(frames)
    return tracemalloc.is_tracing()


class GrowthTracker:
    """Each call's per-site totals diffed against the previous call's; the first compares with nothing (all is growth).

    Only the per-site totals are kept between calls, not the snapshot: a
    snapshot holds every live block, and keeping one would itself be memory
    the daemon holds for as long as it is watched.
    """

    def __init__(self) -> None:
        self.previous: dict[tracemalloc.Traceback, tuple[int, int]] | None = None  # site -> (bytes, blocks)
        self.previous_at = 0.0
        self.lock = threading.Lock()  # two callers at once must not diff against the same previous totals

    def growth(self, top: int) -> dict[str, Any]:
        """The `top` sites that grew most (bytes) since the last call, and the traced totals. Blocking: run in a thread."""
        if not tracemalloc.is_tracing():
            return {"tracing": False}
        with self.lock:
            snapshot = tracemalloc.take_snapshot().filter_traces(_EXCLUDE)
            totals = {s.traceback: (s.size, s.count) for s in snapshot.statistics("traceback")}
            del snapshot
            now = time.monotonic()
            previous, since = self.previous or {}, (now - self.previous_at if self.previous is not None else None)
            self.previous, self.previous_at = totals, now
        grown = []
        for site, (size, count) in totals.items():
            old_size, old_count = previous.get(site, (0, 0))
            if size > old_size:
                grown.append(tracemalloc.StatisticDiff(site, size, size - old_size, count, count - old_count))
        grown.sort(key=lambda s: s.size_diff, reverse=True)
        current, peak = tracemalloc.get_traced_memory()
        return {"tracing": True, "frames": tracemalloc.get_traceback_limit(), "since_s": None if since is None else round(since, 1),
                "traced_mb": round(current / 2**20, 2), "peak_mb": round(peak / 2**20, 2),
                "overhead_mb": round(tracemalloc.get_tracemalloc_memory() / 2**20, 2),
                "sites": [_site(s) for s in grown[:top]]}

    async def growth_async(self, top: int) -> dict[str, Any]:
        return await asyncio.get_running_loop().run_in_executor(None, self.growth, top)


def _site(stat: tracemalloc.StatisticDiff) -> dict[str, Any]:
    """One site: its innermost frames first, as 'file:line', with sizes in KiB; where: the innermost of the daemon's own."""
    frames = [f"{f.filename}:{f.lineno}" for f in reversed(stat.traceback)]
    ours = [f for f in frames if _OWN_DIR in f]
    return {"where": (ours or frames or ["?"])[0], "stack": frames[:8], "size_kib": round(stat.size / 1024, 1),
            "growth_kib": round(stat.size_diff / 1024, 1), "count": stat.count, "count_growth": stat.count_diff}
