"""Unit tests for tabfleetd.schedule.retries: backoff with full jitter, budgets and stated waits."""

from __future__ import annotations

import random

import pytest

from tabfleetd.schedule.retries import NEVER_RETRIED, Decision, RetryPolicy
from tabfleetd.states import TaskState

NOW = 1_700_000_000.0


def _task(attempts: int, budget: int = 5) -> dict:
    return {"attempts": attempts, "budget": budget}


@pytest.mark.parametrize("attempt, ceiling", [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 30.0), (20, 30.0)])
def test_backoff_within_full_jitter_bounds(attempt: int, ceiling: float) -> None:
    """Each backoff lies in [0, min(cap, base * 2**(attempt-1))]."""
    policy = RetryPolicy(base_s=2.0, cap_s=30.0, rng=random.Random(1234))
    samples = [policy.backoff(attempt) for _ in range(2000)]
    assert all(0.0 <= s <= ceiling for s in samples)
    # Full jitter spreads over the whole range: something near each end shows up.
    assert min(samples) < ceiling * 0.05
    assert max(samples) > ceiling * 0.95


def test_backoff_matches_seeded_uniform() -> None:
    """The delay is exactly rng.uniform(0, ceiling), so a seeded rng makes it reproducible."""
    policy = RetryPolicy(base_s=1.5, cap_s=100.0, rng=random.Random(42))
    reference = random.Random(42)
    for attempt in (1, 2, 3, 4):
        assert policy.backoff(attempt) == reference.uniform(0, 1.5 * 2 ** (attempt - 1))


def test_backoff_cap_applies() -> None:
    """Past the cap the delay never exceeds cap_s, however many attempts were made."""
    policy = RetryPolicy(base_s=2.0, cap_s=5.0, rng=random.Random(7))
    assert max(policy.backoff(50) for _ in range(500)) <= 5.0


def test_backoff_attempt_zero_uses_base() -> None:
    """An attempt count of zero is treated like the first attempt, not a fraction of base."""
    policy = RetryPolicy(base_s=4.0, cap_s=100.0, rng=random.Random(3))
    samples = [policy.backoff(0) for _ in range(2000)]
    assert max(samples) <= 4.0
    assert max(samples) > 3.8


def test_transient_failure_with_budget_retries_later() -> None:
    """A transient failure with budget left goes to retry_wait with a ready time after now."""
    policy = RetryPolicy(base_s=2.0, cap_s=30.0, rng=random.Random(5))
    decision = policy.decide(_task(attempts=2, budget=5), "transient", None, NOW)
    assert decision.state is TaskState.RETRY_WAIT
    assert decision.ready_at is not None
    assert NOW <= decision.ready_at <= NOW + 4.0


def test_decide_uses_backoff_of_task_attempts() -> None:
    """Without a stated wait the delay is the backoff for the task's attempt count."""
    policy = RetryPolicy(base_s=2.0, cap_s=30.0, rng=random.Random(99))
    expected = random.Random(99).uniform(0, 8.0)  # attempts=3 -> ceiling 2 * 2**2
    decision = policy.decide(_task(attempts=3), "timeout", None, NOW)
    assert decision.ready_at == pytest.approx(NOW + expected)


@pytest.mark.parametrize("attempts", [0, 1, 4])
def test_permanent_is_never_retried(attempts: int) -> None:
    """A permanent failure fails the task at once, whatever budget is left."""
    policy = RetryPolicy(base_s=2.0, cap_s=30.0, rng=random.Random(1))
    decision = policy.decide(_task(attempts=attempts, budget=100), "permanent", 5.0, NOW)
    assert decision == Decision(TaskState.FAILED)
    assert decision.ready_at is None
    assert "permanent" in NEVER_RETRIED


