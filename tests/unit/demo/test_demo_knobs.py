"""Unit tests for the demo site's knob check at submit: each bad value is named with what it should be."""

from __future__ import annotations

from tabfleetd.demo.demosite import knob_problems


def test_good_knobs_pass() -> None:
    """Every knob the demo site takes, with a good value, passes."""
    assert knob_problems({"latency": "2", "jitter": "0.5", "error_rate": "0.1", "error_message": "nope",
                          "rate_limit": "5/60", "hang_rate": "0", "lockup_rate": "0.01", "seed": "7",
                          "challenge": "3"}) == []


def test_each_bad_value_is_named_with_its_form() -> None:
    """A value that cannot be used says what the knob takes."""
    assert knob_problems({"latency": "abc", "error_rate": "2", "rate_limit": "often", "seed": "1.5",
                          "challenge": "-1"}) == [
        "site knob latency='abc' must be a number",
        "site knob error_rate='2' must be within 0..1",
        "site knob rate_limit='often' must be N/S, e.g. 5/60 (at most N per S seconds)",
        "site knob seed='1.5' must be a whole number",
        "site knob challenge='-1' must be within 0..600",
    ]
