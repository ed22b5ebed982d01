"""A site's own rate limit, learned from what it says, and a pacer that keeps just under it.

Most sites limit generations with a window: at most N per S seconds. A site
that refuses a send at time s and says "try again in k seconds" has N sends
inside the window and the oldest of them, a_j, leaves it at s + k, so

    S = s + k - a_j        and        N = the sends admitted from a_j to s.

The send before a_j had already left the window at s, so the gap before a_j is
at least k (less one second: sites round the wait up).  Every admitted send
with such a gap before it is a possible window start.  The first refusal of a
batch has one: the quiet spell before the batch.
Later refusals are read against the window length already learned, which is
the site's constant.  Nothing here reads a clock: callers pass the times in.
"""

from __future__ import annotations

import array
import collections
import math
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

ROUNDING_S = 1.0  # sites round a stated wait up to whole seconds
MAX_WINDOW_S = 3600.0  # longer waits are quotas (the account cools), not a window to pace by
PACE_SLACK_S = 0.5  # added to the learned window: our send times and the site's clock differ a little
SIMULTANEOUS_S = 0.25  # sends this close may reach the site in either order
CLEAN_WINDOWS_BEFORE_PROBE = 10  # windows without a refusal before one more send per window is tried
LOG_KEPT = 4096  # sends kept per site and per account (and at most 2 * MAX_WINDOW_S of them)
DROP_BATCH = 256  # the oldest go this many at a time once the log is full


@dataclass
class Estimate:
    """N sends per window of S seconds."""

    count: int
    window_s: float

    @property
    def per_min(self) -> float:
        return self.count * 60.0 / self.window_s


def candidates(admitted: list[float], refused_at: float, wait_s: float) -> list[Estimate]:
    """Every (N, S) consistent with one refusal, given the admitted send times before it (sorted)."""
    before = [t for t in admitted if t <= refused_at + SIMULTANEOUS_S]
    reopen = refused_at + wait_s
    found = []
    for j, start in enumerate(before):
        gap = float("inf") if j == 0 else start - before[j - 1]
        window = reopen - start
        if gap >= wait_s - ROUNDING_S and 0 < window <= MAX_WINDOW_S:
            found.append(Estimate(len(before) - j, window))
    return found


def choose(found: list[Estimate], known: Estimate | None) -> Estimate | None:
    """The candidate to believe: one with the window length already learned, else the shortest window.

    Candidates start after quiet spells; the most recent one gives the shortest window, which paces
    the same rate in smaller bursts, so it is the safe guess when a longer window fits as well.
    """
    if not found:
        return None
    if known is not None:
        same = [c for c in found if abs(c.window_s - known.window_s) <= ROUNDING_S + PACE_SLACK_S]
        if same:
            return min(same, key=lambda c: abs(c.window_s - known.window_s))
    return min(found, key=lambda c: c.window_s)


class SendLog:
    """The recent sends of one site or one account, with what became of them.

    Thousands are kept per site and per account, so they are kept as columns of numbers (17 bytes a send)
    rather than as objects (about 240); only the sends still waiting for their answer are found by key.
    """

    def __init__(self) -> None:
        self._dispatched = array.array("d")  # when each send was handed out
        self._sent = array.array("d")  # when it really went out; NaN while not known
        self._refused = bytearray()  # 1 when the site refused it
        self._dropped = 0  # sends let go from the front: a send's number less this is its place in the columns
        self._waiting: dict[str, int] = {}  # key -> the number of its send, until its answer comes
        self.delays: collections.deque[float] = collections.deque(maxlen=64)

    def __len__(self) -> int:
        return len(self._dispatched)

    def dispatched(self, key: str, now: float) -> None:
        self._waiting[key] = self._dropped + len(self._dispatched)
        self._dispatched.append(now)
        self._sent.append(math.nan)
        self._refused.append(0)
        if len(self._dispatched) > LOG_KEPT + DROP_BATCH:
            self._drop(len(self._dispatched) - LOG_KEPT)

    def answered(self, key: str, sent: float | None, refused: bool) -> bool:
        """Record what became of the send made under key; False when it is no longer kept."""
        number = self._waiting.pop(key, None)
        if number is None or number < self._dropped:
            return False
        i = number - self._dropped
        if sent is not None:
            self._sent[i] = sent
            self.delays.append(max(0.0, sent - self._dispatched[i]))
        self._refused[i] = 1 if refused else 0
        return True

    def delay(self) -> float:
        """How long after being handed out a prompt is usually sent (page work, the profile's pause)."""
        return statistics.median(self.delays) if self.delays else 0.0

    def spread(self) -> float:
        """How much that delay varies: in-flight sends are placed by it, so the pacer adds it as slack."""
        if len(self.delays) < 4:
            return 0.0
        ordered = sorted(self.delays)
        return ordered[int(0.9 * (len(ordered) - 1))] - ordered[int(0.1 * (len(ordered) - 1))]

    def times(self, delay: float) -> Iterator[tuple[float, float]]:
        """(handed out, went out) of each send the site did not refuse; one not known to have gone counts as `delay` after."""
        for dispatched, sent, refused in zip(self._dispatched, self._sent, self._refused):
            if not refused:
                yield dispatched, (dispatched + delay if math.isnan(sent) else sent)

    def admitted(self, now: float) -> list[float]:
        return sorted(sent for dispatched, sent in self.times(self.delay()) if dispatched <= now)

    def prune(self, older_than: float) -> None:
        """Let go of the sends, from the oldest, that went out (or were handed out, if that is all we know) before older_than."""
        count = 0
        for dispatched, sent in zip(self._dispatched, self._sent):
            if (dispatched if math.isnan(sent) else sent) >= older_than:
                break
            count += 1
        if count:
            self._drop(count)

    def _drop(self, count: int) -> None:
        del self._dispatched[:count], self._sent[:count], self._refused[:count]
        self._dropped += count
        for key in [k for k, number in self._waiting.items() if number < self._dropped]:
            del self._waiting[key]  # answers that never came (a worker died): nothing left to record them in


