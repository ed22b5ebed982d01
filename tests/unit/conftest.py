"""Fixtures shared by the unit tests: a real store, and a simulated fleet against a simulated rate-limited site.

The simulation runs in virtual time.
The site admits at most N sends per sliding window of S seconds (per account
or for all together) and refuses the rest with "try again in k seconds",
rounded up, as sites do.  Each worker sends whenever pacing lets it and gets
its answer `latency` seconds later.  Only the pure pacing code is real here.
"""

from __future__ import annotations

import collections
import heapq
import math
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tabfleetd.schedule.limits import Limits
from tabfleetd.store.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A real LMDB store in a temporary directory, closed afterwards."""
    s = Store(tmp_path / "store")
    yield s
    s.close()


@dataclass
class SlidingSite:
    limit: int
    window_s: float
    per_account: bool = False
    admitted: dict[str, collections.deque[float]] = field(default_factory=lambda: collections.defaultdict(collections.deque))
    log: list[tuple[float, str, bool]] = field(default_factory=list)  # (time, account, admitted)

    def arrive(self, account: str, now: float) -> int | None:
        """None when admitted, else the wait the site states."""
        scope = account if self.per_account else "all"
        recent = self.admitted[scope]
        while recent and recent[0] <= now - self.window_s:
            recent.popleft()
        if len(recent) >= self.limit:
            self.log.append((now, account, False))
            return max(1, math.ceil(recent[-self.limit] + self.window_s - now))
        recent.append(now)
        self.log.append((now, account, True))
        return None


def simulate(site: SlidingSite, workers: int, latency: float, duration: float, scope: str = "auto",
             send_delay: float = 0.05) -> Limits:
    """Run `workers` accounts against `site` for `duration` virtual seconds; return the pacer."""
    limits = Limits(0, 0)
    limits.site("s", scope)
    events: list[tuple[float, int, str]] = [(0.0, w, "idle") for w in range(workers)]
    heapq.heapify(events)
    seq = 0
    while events:
        now, worker, what = heapq.heappop(events)
        if now > duration:
            break
        account = f"a{worker}"
        if what == "idle":
            wait = limits.wait("s", account, now)
            if wait > 0:
                heapq.heappush(events, (now + max(wait, 0.01), worker, "idle"))
                continue
            seq += 1
            key = f"k{seq}"
            limits.take("s", account, key, now)
            sent = now + send_delay
            stated = site.arrive(account, sent)
            if stated is None:
                heapq.heappush(events, (sent + latency, worker, f"ok {key} {sent}"))
            else:
                heapq.heappush(events, (sent + latency, worker, f"refused {key} {sent} {stated}"))
            continue
        kind, key, sent_s, *rest = what.split()
        if kind == "ok":
            limits.on_answer("s", account, key, float(sent_s), latency, now)
        else:
            limits.on_rate_limit("s", account, key, float(sent_s), float(rest[0]), "try again", now)
        heapq.heappush(events, (now, worker, "idle"))
    return limits


def per_window(site: SlidingSite, start: float, end: float) -> tuple[list[int], list[int]]:
    """Admitted sends and refusals in each window of the site's length from `start` to `end`."""
    admitted, refused = [], []
    t = start
    while t + site.window_s <= end:
        inside = [ok for when, _, ok in site.log if t <= when < t + site.window_s]
        admitted.append(sum(inside))
        refused.append(len(inside) - sum(inside))
        t += site.window_s
    return admitted, refused


@pytest.fixture
def sim() -> types.SimpleNamespace:
    """The site simulator: SlidingSite, simulate() and per_window()."""
    return types.SimpleNamespace(SlidingSite=SlidingSite, simulate=simulate, per_window=per_window)
