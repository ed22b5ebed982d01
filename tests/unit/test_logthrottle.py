"""A warning a client can trigger at will is logged once per interval, with a count of the rest."""

from __future__ import annotations

import logging

import pytest

from tabfleetd.logthrottle import ThrottledLog


def test_one_line_per_interval_with_the_held_back_count(caplog: pytest.LogCaptureFixture) -> None:
    """1000 refusals within one interval make one line; the next interval's line counts the 999 held back."""
    now = [0.0]
    throttled = ThrottledLog(logging.getLogger("t"), 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        for _ in range(1000):
            throttled.warning("refused uid %d", 7)
        now[0] = 10.5
        throttled.warning("refused uid %d", 8)
    assert [r.getMessage() for r in caplog.records] == ["refused uid 7", "refused uid 8 (999 more like it held back)"]