@pytest.mark.parametrize("attempts, budget", [(5, 5), (6, 5), (1, 1), (3, 0)])
def test_out_of_budget_fails(attempts: int, budget: int) -> None:
    """A task whose attempts have reached its budget fails instead of retrying."""
    policy = RetryPolicy(base_s=2.0, cap_s=30.0, rng=random.Random(1))
    for kind in ("transient", "timeout", "crash", "something-unknown"):
        decision = policy.decide(_task(attempts=attempts, budget=budget), kind, 3.0, NOW)
        assert decision.state is TaskState.FAILED
        assert decision.ready_at is None and not decision.refund


@pytest.mark.parametrize("kind", ["rate_limit", "auth", "challenge"])
def test_site_side_failures_never_burn_the_budget(kind: str) -> None:
    """Rate limits, logouts and challenges refund the attempt, even for a task at the end of its budget."""
    policy = RetryPolicy(base_s=2.0, cap_s=30.0, rng=random.Random(1))
    decision = policy.decide(_task(attempts=5, budget=5), kind, 3.0, NOW)
    assert decision.state is not TaskState.FAILED and decision.refund


@pytest.mark.parametrize("kind", ["auth", "challenge"])
def test_auth_and_challenge_block_the_worker_and_requeue_at_once(kind: str) -> None:
    """A logged-out or challenged worker stops taking tasks; its task is pending again at once for another worker."""
    decision = RetryPolicy(base_s=2.0, cap_s=30.0).decide(_task(attempts=1), kind, None, NOW)
    assert decision.state is TaskState.PENDING and decision.block_worker and decision.ready_at is None


def test_a_task_that_met_a_detached_browser_goes_to_another_worker_free() -> None:
    """A remote browser gone before the task reached it: pending again at once, its attempt refunded, even the last."""
    decision = RetryPolicy(base_s=2.0, cap_s=30.0).decide(_task(attempts=5, budget=5), "detached", None, NOW)
    assert decision == Decision(TaskState.PENDING, None, refund=True, block_worker=False)


@pytest.mark.parametrize("kind", ["transient", "timeout", "crash", "permanent", "rate_limit", "detached"])
def test_other_classes_leave_the_worker_working(kind: str) -> None:
    """Only auth and challenge failures take a worker out of service."""
    assert not RetryPolicy(base_s=2.0, cap_s=30.0).decide(_task(attempts=1), kind, None, NOW).block_worker


def test_rate_limit_without_a_stated_wait_backs_off() -> None:
    """A rate limit that states no wait retries after the jittered backoff of its attempt."""
    policy = RetryPolicy(base_s=2.0, cap_s=30.0, rng=random.Random(4))
    decision = policy.decide(_task(attempts=3), "rate_limit", None, NOW)
    assert decision.state is TaskState.RETRY_WAIT and NOW <= decision.ready_at <= NOW + 8.0


def test_last_attempt_within_budget_still_retries() -> None:
    """One attempt short of the budget still earns a retry."""
    policy = RetryPolicy(base_s=2.0, cap_s=30.0, rng=random.Random(1))
    assert policy.decide(_task(attempts=4, budget=5), "transient", None, NOW).state is TaskState.RETRY_WAIT


@pytest.mark.parametrize("wait_s", [12.0, 0.0, 500.0, 0.25])
def test_stated_wait_is_used_exactly(wait_s: float) -> None:
    """A wait the site stated is used as given: no jitter, and not capped."""
    policy = RetryPolicy(base_s=2.0, cap_s=30.0, rng=random.Random(1))
    decision = policy.decide(_task(attempts=1), "rate_limit", wait_s, NOW)
    assert decision.state is TaskState.RETRY_WAIT
    assert decision.ready_at == NOW + wait_s


def test_stated_wait_does_not_consume_randomness() -> None:
    """Honouring a stated wait leaves the rng untouched."""
    rng = random.Random(8)
    policy = RetryPolicy(base_s=2.0, cap_s=30.0, rng=rng)
    before = rng.getstate()
    policy.decide(_task(attempts=1), "rate_limit", 12.0, NOW)
    assert rng.getstate() == before
