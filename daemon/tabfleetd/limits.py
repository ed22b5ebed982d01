"""Request pacing: token buckets per site and per account, with an AIMD rate per site.

A site's rate starts at its configured requests per minute (or unlimited).  A
rate-limit answer halves it (multiplicative decrease; from unlimited, half the
rate actually achieved over the last minute) and cools the account that got
the answer for the wait the page stated.  Each success adds a little back
(additive increase) up to the configured ceiling.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any

OBSERVE_WINDOW_S = 60.0


@dataclass
class TokenBucket:
    """At most `rate_per_min` takes per minute, with bursts of up to `burst`."""

    rate_per_min: float
    burst: float = 1.0
    tokens: float = 1.0
    stamp: float = field(default_factory=time.monotonic)

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate_per_min / 60.0)
        self.stamp = now

    def wait(self, now: float) -> float:
        """Seconds until a take is allowed (0 when it is allowed now)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) * 60.0 / self.rate_per_min

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1.0


@dataclass
class AimdRate:
    ceiling: float | None  # configured requests per minute; None: unlimited
    floor: float = 1.0
    decrease: float = 0.5
    increase: float = 0.5  # requests per minute added back per success
    current: float | None = None

    def __post_init__(self) -> None:
        self.current = self.ceiling

    def on_rate_limit(self, observed_per_min: float) -> None:
        base = self.current if self.current is not None else max(observed_per_min, self.floor)
        self.current = max(self.floor, base * self.decrease)

    def on_success(self) -> None:
        if self.current is None:
            return
        self.current += self.increase
        if self.ceiling is not None and self.current >= self.ceiling:
            self.current = self.ceiling


class SiteLimiter:
    """The pace of one site across all accounts."""

    def __init__(self, rate_per_min: float | None) -> None:
        self.rate = AimdRate(rate_per_min)
        self.bucket: TokenBucket | None = None
        self.starts: collections.deque[float] = collections.deque()
        self.rate_limit_hits = 0

    def wait(self, now: float) -> float:
        if self.rate.current is None:
            return 0.0
        if self.bucket is None or self.bucket.rate_per_min != self.rate.current:
            tokens = self.bucket.tokens if self.bucket else 1.0
            self.bucket = TokenBucket(self.rate.current, tokens=tokens, stamp=now)
        return self.bucket.wait(now)

    def take(self, now: float) -> None:
        self.wait(now)  # brings the bucket in line with the current rate
        self.starts.append(now)
        while self.starts and now - self.starts[0] > OBSERVE_WINDOW_S:
            self.starts.popleft()
        if self.bucket is not None and self.rate.current is not None:
            self.bucket.take(now)

    def observed_per_min(self, now: float) -> float:
        recent = [t for t in self.starts if now - t <= OBSERVE_WINDOW_S]
        if len(recent) < 2:
            return float(len(recent))
        return len(recent) * 60.0 / max(now - recent[0], 1.0)


class Limits:
    """Pacing for every site and account; accounts are worker profiles (one signed-in account each)."""

    def __init__(self, site_rate_per_min: float, account_rate_per_min: float) -> None:
        self.site_rate = site_rate_per_min or None
        self.account_rate = account_rate_per_min or None
        self.sites: dict[str, SiteLimiter] = {}
        self.accounts: dict[int, TokenBucket] = {}
        self.cooling_until: dict[int, float] = {}  # account -> wall-clock time

    def site(self, name: str) -> SiteLimiter:
        if name not in self.sites:
            self.sites[name] = SiteLimiter(self.site_rate)
        return self.sites[name]

    def cooling(self, account: int, wall_now: float) -> float:
        """Seconds the account still has to cool down."""
        return max(0.0, self.cooling_until.get(account, 0.0) - wall_now)

    def wait(self, site: str, account: int, now: float) -> float:
        """Seconds before `account` may send a prompt to `site`."""
        waits = [self.site(site).wait(now)]
        if self.account_rate:
            waits.append(self.account(account, now).wait(now))
        return max(waits)

    def take(self, site: str, account: int, now: float) -> None:
        self.site(site).take(now)
        if self.account_rate:
            self.account(account, now).take(now)

    def account(self, account: int, now: float) -> TokenBucket:
        assert self.account_rate is not None
        if account not in self.accounts:
            self.accounts[account] = TokenBucket(self.account_rate, stamp=now)
        return self.accounts[account]

    def on_success(self, site: str) -> None:
        self.site(site).rate.on_success()

    def on_rate_limit(self, site: str, account: int, cool_s: float, now: float, wall_now: float) -> None:
        limiter = self.site(site)
        limiter.rate_limit_hits += 1
        limiter.rate.on_rate_limit(limiter.observed_per_min(now))
        self.cooling_until[account] = max(self.cooling_until.get(account, 0.0), wall_now + cool_s)

    def view(self, wall_now: float) -> dict[str, Any]:
        return {
            "sites": {name: {"rate_per_min": None if s.rate.current is None else round(s.rate.current, 2),
                             "ceiling_per_min": s.rate.ceiling, "rate_limit_hits": s.rate_limit_hits}
                      for name, s in self.sites.items()},
            "account_rate_per_min": self.account_rate,
        }

    def account_view(self, account: int, wall_now: float) -> dict[str, Any]:
        left = self.cooling(account, wall_now)
        return {"state": "cooling" if left > 0 else "active", "cooling_until": self.cooling_until[account] if left > 0 else None}
