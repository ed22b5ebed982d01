"""Unit tests for tabfleetd.service.memtrace: the growth between snapshots, and the trace_memory_frames key."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from tabfleetd.service import memtrace
from tabfleetd.settings.config import load
from tabfleetd.errors import ConfigError

HOME = Path("/home/someone")
held: list[bytes] = []


def grow(blocks: int) -> None:
    """Allocations attributed to one line of this file."""
    held.extend(bytes(1024) + bytes([i % 256]) for i in range(blocks))


@pytest.fixture
def tracing() -> Iterator[None]:
    was_on = tracemalloc.is_tracing()
    assert memtrace.start(5)
    yield
    held.clear()
    if not was_on:
        tracemalloc.stop()


def test_off_says_so() -> None:
    """Without tracing the tracker answers that it is off, rather than failing."""
    frames = tracemalloc.get_traceback_limit() if tracemalloc.is_tracing() else 0
    tracemalloc.stop()  # python -X tracemalloc: off for this test, on again after it
    try:
        assert memtrace.start(0) is False
        assert memtrace.GrowthTracker().growth(5) == {"tracing": False}
    finally:
        if frames:
            tracemalloc.start(frames)


def test_growth_since_previous_call_names_the_line(tracing: None) -> None:
    """The second call reports what grew since the first, with this file's allocating line on top."""
    tracker = memtrace.GrowthTracker()
    first = tracker.growth(5)
    assert first["tracing"] and first["since_s"] is None
    grow(2000)
    second = tracker.growth(5)
    assert second["since_s"] is not None
    top = second["sites"][0]
    assert top["stack"][0].startswith(__file__ + ":") and top["growth_kib"] >= 2000
    assert top["count_growth"] >= 2000
    assert second["traced_mb"] >= 2


def test_nothing_grew_reports_no_big_site(tracing: None) -> None:
    """Between two calls with nothing kept, no site grows by a megabyte: the diff is against the last call, not the start."""
    tracker = memtrace.GrowthTracker()
    grow(2000)
    tracker.growth(5)
    again = tracker.growth(5)
    assert all(s["growth_kib"] < 1024 for s in again["sites"])


def test_tracemalloc_itself_is_left_out(tracing: None) -> None:
    """The snapshots and the totals kept between calls (tracemalloc.py, memtrace.py) are not the daemon's growth."""
    tracker = memtrace.GrowthTracker()
    tracker.growth(50)
    later = tracker.growth(50)
    assert not any(f in s["stack"][0] for s in later["sites"] for f in (tracemalloc.__file__, memtrace.__file__))


def test_growth_async_runs_in_a_thread(tracing: None) -> None:
    """The coroutine form answers like the blocking one (it runs in the loop's executor)."""
    reply = asyncio.run(memtrace.GrowthTracker().growth_async(3))
    assert reply["tracing"] and len(reply["sites"]) <= 3


def test_config_key_bounds(tmp_path: Path) -> None:
    """trace_memory_frames defaults to 0 (off) and accepts 1 to 100 only."""
    assert load(None, {}, {}, HOME).trace_memory_frames == 0
    assert load(None, {"trace_memory_frames": 25}, {}, HOME).trace_memory_frames == 25
    with pytest.raises(ConfigError, match="trace_memory_frames"):
        load(None, {"trace_memory_frames": 101}, {}, HOME)
    with pytest.raises(ConfigError, match="trace_memory_frames"):
        load(None, {"trace_memory_frames": -1}, {}, HOME)
