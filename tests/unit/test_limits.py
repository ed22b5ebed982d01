"""Unit tests for tabfleetd.limits: token buckets, AIMD and account cool-downs."""

from __future__ import annotations

import pytest

from tabfleetd.limits import AimdRate, Limits, TokenBucket


def test_token_bucket_spaces_takes_by_its_rate() -> None:
    """At 60 per minute a second take must wait one second, then is allowed."""
    bucket = TokenBucket(60.0, stamp=100.0)
    assert bucket.wait(100.0) == 0.0
    bucket.take(100.0)
    assert bucket.wait(100.0) == pytest.approx(1.0)
    assert bucket.wait(100.5) == pytest.approx(0.5)
    assert bucket.wait(101.0) == 0.0


def test_token_bucket_burst_is_capped() -> None:
    """An idle bucket saves up no more than its burst."""
    bucket = TokenBucket(60.0, burst=2.0, tokens=0.0, stamp=0.0)
    assert bucket.wait(1000.0) == 0.0
    bucket.take(1000.0)
    bucket.take(1000.0)
    assert bucket.wait(1000.0) > 0


def test_aimd_halves_on_rate_limit_and_recovers_additively() -> None:
    """A configured rate halves on a rate limit and climbs back by 0.5 a success, never past its ceiling."""
    rate = AimdRate(40.0)
    rate.on_rate_limit(observed_per_min=100.0)
    assert rate.current == 20.0
    for _ in range(10):
        rate.on_success()
    assert rate.current == 25.0
    for _ in range(100):
        rate.on_success()
    assert rate.current == 40.0


def test_aimd_from_unlimited_starts_at_half_the_observed_rate() -> None:
    """Without a configured rate, the first rate limit sets half the rate achieved, and recovery has no ceiling."""
    rate = AimdRate(None)
    rate.on_success()
    assert rate.current is None
    rate.on_rate_limit(observed_per_min=30.0)
    assert rate.current == 15.0
    rate.on_rate_limit(observed_per_min=30.0)
    assert rate.current == 7.5
    for _ in range(200):
        rate.on_success()
    assert rate.current == 107.5


def test_aimd_has_a_floor() -> None:
    """Repeated rate limits never take the rate below one a minute."""
    rate = AimdRate(10.0)
    for _ in range(20):
        rate.on_rate_limit(observed_per_min=0.0)
    assert rate.current == 1.0


def test_limits_cool_the_account_that_was_rate_limited() -> None:
    """A rate limit cools down only the account that got it, for the stated time."""
    limits = Limits(0, 0)
    limits.on_rate_limit("demo", account=1, cool_s=30.0, now=10.0, wall_now=1000.0)
    assert limits.cooling(1, 1000.0) == 30.0 and limits.cooling(2, 1000.0) == 0.0
    assert limits.account_view(1, 1010.0) == {"state": "cooling", "cooling_until": 1030.0}
    assert limits.account_view(1, 1031.0)["state"] == "active"
    assert limits.view(1000.0)["sites"]["demo"]["rate_limit_hits"] == 1


def test_limits_pace_a_site_after_a_rate_limit() -> None:
    """After a rate limit the site's shared bucket spaces prompts from every account."""
    limits = Limits(0, 0)
    for t in range(10):
        limits.take("demo", account=t % 2, now=float(t))
    assert limits.wait("demo", 0, 10.0) == 0.0
    limits.on_rate_limit("demo", account=0, cool_s=5.0, now=10.0, wall_now=10.0)
    current = limits.site("demo").rate.current
    assert current is not None and 1.0 <= current < 60.0
    limits.take("demo", 1, 10.0)
    assert limits.wait("demo", 1, 10.0) == pytest.approx(60.0 / current)
    assert limits.wait("other-site", 1, 10.0) == 0.0


def test_account_rate_applies_per_account() -> None:
    """account_rate_per_min limits each account on its own."""
    limits = Limits(0, 30.0)
    limits.take("demo", 1, 0.0)
    assert limits.wait("demo", 1, 0.0) == pytest.approx(2.0)
    assert limits.wait("demo", 2, 0.0) == 0.0
