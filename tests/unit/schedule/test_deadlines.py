"""Unit tests for tabfleetd.schedule.deadlines: answer deadlines learned from the site's answer times."""

from __future__ import annotations

import pytest

from tabfleetd.schedule.deadlines import FLOOR_S, MIN_SAMPLES, AnswerClock, answer_cap


def test_until_enough_answers_the_cap_applies() -> None:
    """With fewer than MIN_SAMPLES answers nothing is known, so the profile's cap is the deadline."""
    clock = AnswerClock()
    for _ in range(MIN_SAMPLES - 1):
        clock.record(2.0)
    assert clock.deadline(30.0) == 30.0


def test_a_two_second_site_gets_a_short_deadline() -> None:
    """Answers of about 2 s give three times their 95th percentile, not the 30 s cap."""
    clock = AnswerClock()
    for i in range(50):
        clock.record(2.0 + (i % 5) / 10)
    assert clock.deadline(30.0) == pytest.approx(3 * 2.4)


def test_a_sixty_second_site_is_not_cut_short() -> None:
    """Slow answers give a long deadline, up to the cap."""
    clock = AnswerClock()
    for _ in range(20):
        clock.record(60.0)
    assert clock.deadline(240.0) == 180.0
    assert clock.deadline(100.0) == 100.0


def test_the_floor_holds_for_very_fast_sites() -> None:
    """A site answering in 0.2 s still gets FLOOR_S: a moment's hiccup is not a lost request."""
    clock = AnswerClock()
    for _ in range(20):
        clock.record(0.2)
    assert clock.deadline(300.0) == FLOOR_S


def test_the_cap_is_the_profiles_answer_s_within_the_task_deadline() -> None:
    """answer_s caps the wait; 0 (or no profile) leaves the task deadline."""
    assert answer_cap({"timeouts": {"answer_s": 30.0}}, 300.0) == 30.0
    assert answer_cap({"timeouts": {"answer_s": 600.0}}, 300.0) == 300.0
    assert answer_cap({"timeouts": {"answer_s": 0.0}}, 300.0) == 300.0
    assert answer_cap(None, 120.0) == 120.0


def test_restore_keeps_the_samples() -> None:
    """The answer times survive a restart through state()/restore()."""
    clock = AnswerClock()
    for i in range(10):
        clock.record(1.0 + i)
    again = AnswerClock.restore(clock.state())
    assert again.deadline(300.0) == clock.deadline(300.0)


def test_a_site_turned_slow_is_not_starved_by_its_own_deadline() -> None:
    """Each answer timeout in a row doubles the wait (up to the cap); the next answer brings it back."""
    clock = AnswerClock()
    for _ in range(20):
        clock.record(0.3)
    assert clock.deadline(300.0) == FLOOR_S
    clock.timed_out()
    clock.timed_out()
    assert clock.deadline(300.0) == 4 * FLOOR_S
    for _ in range(10):
        clock.timed_out()
    assert clock.deadline(300.0) == 300.0
    clock.record(30.0)
    assert clock.deadline(300.0) == FLOOR_S  # one slow answer is not yet the 95th percentile
