"""Unit tests for tabfleetd.schedule.limits: token buckets, AIMD and account cool-downs."""

from __future__ import annotations

from typing import Any

import pytest

from tabfleetd.schedule.limits import AimdRate, Limits, TokenBucket


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
    """A rate limit cools down only the account that got it, for the stated time from its send."""
    limits = Limits(0, 0)
    limits.take("demo", "a", "k1", 995.0)
    limits.on_rate_limit("demo", "a", "k1", sent_at=1000.0, wait_s=30.0, message="try again in 30 seconds", now=1001.0)
    assert limits.cooling("a", 1000.0) == 30.0 and limits.cooling("b", 1000.0) == 0.0
    assert limits.account_view("a", 1010.0)["state"] == "cooling"
    assert limits.account_view("a", 1010.0)["cooling_until"] == 1030.0
    assert limits.account_view("a", 1031.0)["state"] == "active"
    assert limits.view(1000.0)["sites"]["demo"]["rate_limit_hits"] == 1


def test_a_quota_cools_its_account_and_leaves_the_site_alone() -> None:
    """A wait of hours is a plan quota: that account waits, the site's pace and the other accounts do not."""
    limits = Limits(0, 0)
    for i in range(5):
        limits.take("demo", "a", f"k{i}", float(i))
        limits.on_answer("demo", "a", f"k{i}", float(i), 1.0, float(i) + 1)
    limits.take("demo", "a", "q", 10.0)
    assert not limits.on_rate_limit("demo", "a", "q", 10.0, 23 * 3600.0, "resets in 23 hours", 11.0)
    assert limits.cooling("a", 12.0) > 22 * 3600
    assert limits.account_view("a", 12.0)["quota"] == "resets in 23 hours"
    assert limits.wait("demo", "b", 12.0) == 0.0
    assert limits.site("demo").window.estimate is None and limits.site("demo").signals == 0


def test_configured_site_rate_spaces_every_account() -> None:
    """site_rate_per_min is one bucket for all accounts together."""
    limits = Limits(60.0, 0)
    limits.take("demo", "a", "k1", 100.0)
    assert limits.wait("demo", "b", 100.0) == pytest.approx(1.0)
    assert limits.wait("demo", "b", 101.0) == 0.0
    assert limits.wait("other-site", "b", 100.0) == 0.0


def test_a_refusal_without_a_stated_wait_halves_the_achieved_rate_once() -> None:
    """With no wait to learn a window from, AIMD halves the rate, once per signal, not once per refusal."""
    limits = Limits(0, 0)
    limits.site("demo", "site")
    for i in range(30):
        limits.take("demo", f"w{i % 3}", f"k{i}", float(i))
        limits.on_answer("demo", f"w{i % 3}", f"k{i}", float(i), 1.0, float(i) + 1)
    for i, account in enumerate(("w0", "w1", "w2")):
        limits.take("demo", account, f"r{i}", 30.0 + i / 10)
    for i, account in enumerate(("w0", "w1", "w2")):
        limits.on_rate_limit("demo", account, f"r{i}", 30.0 + i / 10, None, "too many requests", 31.0)
    site = limits.site("demo")
    assert site.signals == 1 and site.answers == 3
    assert site.rate.current == pytest.approx(60.0 / 2, rel=0.1)  # the 30 sends above came one a second


def test_account_rate_applies_per_account() -> None:
    """account_rate_per_min limits each account on its own."""
    limits = Limits(0, 30.0)
    limits.take("demo", "1", "k", 0.0)
    assert limits.wait("demo", "1", 0.0) == pytest.approx(2.0)
    assert limits.wait("demo", "2", 0.0) == 0.0


def test_what_was_learned_survives_a_restart(sim: Any) -> None:
    """state() and restore() carry the learned window, scope, counts, coolings and answer times."""
    limits = Limits(0, 0)
    learned = sim.simulate(sim.SlidingSite(5, 10.0), 2, 0.2, 60.0)
    learned.cooling_until["a0"] = 9e9
    state = learned.state()
    fresh = Limits(0, 0)
    fresh.restore(state)
    before, after = learned.view(0.0)["sites"]["s"], fresh.view(0.0)["sites"]["s"]
    for key in ("window", "scope", "signals", "rate_limit_hits"):
        assert after[key] == before[key], key
    assert fresh.cooling("a0", 0.0) > 0
    assert fresh.site("s").answer_clock.percentile() == learned.site("s").answer_clock.percentile()
    assert limits.view(0.0)["sites"] == {}


def test_a_reload_gives_sites_and_accounts_their_new_configured_rate() -> None:
    """configure() after a reload: a configured pace takes the new rate, one the site halved stays under it, 0 lifts it."""
    limits = Limits(60.0, 0.0)
    limits.site("quiet")
    limits.site("halved").rate.on_rate_limit(observed_per_min=60.0)
    limits.account("worker-1")
    limits.configure(120.0, 30.0)
    assert limits.site("quiet").rate.current == 120.0
    assert limits.site("halved").rate.current == 30.0 and limits.site("halved").rate.ceiling == 120.0
    assert limits.account("worker-1").rate.current == 30.0
    assert limits.site("new").rate.current == 120.0  # sites seen later start from the new rate too
    limits.configure(0.0, 0.0)
    assert limits.site("quiet").rate.current is None and limits.account("worker-1").rate.current is None
    assert limits.site("halved").rate.current == 30.0, "what the site taught stays when the configured cap goes"
