"""Waits that belong to a site or an output, not to any one prompt or worker.

- A site that cannot be reached (DNS, refused, down): its dispatch pauses with
  backoff; when the pause ends one task goes out as a probe, and the rest
  follow once it gets through.  No attempt is charged and no worker is blamed.
- An output directory that cannot take images (full, over quota, read-only):
  its job waits until a free-space check passes.  Images already made are held
  (held.py) and written when there is room.

Both show their reason in status.  Nothing here reads a clock or the disk:
callers pass the time in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

FIRST_BACKOFF_S = 2.0
BACKOFF_CAP_S = 60.0
DISK_CHECK_S = 5.0


@dataclass
class Outage:
    reason: str
    since: float
    retry_at: float
    failures: int = 1
    probing: bool = False  # a probe task is out; the others wait for its answer
    probe: str | None = None  # that task's key

    def view(self, now: float) -> dict[str, Any]:
        return {"reason": self.reason, "since": self.since, "retry_in_s": round(max(0.0, self.retry_at - now), 1),
                "failures": self.failures, "probing": self.probing}


@dataclass
class SiteOutages:
    """Sites that cannot be reached, each with its backoff and a half-open probe."""

    down: dict[str, Outage] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)

    def failed(self, site: str, reason: str, now: float) -> float:
        """The site could not be reached; returns when it is tried again.

        Failures of tasks that were already out when it went down are the same
        outage; only a failed probe lengthens the backoff.
        """
        outage = self.down.get(site)
        if outage is None:
            outage = self.down[site] = Outage(reason, now, now + self.backoff(1))
        elif outage.probing:
            outage.failures += 1
            outage.probing = False
            outage.retry_at = now + self.backoff(outage.failures)
        outage.reason = reason
        return outage.retry_at

    def backoff(self, failures: int) -> float:
        ceiling = min(BACKOFF_CAP_S, FIRST_BACKOFF_S * 2 ** (failures - 1))
        return self.rng.uniform(ceiling / 2, ceiling)

    def reached(self, site: str) -> bool:
        """The site answered; True when it had been down."""
        return self.down.pop(site, None) is not None

    def wait(self, site: str, now: float) -> float:
        """Seconds before a task of this site may go out (0: now); a half-open site lets one probe through."""
        outage = self.down.get(site)
        if outage is None:
            return 0.0
        if outage.probing:
            return BACKOFF_CAP_S  # the probe's answer kicks the scheduler
        return max(0.0, outage.retry_at - now)

    def sending(self, site: str, key: str | None = None) -> None:
        outage = self.down.get(site)
        if outage is not None:
            outage.probing, outage.probe = True, key

    def is_probe(self, site: str, key: str) -> bool:
        """True for the task sent to see whether a down site is back."""
        outage = self.down.get(site)
        return outage is not None and outage.probing and outage.probe == key

    def unanswered(self, site: str) -> None:
        """A probe that ended saying nothing of the site (its worker died, its browser crashed): send another."""
        outage = self.down.get(site)
        if outage is not None:
            outage.probing = False

    def view(self, now: float) -> dict[str, Any]:
        return {site: outage.view(now) for site, outage in self.down.items()}


@dataclass
class DiskWaits:
    """Jobs whose output directory cannot take images right now."""

    waiting: dict[str, Outage] = field(default_factory=dict)

    def full(self, job: str, reason: str, now: float) -> float:
        outage = self.waiting.get(job)
        if outage is None:
            outage = self.waiting[job] = Outage(reason, now, now + DISK_CHECK_S)
        else:
            outage.reason, outage.retry_at = reason, now + DISK_CHECK_S
        return outage.retry_at

    def check_due(self, job: str, now: float) -> bool:
        outage = self.waiting.get(job)
        return outage is not None and now >= outage.retry_at

    def wait(self, job: str, now: float) -> float:
        outage = self.waiting.get(job)
        return 0.0 if outage is None else max(0.0, outage.retry_at - now)

    def room(self, job: str) -> bool:
        """The output has room again; True when the job had been waiting."""
        return self.waiting.pop(job, None) is not None

    def view(self, job: str, now: float) -> dict[str, Any] | None:
        outage = self.waiting.get(job)
        return None if outage is None else outage.view(now)
