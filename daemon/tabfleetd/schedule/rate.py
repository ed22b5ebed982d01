"""The moving completion rate behind every rate and ETA that tabfleet shows."""

from __future__ import annotations

from collections.abc import Iterable


def moving_rate_per_min(finish_times: Iterable[float], now: float, window_s: float, since: float | None = None) -> float:
    """Completions per minute over the last `window_s` seconds (monotonic clock times, oldest first).

    Once the job has finished tasks before the window, the rate is simply the
    completions inside the window over the window's length.  Early on, the
    window is only as long as the job has been working: from `since`, its
    first dispatch, up to now.  Counting from the first completion instead
    reports 387/min for two images that happen to land close together, against
    an ideal of 60; counting up to now (not to the last completion) lets the
    rate fall while nothing finishes, so the ETA grows during a stall.
    Without `since` (no dispatch known), the completions after the first one
    over the time since it.
    """
    times = list(finish_times)
    recent = [t for t in times if now - t <= window_s]
    if not recent:
        return 0.0
    if len(recent) < len(times):
        return round(len(recent) * 60.0 / window_s, 2)
    if since is not None and since <= recent[0]:
        span = min(now - since, window_s)
        return round(len(recent) * 60.0 / span, 2) if span > 0 else 0.0
    if len(recent) < 2:
        return 0.0
    span = now - recent[0]
    if span <= 0:
        return 0.0
    return round((len(recent) - 1) * 60.0 / span, 2)


def eta_seconds(remaining: int, rate_per_min: float) -> int | None:
    """Seconds until `remaining` tasks finish at `rate_per_min`; 0 when none remain, None when unknown."""
    if not remaining:
        return 0
    if rate_per_min <= 0:
        return None
    return round(remaining / rate_per_min * 60)
