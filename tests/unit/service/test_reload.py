"""Unit tests for tabfleetd.service.reload: only changed keys apply, each to its part of the daemon; the rest wait for a restart."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tabfleetd.service import reload
from tabfleetd.settings.config import RELOADABLE, load
from tabfleetd.schedule.limits import Limits
from tabfleetd.schedule.retries import RetryPolicy

HOME = Path("/home/someone")


class FakeFleet:
    def __init__(self, config: Any) -> None:
        self.config = config
        self.sizes: list[int] = []

    def resize(self, count: int) -> None:
        self.sizes.append(count)


class FakeScheduler:
    def __init__(self) -> None:
        self.policy = RetryPolicy(2.0, 120.0)
        self.deadline_s = 300.0
        self.kicks = 0

    def kick(self) -> None:
        self.kicks += 1


def daemon(**overrides: Any) -> Any:
    config = load(None, overrides, {}, HOME)
    return SimpleNamespace(config=config, fleet=FakeFleet(config), scheduler=FakeScheduler(), limits=Limits(0, 0))


def test_changed_reloadable_keys_apply_and_others_wait(caplog: pytest.LogCaptureFixture) -> None:
    """workers, rates, retries and deadline reach the fleet, pacing and scheduler; demo_port is named for a restart."""
    d = daemon(workers=2)
    new = load(None, {"workers": 4, "site_rate_per_min": 90.0, "retry_base_s": 1.0, "task_deadline_s": 60.0,
                      "demo_port": 9999}, {}, HOME)
    with caplog.at_level(logging.INFO, "tabfleetd.service.reload"):
        live, later = reload.apply(d, new)
    assert live == ["retry_base_s", "site_rate_per_min", "task_deadline_s", "workers"] and later == ["demo_port"]
    assert d.fleet.sizes == [4] and d.config.workers == 4 and d.config.demo_port == 0
    assert d.limits.site("demo").rate.current == 90.0
    assert d.scheduler.policy.base_s == 1.0 and d.scheduler.deadline_s == 60.0 == d.fleet.config.task_deadline_s
    assert "config key demo_port changed to 9999; it takes effect when tabfleetd next starts" in caplog.text
    assert d.scheduler.kicks == 1


def test_an_unchanged_file_changes_nothing() -> None:
    """A fleet resized at run time (workers set) keeps its size when the file's workers did not change."""
    d = daemon(workers=2)
    assert reload.apply(d, load(None, {"workers": 2}, {}, HOME)) == ([], [])
    assert d.fleet.sizes == []


def test_reloadable_keys_are_real_keys() -> None:
    """Every key the reload may apply exists in the config."""
    assert RELOADABLE <= set(reload.FIELDS)
