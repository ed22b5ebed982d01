"""Unit tests for the event log, the moving rate and the subscription that streams snapshots."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tabfleetd.store.events import EVENT_PROMPT_CHARS, EventLog
from tabfleetd.schedule.rate import eta_seconds, moving_rate_per_min
from tabfleetd.control.subscription import Subscription, trim_finished


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(body())


def job(state: str = "active", job_id: str = "j1", **counts: int) -> dict[str, Any]:
    base = {"done": 0, "failed": 0, "running": 0, "pending": 0, "cancelled": 0} | counts
    return {"id": job_id, "state": state, "total": sum(base.values()), "finished": None, **base}


# -- EventLog -------------------------------------------------------------------


def test_recent_filters_by_job_kind_and_seq() -> None:
    """recent() picks one job's events, some kinds, or those after a seq, oldest first, newest `limit`."""
    log = EventLog()
    for i in range(6):
        log.emit("task_done" if i % 2 else "task_retry", job="a" if i < 4 else "b", index=i)
    assert [e["index"] for e in log.recent("a")] == [0, 1, 2, 3]
    assert [e["index"] for e in log.recent(kinds=["task_done"])] == [1, 3, 5]
    assert [e["index"] for e in log.recent(limit=2)] == [4, 5]
    assert [e["index"] for e in log.recent(after=log.recent()[3]["seq"])] == [4, 5]
    assert [e["index"] for e in log.recent(limit=0)] == list(range(6))


def test_log_is_bounded() -> None:
    """The log keeps only its newest `capacity` events."""
    log = EventLog(capacity=3)
    for i in range(10):
        log.emit("x", index=i)
    assert [e["index"] for e in log.recent(limit=0)] == [7, 8, 9]


def test_an_event_names_a_long_prompt_by_its_start() -> None:
    """A 4,000-character prompt is cut in its event, so the log's size does not follow the prompts' length."""
    log = EventLog()
    event = log.emit("task_done", prompt="p" * 4000)
    assert len(event["prompt"]) == EVENT_PROMPT_CHARS and event["prompt"].endswith("…")
    assert log.emit("task_done", prompt="short")["prompt"] == "short"


def test_slow_subscriber_loses_oldest_and_it_is_counted() -> None:
    """A full subscriber queue drops its oldest event, emit never blocks, and the drop is counted."""
    log = EventLog()
    queue = log.subscribe(capacity=2)
    for i in range(5):
        log.emit("x", index=i)
    assert [queue.get_nowait()["index"] for _ in range(2)] == [3, 4]
    assert log.dropped == 3
    log.unsubscribe(queue)
    assert not log.subscribers


