"""Unit tests for tabfleetd.schedule.window and the pacing built on it: learning a site's window from its refusals."""

from __future__ import annotations

from typing import Any

import pytest

from tabfleetd.schedule.limits import Limits
from tabfleetd.schedule.window import DROP_BATCH, LOG_KEPT, Estimate, SendLog, WindowPacer, candidates, choose


def test_a_burst_from_idle_reveals_the_window() -> None:
    """Ten sends from t=0, the eleventh refused at 4 s with "try again in 16 s": 10 per 20 s."""
    found = candidates([float(i) * 0.4 for i in range(10)], refused_at=4.0, wait_s=16.0)
    assert found == [Estimate(10, 20.0)]
    assert found[0].per_min == pytest.approx(30.0)


def test_a_gap_shorter_than_the_wait_is_no_window_start() -> None:
    """Only a send with a quiet gap of at least the stated wait before it can start the window."""
    admitted = [0.0, 1.0, 30.0, 31.0, 32.0]
    found = candidates(admitted, refused_at=33.0, wait_s=18.0)
    assert Estimate(3, 21.0) in found and all(c.count != 2 for c in found)


def test_the_known_window_length_wins() -> None:
    """Later refusals are read against the window length already learned."""
    found = [Estimate(3, 21.0), Estimate(5, 51.0)]
    assert choose(found, Estimate(4, 50.5)) == Estimate(5, 51.0)
    assert choose(found, None) == Estimate(3, 21.0)
    assert choose([], None) is None


def test_the_pacer_keeps_inside_the_learned_window() -> None:
    """With 3 per 10 s learned, a fourth send waits until the first leaves the window (plus slack)."""
    log, pacer = SendLog(), WindowPacer(Estimate(3, 10.0))
    for i, t in enumerate((0.0, 1.0, 2.0)):
        log.dispatched(f"k{i}", t)
        log.answered(f"k{i}", t, refused=False)
    assert pacer.wait(log, 2.0) == pytest.approx(8.5)
    assert pacer.wait(log, 10.5) == 0.0


def test_refusals_inside_one_window_are_one_signal() -> None:
    """Five refusals of sends made before the window reopens count once."""
    log, pacer = SendLog(), WindowPacer()
    for i in range(5):
        log.dispatched(f"k{i}", float(i))
        log.answered(f"k{i}", float(i), refused=False)
    news = [pacer.on_refusal(log, 5.0 + i / 10, 10.0, 6.0) for i in range(5)]
    assert news == [True, False, False, False, False]
    assert pacer.signals == 1


@pytest.mark.parametrize(("limit", "window", "workers", "latency"),
                         [(10, 20.0, 4, 0.2), (48, 60.0, 5, 2.0), (5, 10.0, 2, 0.1), (3, 10.0, 5, 0.5)])
def test_a_sites_own_limit_is_reached_to_ninety_percent(sim: Any, limit: int, window: float, workers: int,
                                                         latency: float) -> None:
    """Nothing configured: after the first window the fleet sends at least 90 % of N per S, with at most one refusal a window."""
    site = sim.SlidingSite(limit, window)
    sim.simulate(site, workers, latency, 20 * window)
    admitted, refused = sim.per_window(site, 2 * window, 20 * window)
    assert sum(admitted) >= 0.9 * limit * len(admitted), admitted
    assert max(refused) <= 1, refused


def test_five_refusals_in_one_window_halve_nothing_twice(sim: Any) -> None:
    """Five workers hitting a full window at once give one congestion signal, not five."""
    site = sim.SlidingSite(3, 10.0)
    limits = sim.simulate(site, 5, 0.5, 9.0)
    view = limits.view(9.0)["sites"]["s"]
    assert view["rate_limit_hits"] >= 4 and view["signals"] == 1, view
    assert view["scope"] == "site" and view["window"]["count"] == 3


def test_an_account_limit_is_learned_as_the_accounts(sim: Any) -> None:
    """Accounts refused while others get through: each account paces itself, the site is not held."""
    site = sim.SlidingSite(4, 30.0, per_account=True)
    limits = Limits(0, 0)
    limits.site("s")
    # Account a0 bursts first; a1 starts later and gets through while a0 is refused.
    for i in range(5):
        limits.take("s", "a0", f"a{i}", float(i))
        stated = site.arrive("a0", float(i))
        if stated is None:
            limits.on_answer("s", "a0", f"a{i}", float(i), 0.5, i + 0.5)
        else:
            limits.on_rate_limit("s", "a0", f"a{i}", float(i), float(stated), "try again", i + 0.5)
    limits.take("s", "a1", "b0", 6.0)
    assert site.arrive("a1", 6.0) is None
    limits.on_answer("s", "a1", "b0", 6.0, 0.5, 6.5)
    assert limits.site("s").scope == "account"
    assert limits.wait("s", "a1", 7.0) == 0.0
    assert limits.wait("s", "a0", 7.0) > 20.0
    assert limits.accounts["a0"].window.estimate == Estimate(4, 30.0)


def test_a_pinned_account_scope_never_holds_the_site(sim: Any) -> None:
    """With limit_scope = "account" (the chatgpt profile), one account's cooldown leaves the others sending."""
    site = sim.SlidingSite(2, 60.0, per_account=True)
    limits = sim.simulate(site, 3, 1.0, 600.0, scope="account")
    view = limits.view(600.0)["sites"]["s"]
    assert view["scope"] == "account" and view["holding_s"] == 0.0
    admitted, _ = sim.per_window(site, 120.0, 600.0)
    assert sum(admitted) >= 0.9 * 2 * 3 * len(admitted), admitted


def test_send_log_stays_bounded_and_forgets_lost_answers() -> None:
    """A log fed far past its cap keeps at most LOG_KEPT (+ one drop batch) sends, and keys whose answer never came go with them."""
    log = SendLog()
    for i in range(5 * LOG_KEPT):
        log.dispatched(f"k{i}", float(i))
        if i % 2:
            log.answered(f"k{i}", float(i) + 0.5, refused=False)  # every other answer is lost
    assert LOG_KEPT <= len(log) <= LOG_KEPT + DROP_BATCH
    assert len(log._waiting) <= (LOG_KEPT + DROP_BATCH) // 2 + 1
    assert not log.answered("k0", 1.0, refused=False)  # long gone
    assert log.answered(f"k{5 * LOG_KEPT - 2}", 5 * LOG_KEPT - 1.5, refused=True)
    admitted = log.admitted(float(5 * LOG_KEPT))
    assert len(admitted) == len(log) - 1 and admitted == sorted(admitted)


def test_pruning_drops_only_the_old_sends() -> None:
    """prune lets go of the sends that went out before the horizon and keeps the rest in order."""
    log = SendLog()
    for i in range(10):
        log.dispatched(f"k{i}", float(i))
        log.answered(f"k{i}", float(i) + 0.25, refused=False)
    log.prune(5.0)
    assert log.admitted(100.0) == [5.25, 6.25, 7.25, 8.25, 9.25]
