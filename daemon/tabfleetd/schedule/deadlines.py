"""How long to wait for a site's answer: learned from the answer times the site has shown.

A request the site lost never answers, so the wait for it is pure loss: on a
site that answers in 2 s, waiting the profile's 30 s for every lost request
costs a worker 28 s each time.  The answer deadline is therefore a high
percentile of the answers seen so far times a margin, never below a floor,
and never above the profile's `answer_s` or the daemon's task deadline.  Until
enough answers are seen, the cap applies.

A site that turns slower than the deadline would otherwise never show it: its
answers all time out and none is timed.  So each answer timeout in a row
doubles the deadline (up to the cap) until an answer comes again.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

SAMPLES_KEPT = 200
MIN_SAMPLES = 5
PERCENTILE = 0.95
MARGIN = 3.0
FLOOR_S = 5.0


@dataclass
class AnswerClock:
    """The answer times of one site and the deadline they give."""

    samples: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=SAMPLES_KEPT))
    timeouts: int = 0  # answer timeouts since the last answer

    def record(self, seconds: float) -> None:
        if seconds > 0:
            self.samples.append(float(seconds))
            self.timeouts = 0

    def timed_out(self) -> None:
        """No answer within the deadline: the next wait is twice as long, in case the site became slower."""
        self.timeouts = min(self.timeouts + 1, 16)

    def percentile(self) -> float | None:
        if len(self.samples) < MIN_SAMPLES:
            return None
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(PERCENTILE * len(ordered)))]

    def deadline(self, cap_s: float) -> float:
        """Seconds to wait for the next answer: p95 × margin within [floor, cap]."""
        high = self.percentile()
        if high is None:
            return cap_s
        return min(cap_s, max(FLOOR_S, high * MARGIN) * 2 ** self.timeouts)

    def view(self, cap_s: float) -> dict[str, Any]:
        high = self.percentile()
        return {"answer_deadline_s": round(self.deadline(cap_s), 1), "answer_p95_s": None if high is None else round(high, 2),
                "answers_seen": len(self.samples), "answer_cap_s": cap_s, "answer_timeouts": self.timeouts}

    def state(self) -> list[float]:
        return [round(s, 3) for s in self.samples]

    @classmethod
    def restore(cls, samples: list[float]) -> AnswerClock:
        clock = cls()
        for s in samples[-SAMPLES_KEPT:]:
            clock.record(float(s))
        return clock


def answer_cap(profile: dict[str, Any] | None, task_deadline_s: float) -> float:
    """The longest answer wait: the profile's answer_s when set, within the task deadline."""
    answer_s = float(((profile or {}).get("timeouts") or {}).get("answer_s") or 0.0)
    return min(answer_s, task_deadline_s) if answer_s > 0 else task_deadline_s