def test_listener_sees_every_event_and_a_broken_one_is_contained() -> None:
    """Listeners get each event synchronously; one that raises does not stop emit or the others."""
    log = EventLog()
    seen: list[int] = []

    def broken(event: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    log.listen(broken)
    log.listen(lambda e: seen.append(e["index"]))
    for i in range(3):
        log.emit("x", index=i)
    assert seen == [0, 1, 2]
    log.unlisten(broken)
    assert len(log.listeners) == 1


# -- rate and ETA -----------------------------------------------------------------


def test_rate_is_exact_for_a_steady_job() -> None:
    """One completion every 2 s reads as 30/min, whether the window is full or not."""
    times = [100.0 + 2 * i for i in range(10)]
    assert moving_rate_per_min(times, now=times[-1], window_s=120) == 30.0
    long_run = [100.0 + 2 * i for i in range(200)]
    assert moving_rate_per_min(long_run, now=long_run[-1], window_s=120) == 30.5  # 61 results in the 120 s window


def test_rate_does_not_overshoot_on_two_results() -> None:
    """Two results a second apart are 60/min, not 120/min; one result alone gives no rate."""
    assert moving_rate_per_min([10.0, 11.0], now=11.0, window_s=120) == 60.0
    assert moving_rate_per_min([10.0], now=11.0, window_s=120) == 0.0
    assert moving_rate_per_min([], now=11.0, window_s=120) == 0.0


def test_early_rate_counts_from_the_first_dispatch() -> None:
    """Three workers at 3 s each: the first three images, landing together, read as the ideal 60/min, not a spike."""
    dispatched = 100.0
    first = [103.0, 103.02, 103.05]
    assert moving_rate_per_min(first, now=103.05, window_s=120, since=dispatched) == round(3 * 60 / 3.05, 2)
    assert moving_rate_per_min(first, now=103.05, window_s=120) == 2400.0  # from the first completion: the spike seen before
    # Before anything finishes the rate is 0, and a stall after the first results lowers it.
    assert moving_rate_per_min([], now=102.0, window_s=120, since=dispatched) == 0.0
    assert moving_rate_per_min(first, now=106.0, window_s=120, since=dispatched) == 30.0
    # Once the job is older than the window, the window alone counts.
    assert moving_rate_per_min([150.0 + i for i in range(100)], now=250.0, window_s=120, since=dispatched) == 50.0


def test_rate_falls_during_a_stall() -> None:
    """With nothing finishing, the rate drops as time passes, and is 0 once the window is empty."""
    times = [100.0 + i for i in range(11)]
    busy = moving_rate_per_min(times, now=110.0, window_s=120)
    stalled = moving_rate_per_min(times, now=170.0, window_s=120)
    assert busy == 60.0 and 0 < stalled < busy / 5
    assert moving_rate_per_min(times, now=500.0, window_s=120) == 0.0


def test_eta() -> None:
    """ETA is remaining over rate; 0 with nothing left; unknown with no rate."""
    assert eta_seconds(30, 60.0) == 30
    assert eta_seconds(0, 0.0) == 0
    assert eta_seconds(5, 0.0) is None


# -- Subscription -----------------------------------------------------------------


class Fleet:
    """A stand-in for the daemon's status op: a job whose counts the test moves."""

    def __init__(self) -> None:
        self.job = job(pending=4)
        self.snapshots = 0

    async def snapshot(self) -> dict[str, Any]:
        self.snapshots += 1
        return {"jobs": [dict(self.job)], "workers": [], "memory": {}}


def test_event_pushes_a_snapshot_before_the_interval() -> None:
    """An event about the job brings the next snapshot at once, carrying that event."""
    async def body() -> None:
        log, fleet = EventLog(), Fleet()
        items = Subscription(log, fleet.snapshot, "j1", interval_s=30).items()
        first = await anext(items)
        assert first["events"] == [] and first["missed_events"] is False
        started = time.monotonic()
        nxt = asyncio.ensure_future(anext(items))
        await asyncio.sleep(0.05)
        fleet.job = job(done=1, pending=3)
        log.emit("task_done", job="j1", index=1)
        second = await asyncio.wait_for(nxt, 5)
        assert time.monotonic() - started < 2
        assert [e["index"] for e in second["events"]] == [1] and second["jobs"][0]["done"] == 1
        await items.aclose()
        assert not log.subscribers
    run(body)


def test_other_jobs_events_do_not_wake_it() -> None:
    """Events of another job do not bring a snapshot early, nor appear in one."""
    async def body() -> None:
        log, fleet = EventLog(), Fleet()
        items = Subscription(log, fleet.snapshot, "j1", interval_s=0.3).items()
        await anext(items)
        started = time.monotonic()
        nxt = asyncio.ensure_future(anext(items))
        await asyncio.sleep(0.05)
        log.emit("task_done", job="other", index=1)
        frame = await asyncio.wait_for(nxt, 5)
        assert time.monotonic() - started >= 0.25
        assert frame["events"] == []
        await items.aclose()
    run(body)


def test_a_burst_conflates_into_one_frame() -> None:
    """Ten results in a burst arrive in one frame, built from one snapshot."""
    async def body() -> None:
        log, fleet = EventLog(), Fleet()
        items = Subscription(log, fleet.snapshot, None, interval_s=30).items()
        await anext(items)
        nxt = asyncio.ensure_future(anext(items))
        await asyncio.sleep(0.01)
        for i in range(10):
            log.emit("task_done", job="j1", index=i)
            await asyncio.sleep(0.005)
        frame = await asyncio.wait_for(nxt, 5)
        assert [e["index"] for e in frame["events"]] == list(range(10))
        assert fleet.snapshots == 2
        await items.aclose()
    run(body)


def test_a_slow_reader_gets_a_fresh_snapshot_and_is_told_of_lost_events() -> None:
    """Events beyond the queue while the client is slow are reported as missed; the snapshot is built late, fresh."""
    async def body() -> None:
        log, fleet = EventLog(), Fleet()
        items = Subscription(log, fleet.snapshot, None, interval_s=30).items()
        await anext(items)
        for i in range(600):  # more than the subscription's queue holds, while nobody pulls
            log.emit("task_done", job="j1", index=i)
        fleet.job = job(done=4)
        frame = await asyncio.wait_for(anext(items), 5)
        assert frame["missed_events"] is True
        assert frame["events"][-1]["index"] == 599 and len(frame["events"]) == 50
        assert frame["jobs"][0]["done"] == 4 and fleet.snapshots == 2
        await items.aclose()
    run(body)


def test_it_ends_after_the_frame_showing_the_job_ended() -> None:
    """With a job named, the frame that shows it finished is the last one."""
    async def body() -> None:
        log, fleet = EventLog(), Fleet()
        fleet.job = job(state="done", done=4)
        items = Subscription(log, fleet.snapshot, "j1", interval_s=30).items()
        assert (await anext(items))["jobs"][0]["state"] == "done"
        with pytest.raises(StopAsyncIteration):
            await anext(items)
        assert not log.subscribers
    run(body)


def test_replay_after_a_seq() -> None:
    """With `after`, the first frame carries the job's events since that seq (worker events too)."""
    async def body() -> None:
        log, fleet = EventLog(), Fleet()
        first = log.emit("task_done", job="j1", index=1)
        log.emit("task_done", job="j1", index=2)
        log.emit("task_done", job="other", index=3)
        log.emit("worker_exited", worker=1)
        items = Subscription(log, fleet.snapshot, "j1", interval_s=30, after=first["seq"]).items()
        frame = await anext(items)
        assert [(e["kind"], e.get("index")) for e in frame["events"]] == [("task_done", 2), ("worker_exited", None)]
        await items.aclose()
    run(body)


def test_trim_finished_keeps_unfinished_and_the_latest_finished() -> None:
    """Watching everything shows every unfinished job and only the five that finished last."""
    jobs = [job(state="done", job_id=f"d{i}", done=1) | {"finished": float(i)} for i in range(8)]
    jobs.insert(3, job(job_id="live", pending=1))
    kept = [j["id"] for j in trim_finished(jobs)]
    assert kept == ["live", "d3", "d4", "d5", "d6", "d7"]
