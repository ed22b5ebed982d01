"""Retry policy: what a failed attempt leads to, by failure class."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from .states import TaskState

NEVER_RETRIED = frozenset({"permanent"})


@dataclass(frozen=True)
class Decision:
    state: TaskState
    ready_at: float | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped; a stated wait is honoured as given."""

    base_s: float
    cap_s: float
    rng: random.Random = random.Random()

    def backoff(self, attempt: int) -> float:
        return self.rng.uniform(0, min(self.cap_s, self.base_s * 2 ** max(0, attempt - 1)))

    def decide(self, task: dict[str, Any], kind: str, wait_s: float | None, now: float) -> Decision:
        if kind in NEVER_RETRIED or task["attempts"] >= task["budget"]:
            return Decision(TaskState.FAILED)
        delay = wait_s if wait_s is not None else self.backoff(task["attempts"])
        return Decision(TaskState.RETRY_WAIT, now + delay)