@dataclass
class WindowPacer:
    """Learns one site's (or account's) window from its refusals and spaces sends to stay inside it."""

    estimate: Estimate | None = None
    signal_until: float = 0.0  # refusals of sends made before this belong to the signal already counted
    last_signal: float | None = None
    probed_at: float | None = None
    signals: int = 0

    def same_signal(self, sent_at: float) -> bool:
        return sent_at < self.signal_until

    def on_refusal(self, log: SendLog, sent_at: float, wait_s: float, now: float, learn: bool = True) -> bool:
        """Learn from a refusal; True when it was a new congestion signal (not one more of the same window).

        `learn` is False when the site stated no wait: the refusal still opens a signal, but says nothing of the window.
        """
        reopen = sent_at + wait_s
        if self.same_signal(sent_at):
            self.signal_until = max(self.signal_until, reopen)
            return False
        self.signals += 1
        self.signal_until = reopen
        self.last_signal = now
        if not learn:
            return True
        found = choose(candidates(log.admitted(now), sent_at, wait_s), self.estimate)
        if found is not None and self.estimate is not None and self.paced(found):
            # We kept to the old estimate and were refused all the same: the window is tighter than it.
            found = Estimate(max(1, min(found.count, self.estimate.count - 1)), max(found.window_s, self.estimate.window_s))
        if found is not None:
            self.estimate = found
        return True

    def paced(self, found: Estimate) -> bool:
        assert self.estimate is not None
        return abs(found.window_s - self.estimate.window_s) <= ROUNDING_S + PACE_SLACK_S

    def window(self, log: SendLog) -> float:
        assert self.estimate is not None
        return self.estimate.window_s + PACE_SLACK_S + min(5.0, log.spread())

    def wait(self, log: SendLog, now: float) -> float:
        """Seconds before one more send fits in the learned window (0: now)."""
        if self.estimate is None:
            return 0.0
        self.maybe_probe(now)
        window = self.window(log)
        delay = log.delay()
        inside = sorted(t for _, t in log.times(delay) if t > now - window)
        if len(inside) < self.estimate.count:
            return 0.0
        return max(0.0, inside[len(inside) - self.estimate.count] + window - now)

    def maybe_probe(self, now: float) -> None:
        """After many clean windows, allow one more send per window: the site may have loosened its limit."""
        assert self.estimate is not None
        since = max(self.last_signal or 0.0, self.probed_at or 0.0)
        if since and now - since > CLEAN_WINDOWS_BEFORE_PROBE * self.estimate.window_s:
            self.estimate = Estimate(self.estimate.count + 1, self.estimate.window_s)
            self.probed_at = now

    def state(self) -> dict[str, Any]:
        return {"count": self.estimate.count if self.estimate else None,
                "window_s": self.estimate.window_s if self.estimate else None,
                "signal_until": self.signal_until, "last_signal": self.last_signal, "signals": self.signals}

    @classmethod
    def restore(cls, state: dict[str, Any]) -> WindowPacer:
        estimate = Estimate(int(state["count"]), float(state["window_s"])) if state.get("count") else None
        return cls(estimate, float(state.get("signal_until") or 0.0), state.get("last_signal"), None,
                   int(state.get("signals") or 0))
