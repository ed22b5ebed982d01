"""Unit tests for tabfleetd.schedule.outages and tabfleetd.schedule.held: site outages, disk waits and held images."""

from __future__ import annotations

import random

from tabfleetd.schedule.held import HeldImages
from tabfleetd.schedule.outages import BACKOFF_CAP_S, DISK_CHECK_S, DiskWaits, SiteOutages


def test_an_outage_pauses_the_site_then_lets_one_probe_through() -> None:
    """A down site waits out its backoff, then one task goes out and the others wait for its answer."""
    outages = SiteOutages(rng=random.Random(1))
    retry_at = outages.failed("demo", "ERR_CONNECTION_REFUSED", 100.0)
    assert 101.0 <= retry_at <= 102.0
    assert outages.wait("demo", 100.5) > 0 and outages.wait("other", 100.5) == 0.0
    assert outages.wait("demo", retry_at) == 0.0
    outages.sending("demo")
    assert outages.wait("demo", retry_at) == BACKOFF_CAP_S
    assert outages.reached("demo") and outages.wait("demo", retry_at) == 0.0


def test_only_a_failed_probe_lengthens_the_backoff() -> None:
    """Tasks already out when the site went down fail too, but they are the same outage."""
    outages = SiteOutages(rng=random.Random(2))
    first = outages.failed("demo", "refused", 0.0)
    assert outages.failed("demo", "refused", 0.5) == first
    outages.sending("demo")
    second = outages.failed("demo", "refused", first)
    assert outages.down["demo"].failures == 2 and second - first >= 2.0
    for _ in range(10):
        outages.sending("demo")
        last = outages.down["demo"].retry_at
        outages.failed("demo", "refused", last)
    assert outages.down["demo"].retry_at - last <= BACKOFF_CAP_S


def test_a_full_output_waits_for_a_check() -> None:
    """A job whose output is full waits DISK_CHECK_S between free-space checks and shows why."""
    disk = DiskWaits()
    disk.full("job1", "only 0.0 MB free", 10.0)
    assert disk.wait("job1", 10.0) == DISK_CHECK_S and disk.wait("job2", 10.0) == 0.0
    assert disk.view("job1", 11.0)["reason"] == "only 0.0 MB free"
    assert disk.room("job1") and not disk.room("job1")


def test_held_images_are_bounded_oldest_first() -> None:
    """Past the bound the oldest held image is dropped (it will be made again), never the newest."""
    held = HeldImages(100)
    held.hold(b"j/1", b"a" * 60)
    held.hold(b"j/2", b"b" * 60)
    assert held.get(b"j/1") is None and held.get(b"j/2") == b"b" * 60 and held.size == 60
    held.hold(b"j/3", b"c" * 200)
    assert held.get(b"j/3") is None and len(held) == 1
    held.drop(b"j/2")
    assert held.size == 0
