"""Request pacing: what the operator configured, what each site's limits turned out to be, and who is cooling.

- Configured rates (`site_rate_per_min`, `account_rate_per_min`) are token buckets.
- A rate-limit answer cools the account that got it for the wait the page stated.
- Whether a site limits each account or all of them together is learned (or
  pinned by the profile's `pacing.limit_scope`): when a second account is refused
  inside the same window the limit is the site's; when another account's send
  goes through meanwhile, it is the account's.
- Refusals inside one window are one congestion signal.  From the first, the
  window itself is learned (window.py) and the site, or the account, is paced
  just under it.  A refusal that states no wait halves the achieved rate
  instead (AIMD), once per window.
- Waits beyond an hour are quotas: the account cools until then, the others go on.

Everything here runs on wall-clock seconds, so that what was learned survives a
restart (`state()` / `restore()`, kept in the store).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .deadlines import AnswerClock
from .window import MAX_WINDOW_S, SendLog, WindowPacer

OBSERVE_WINDOW_S = 60.0
DEFAULT_WAIT_S = 30.0  # a refusal that states no wait: how long its account and window count as cooling
SITE, ACCOUNT, AUTO = "site", "account", "auto"


@dataclass
class TokenBucket:
    """At most `rate_per_min` takes per minute, with bursts of up to `burst`."""

    rate_per_min: float
    burst: float = 1.0
    tokens: float = 1.0
    stamp: float = field(default_factory=time.time)

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate_per_min / 60.0)
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

    def reconfigure(self, ceiling: float | None) -> None:
        """A new configured rate (a reload): a rate halved by the site stays under it, the rest takes it."""
        halved = self.current is not None and self.current != self.ceiling
        self.ceiling = ceiling
        if not halved:
            self.current = ceiling
        elif ceiling is not None:
            self.current = min(self.current, ceiling)  # type: ignore[type-var]

    def on_success(self) -> None:
        if self.current is None:
            return
        self.current += self.increase
        if self.ceiling is not None and self.current >= self.ceiling:
            self.current = self.ceiling


class Paced:
    """What a site and an account share: a send log, a learned window, a fallback AIMD rate, a hold."""

    def __init__(self, rate_per_min: float | None) -> None:
        self.log = SendLog()
        self.window = WindowPacer()
        self.rate = AimdRate(rate_per_min)
        self.bucket: TokenBucket | None = None
        self.hold_until = 0.0

    def wait(self, now: float) -> float:
        waits = [self.hold_until - now, self.window.wait(self.log, now)]
        if self.rate.current is not None:
            if self.bucket is None or self.bucket.rate_per_min != self.rate.current:
                self.bucket = TokenBucket(self.rate.current, tokens=self.bucket.tokens if self.bucket else 1.0, stamp=now)
            waits.append(self.bucket.wait(now))
        return max(0.0, *waits)

    def take(self, key: str, now: float) -> None:
        self.wait(now)  # brings the bucket in line with the current rate
        self.log.dispatched(key, now)
        if self.bucket is not None and self.rate.current is not None:
            self.bucket.take(now)

    def observed_per_min(self, now: float) -> float:
        recent = [dispatched for dispatched, _ in self.log.times(0.0) if now - dispatched <= OBSERVE_WINDOW_S]
        if len(recent) < 2:
            return float(len(recent))
        return len(recent) * 60.0 / max(now - min(recent), 1.0)

    def refused(self, sent_at: float, wait_s: float | None, now: float) -> bool:
        """A rate-limit answer for this scope; True when it was a new congestion signal."""
        stated = wait_s is not None
        new = self.window.on_refusal(self.log, sent_at, wait_s if stated else DEFAULT_WAIT_S, now, learn=stated)
        if new and (not stated or self.window.estimate is None):
            # Nothing to learn a window from: halve the achieved rate instead, once per signal.
            self.rate.on_rate_limit(self.observed_per_min(now))
        self.hold_until = max(self.hold_until, sent_at + (wait_s if wait_s is not None else 0.0))
        return new

    def pace_per_min(self) -> float | None:
        rates = [r for r in (self.rate.current, self.window.estimate.per_min if self.window.estimate else None) if r is not None]
        return min(rates) if rates else None

    def state(self) -> dict[str, Any]:
        return {"window": self.window.state(), "aimd": self.rate.current, "hold_until": self.hold_until}

    def restore(self, state: dict[str, Any]) -> None:
        self.window = WindowPacer.restore(state.get("window") or {})
        if state.get("aimd") is not None and self.rate.ceiling is None:
            self.rate.current = float(state["aimd"])
        self.hold_until = float(state.get("hold_until") or 0.0)


@dataclass(frozen=True)
class Refusal:
    account: str
    sent_at: float
    wait_s: float | None

    @property
    def reopen(self) -> float:
        return self.sent_at + (self.wait_s if self.wait_s is not None else DEFAULT_WAIT_S)


class SiteLimiter(Paced):
    """The pace of one site across all accounts, and what is known of how it limits."""

    def __init__(self, rate_per_min: float | None, scope: str = AUTO) -> None:
        super().__init__(rate_per_min)
        self.pinned = scope if scope in (SITE, ACCOUNT) else None
        self.learned: str | None = None
        self.answers = 0  # rate-limit answers
        self.suspect: Refusal | None = None  # a refusal whose scope is not known yet
        self.signals = 0  # congestion signals, at whichever scope they were taken
        self.answer_clock = AnswerClock()

    @property
    def scope(self) -> str | None:
        return self.pinned or self.learned


class Limits:
    """Pacing for every site and account."""

    def __init__(self, site_rate_per_min: float, account_rate_per_min: float) -> None:
        self.site_rate = site_rate_per_min or None
        self.account_rate = account_rate_per_min or None
        self.sites: dict[str, SiteLimiter] = {}
        self.accounts: dict[str, Paced] = {}
        self.cooling_until: dict[str, float] = {}
        self.quota: dict[str, str] = {}  # account -> the message that set a long cooling
        self.answer_caps: dict[str, float] = {}  # site -> the longest answer wait its profile and the deadline allow
        self.changed = False  # something worth saving happened since the last state()

    def configure(self, site_rate_per_min: float, account_rate_per_min: float) -> None:
        """The configured rates changed (a reload): every site and account takes its new one (0: none)."""
        self.site_rate = site_rate_per_min or None
        self.account_rate = account_rate_per_min or None
        for limiter in self.sites.values():
            limiter.rate.reconfigure(self.site_rate)
        for paced in self.accounts.values():
            paced.rate.reconfigure(self.account_rate)
        self.changed = True

    def site(self, name: str, scope: str = AUTO) -> SiteLimiter:
        limiter = self.sites.get(name)
        if limiter is None:
            limiter = self.sites[name] = SiteLimiter(self.site_rate, scope)
        elif scope in (SITE, ACCOUNT):
            limiter.pinned = scope
        return limiter

    def account(self, name: str) -> Paced:
        if name not in self.accounts:
            self.accounts[name] = Paced(self.account_rate)
        return self.accounts[name]

    def cooling(self, account: str, now: float) -> float:
        """Seconds the account still has to cool down."""
        return max(0.0, self.cooling_until.get(account, 0.0) - now)

    def wait(self, site: str, account: str, now: float) -> float:
        """Seconds before `account` may send a prompt to `site`."""
        return max(self.site(site).wait(now), self.cooling(account, now), self.account(account).wait(now))

    def take(self, site: str, account: str, key: str, now: float) -> None:
        self.site(site).take(key, now)
        self.account(account).take(key, now)

    def on_answer(self, site: str, account: str, key: str, sent_at: float | None, answer_s: float | None, now: float,
                  success: bool = True) -> None:
        """A send that the site did not refuse: it counts in the window, and a clean answer times the site."""
        limiter = self.site(site)
        limiter.log.answered(key, sent_at, refused=False)
        self.account(account).log.answered(key, sent_at, refused=False)
        if answer_s:
            limiter.answer_clock.record(answer_s)
        if success:
            limiter.rate.on_success()
        suspect = limiter.suspect
        if (suspect is not None and suspect.account != account and sent_at is not None
                and suspect.sent_at < sent_at < suspect.reopen):
            # Another account got through while the first was refused: the limit is the account's.
            limiter.suspect = None
            limiter.learned = ACCOUNT
        self.changed = True

    def on_answer_timeout(self, site: str) -> None:
        """The site let an answer time out (a lost request, or a site slower than it was)."""
        self.site(site).answer_clock.timed_out()
        self.changed = True

    def on_rate_limit(self, site: str, account: str, key: str, sent_at: float | None, wait_s: float | None,
                      message: str, now: float) -> bool:
        """A refusal: the account cools for its wait.  True when it was a new congestion signal."""
        limiter = self.site(site)
        limiter.answers += 1
        self.changed = True
        sent = sent_at if sent_at is not None else now
        limiter.log.answered(key, sent_at, refused=True)
        own = self.account(account)
        own.log.answered(key, sent_at, refused=True)
        refusal = Refusal(account, sent, wait_s)
        self.cooling_until[account] = max(self.cooling_until.get(account, 0.0), refusal.reopen)
        if refusal.reopen - sent > MAX_WINDOW_S:
            self.quota[account] = message[:200]
            return False  # a quota: this account waits, the site's pace is untouched
        self.quota.pop(account, None)
        if limiter.scope is None:
            suspect = limiter.suspect
            if suspect is not None and suspect.account != account and sent < suspect.reopen:
                # A second account refused inside the first one's window: the limit is the site's.
                limiter.learned = SITE
                limiter.suspect = None
                self.account(suspect.account).window = WindowPacer()  # its guess at an account window was wrong
                # The suspect refusal was counted as the signal already; this one only moves it to the site.
                limiter.refused(suspect.sent_at, suspect.wait_s, now)
                limiter.refused(sent, wait_s, now)
                return False
            if suspect is not None and sent < suspect.reopen:
                return False  # the same account again, inside its own window: the same signal
            # Until another account shows otherwise, this account paces itself.
            limiter.suspect = refusal
            return self.counted(limiter, own.refused(sent, wait_s, now))
        if limiter.scope == SITE:
            return self.counted(limiter, limiter.refused(sent, wait_s, now))
        return self.counted(limiter, own.refused(sent, wait_s, now))

    @staticmethod
    def counted(limiter: SiteLimiter, new: bool) -> bool:
        if new:
            limiter.signals += 1
        return new

    def prune(self, now: float) -> None:
        """Forget sends too old to matter for any window, so the logs stay small over days."""
        horizon = now - 2 * MAX_WINDOW_S
        for paced in [*self.sites.values(), *self.accounts.values()]:
            paced.log.prune(horizon)
        for account in [a for a, until in self.cooling_until.items() if until < now]:
            del self.cooling_until[account]
            self.quota.pop(account, None)

    # -- what status shows, and what the store keeps ---------------------------

    def answer_deadline(self, site: str, cap_s: float) -> float:
        self.answer_caps[site] = cap_s
        return self.site(site).answer_clock.deadline(cap_s)

    def view(self, now: float) -> dict[str, Any]:
        sites = {}
        for name, s in self.sites.items():
            estimate = s.window.estimate
            sites[name] = {
                "rate_per_min": None if s.pace_per_min() is None else round(s.pace_per_min() or 0.0, 2),
                "ceiling_per_min": s.rate.ceiling, "rate_limit_hits": s.answers, "signals": s.signals,
                "scope": s.scope, "window": None if estimate is None else {"count": estimate.count,
                                                                           "seconds": round(estimate.window_s, 1)},
                "holding_s": round(max(0.0, s.hold_until - now), 1) if s.scope == SITE else 0.0,
            } | (s.answer_clock.view(self.answer_caps[name]) if name in self.answer_caps else {})
        return {"sites": sites, "account_rate_per_min": self.account_rate}

    def account_view(self, account: str, now: float) -> dict[str, Any]:
        left = self.cooling(account, now)
        paced = self.accounts.get(account)
        estimate = paced.window.estimate if paced is not None else None
        return {"name": account, "state": "cooling" if left > 0 else "active",
                "cooling_until": self.cooling_until[account] if left > 0 else None,
                "quota": self.quota.get(account) if left > 0 else None,
                "window": None if estimate is None else {"count": estimate.count, "seconds": round(estimate.window_s, 1)}}

    def state(self) -> dict[str, Any]:
        self.changed = False
        return {"sites": {n: s.state() | {"scope": s.learned, "answers": s.answers, "signals": s.signals,
                                          "answer_times": s.answer_clock.state(), "answer_cap": self.answer_caps.get(n)}
                          for n, s in self.sites.items()},
                "accounts": {n: a.state() for n, a in self.accounts.items()},
                "cooling_until": dict(self.cooling_until), "quota": dict(self.quota)}

    def restore(self, state: dict[str, Any]) -> None:
        for name, saved in (state.get("sites") or {}).items():
            limiter = self.site(name)
            limiter.restore(saved)
            limiter.learned = saved.get("scope")
            limiter.answers = int(saved.get("answers") or 0)
            limiter.signals = int(saved.get("signals") or 0)
            limiter.answer_clock = AnswerClock.restore(list(saved.get("answer_times") or []))
            if saved.get("answer_cap"):
                self.answer_caps[name] = float(saved["answer_cap"])
        for name, saved in (state.get("accounts") or {}).items():
            self.account(name).restore(saved)
        self.cooling_until.update({str(k): float(v) for k, v in (state.get("cooling_until") or {}).items()})
        self.quota.update({str(k): str(v) for k, v in (state.get("quota") or {}).items()})

