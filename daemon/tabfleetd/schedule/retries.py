"""Failure policy: what a failed attempt leads to, one small policy class per failure class.

The site adapter decides the class; the policy decides the task's next state,
when it may run again, whether the attempt counts against its budget, and what
happens to the worker that saw the failure.

    class       task                          attempt   worker
    transient   retry after backoff           counts    -
    timeout     retry after backoff           counts    page replaced (browser recycled if that fails)
    crash       retry after backoff           counts    browser recycled (by the worker)
    rate_limit  retry after the stated wait   refunded  -
    permanent   failed at once                counts    -
    auth        pending again at once         refunded  stops taking tasks until restarted
    challenge   pending again at once         refunded  stops taking tasks until restarted
    unreachable when the site answers again   refunded  -  (the site's dispatch pauses with backoff)
    disk        when the output has room      refunded  -  (the job waits; a finished image is kept)
    detached    pending again at once         refunded  -  (its remote browser is gone; it takes no task until back)
    aborted     as the store has it           refunded  page replaced (its job was cancelled while it ran)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from ..states import TaskState

TRANSIENT, TIMEOUT, CRASH, RATE_LIMIT, PERMANENT, AUTH, CHALLENGE, UNREACHABLE, DISK, DETACHED, ABORTED = (
    "transient", "timeout", "crash", "rate_limit", "permanent", "auth", "challenge", "unreachable", "disk", "detached",
    "aborted")
WORKER_BLOCKING = frozenset({AUTH, CHALLENGE})
NEVER_RETRIED = frozenset({PERMANENT})
FREE_RATE_LIMITS = 10  # rate-limited attempts of one task that do not count against its budget


@dataclass(frozen=True)
class Decision:
    state: TaskState
    ready_at: float | None = None
    refund: bool = False  # the attempt does not count against the task's budget
    block_worker: bool = False


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]."""

    base_s: float
    cap_s: float
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int) -> float:
        return self.rng.uniform(0, min(self.cap_s, self.base_s * 2 ** max(0, attempt - 1)))


class Policy:
    """A failure class's rule; subclasses override decide()."""

    def decide(self, task: dict[str, Any], wait_s: float | None, now: float, backoff: Backoff) -> Decision:
        if task["attempts"] >= task["budget"]:
            return Decision(TaskState.FAILED)
        return Decision(TaskState.RETRY_WAIT, now + backoff.delay(task["attempts"]))


class RetryWithBackoff(Policy):
    pass


class HonourStatedWait(Policy):
    """Rate limits are the site's, not the prompt's: wait as told and keep the budget.

    Only so often, though: a prompt that meets a rate limit every time (say the
    site answers it that way whatever the pace) must end some day, so past
    FREE_RATE_LIMITS its rate-limited attempts count like any other.
    """

    def decide(self, task: dict[str, Any], wait_s: float | None, now: float, backoff: Backoff) -> Decision:
        free = task.get("rate_limits", 0) < FREE_RATE_LIMITS
        if not free and task["attempts"] >= task["budget"]:
            return Decision(TaskState.FAILED)
        delay = wait_s if wait_s is not None and wait_s >= 0 else backoff.delay(task["attempts"])
        return Decision(TaskState.RETRY_WAIT, now + delay, refund=free)


class FailAtOnce(Policy):
    def decide(self, task: dict[str, Any], wait_s: float | None, now: float, backoff: Backoff) -> Decision:
        return Decision(TaskState.FAILED)


class BlockWorker(Policy):
    """The account, not the prompt, is the problem: give the task to another worker."""

    def decide(self, task: dict[str, Any], wait_s: float | None, now: float, backoff: Backoff) -> Decision:
        return Decision(TaskState.PENDING, refund=True, block_worker=True)


class GoElsewhere(Policy):
    """The task never reached a browser (the worker's remote browser was gone): another worker takes it, free."""

    def decide(self, task: dict[str, Any], wait_s: float | None, now: float, backoff: Backoff) -> Decision:
        return Decision(TaskState.PENDING, refund=True)


class WaitElsewhere(Policy):
    """The fault is not the prompt's (the site is down, the disk is full): wait as long as the scheduler says, free."""

    def decide(self, task: dict[str, Any], wait_s: float | None, now: float, backoff: Backoff) -> Decision:
        return Decision(TaskState.RETRY_WAIT, now + (wait_s if wait_s is not None else backoff.delay(1)), refund=True)


POLICIES: dict[str, Policy] = {
    TRANSIENT: RetryWithBackoff(), TIMEOUT: RetryWithBackoff(), CRASH: RetryWithBackoff(),
    RATE_LIMIT: HonourStatedWait(), PERMANENT: FailAtOnce(), AUTH: BlockWorker(), CHALLENGE: BlockWorker(),
    UNREACHABLE: WaitElsewhere(), DISK: WaitElsewhere(), DETACHED: GoElsewhere(),
    # The task is cancelled in the store already, which keeps it so; pending is what a job resumed meanwhile needs.
    ABORTED: GoElsewhere(),
}


@dataclass(frozen=True)
class RetryPolicy(Backoff):
    """Picks the policy for a failure class (unknown classes count as transient), backing off as a Backoff."""

    def backoff(self, attempt: int) -> float:
        return self.delay(attempt)

    def decide(self, task: dict[str, Any], kind: str, wait_s: float | None, now: float) -> Decision:
        return POLICIES.get(kind, POLICIES[TRANSIENT]).decide(task, wait_s, now, self)
