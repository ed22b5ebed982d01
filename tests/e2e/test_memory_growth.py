"""The memory_growth op on a real daemon: off by default, and with trace_memory_frames the sites that grew."""

from __future__ import annotations

from typing import Any

import pytest

from tabfleetctl.client import DaemonError

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def test_memory_growth_is_off_by_default(make_daemon: Any) -> None:
    """Without trace_memory_frames the op answers that tracing is off (and its RSS); a bad `top` is refused."""
    d = make_daemon(workers=1)
    reply = d.call("memory_growth")
    assert reply["tracing"] is False and set(reply) == {"tracing", "rss_mb"} and reply["rss_mb"] > 0
    with pytest.raises(DaemonError, match="'top' must be between 1 and 200"):
        d.call("memory_growth", {"top": 0})


def test_memory_growth_diffs_against_the_previous_call(make_daemon: Any) -> None:
    """With tracing on, the first call sets the baseline and the second lists what grew in between, daemon sites first."""
    d = make_daemon(workers=1, config={"trace_memory_frames": 6})
    first = d.call("memory_growth", {"top": 5})
    assert first["tracing"] and first["frames"] == 6 and first["since_s"] is None
    d.wait_job(d.submit([f"a lamp {i}" for i in range(6)], "latency=0.05"))
    second = d.call("memory_growth", {"top": 50})
    assert second["since_s"] > 0 and second["traced_mb"] > 0 and 0 < len(second["sites"]) <= 50
    assert all(s["growth_kib"] > 0 and s["stack"] for s in second["sites"])
    assert any("/tabfleetd/" in s["where"] for s in second["sites"])  # the daemon's own code is named where it allocates
    assert not any("tracemalloc.py" in s["stack"][0] for s in second["sites"])
    assert "tracing allocations with tracemalloc (6 frames each)" in d.log_text()
