"""The site adapter interface and the deadline-bound CDP helpers adapters share."""

from __future__ import annotations

import asyncio
import datetime
import re
import time
from abc import ABC, abstractmethod
from typing import Any

from pyppeteer.errors import ElementHandleError
from pyppeteer.helper import getExceptionMessage

from ..errors import SiteError

# Failure classes an adapter may decide; the scheduler's policies key on them.
TRANSIENT, RATE_LIMIT, PERMANENT, AUTH, TIMEOUT, CRASH = "transient", "rate_limit", "permanent", "auth", "timeout", "crash"
CHALLENGE = "challenge"  # a bot check (e.g. Cloudflare's "Just a moment..."): a person must look
UNREACHABLE = "unreachable"  # the site cannot be reached at all (DNS, refused, down): the site waits, not the prompt
SITE, WORKER = "site", "worker"  # whose fault a failure is (SiteError.blame)
PROBE_EVERY_S = 1.0

# Sites write short waits in words: "wait for an hour", "try again in a minute", "in two minutes".
NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "a couple of": 2, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
                "seven": 7, "eight": 8, "nine": 9, "ten": 10, "fifteen": 15, "twenty": 20, "thirty": 30, "a few": 3}
_AMOUNT = r"\d+(?:\.\d+)?|" + "|".join(sorted((w.replace(" ", r"\s+") for w in NUMBER_WORDS), key=len, reverse=True))
_WAIT = re.compile(r"(?:try again|wait)\D{0,20}?\b(" + _AMOUNT + r")\s*(second|sec|s\b|minute|min|hour|h\b)", re.I)
_UNIT_S = {"s": 1, "sec": 1, "second": 1, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def amount(text: str) -> float:
    """A number as sites write it: digits, or a word such as "an" or "two"; ValueError otherwise."""
    text = re.sub(r"\s+", " ", text.strip().lower())
    return float(NUMBER_WORDS[text]) if text in NUMBER_WORDS else float(text)


def stated_wait(message: str) -> float | None:
    """The wait a rate-limit message states, in seconds, if it states one."""
    match = _WAIT.search(message)
    if not match:
        return None
    unit = match.group(2).lower()
    return amount(match.group(1)) * _UNIT_S.get(unit, 1)


_CLOCK = re.compile(r"(\d{1,2})(?::(\d{2}))?\s*(?:([ap])\.?\s*m\.?)?", re.I)


def unit_seconds(unit: str) -> float:
    """Seconds in a unit as sites write it: s, sec, seconds, m, min, minutes, h, hr, hours, d, days."""
    unit = unit.strip().lower()
    if unit.startswith("d"):
        return 86400.0
    if unit.startswith("h"):
        return 3600.0
    if unit.startswith("m"):
        return 60.0
    return 1.0


def until_clock(text: str, now: datetime.datetime) -> float | None:
    """Seconds from `now` (local time) until a clock time such as "4:17 PM" or "16:17" next comes round."""
    match = _CLOCK.search(text)
    if not match:
        return None
    hour, minute = int(match.group(1)), int(match.group(2) or 0)
    if match.group(3):
        hour = hour % 12 + (12 if match.group(3).lower() == "p" else 0)
    if hour > 23 or minute > 59:
        return None
    target = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if target <= now:
        target += datetime.timedelta(days=1)
    return (target - now).total_seconds()


def captured_wait(groups: dict[str, Any], default_unit: str, fallback_s: float | None, message: str,
                  now: datetime.datetime | None = None) -> float | None:
    """The wait a matched message states: a `clock` capture, else `wait` in `unit`, else the fallback."""
    if groups.get("clock"):
        wait = until_clock(str(groups["clock"]), now or datetime.datetime.now())
        if wait is not None:
            return wait
    if groups.get("wait"):
        try:
            return amount(str(groups["wait"])) * unit_seconds(str(groups.get("unit") or default_unit))
        except ValueError:
            pass
    return fallback_s if fallback_s is not None else stated_wait(message)


async def frozen(page: Any, freeze_s: float) -> float:
    """Return once the page's main thread has not answered a trivial probe for `freeze_s` seconds.

    A page script that waits inside the page cannot say that the page froze: a
    renderer stuck in a loop runs no timers.  Only the worker's side can notice.
    Probe errors (a navigation, say) count as alive; only silence counts.
    """
    while True:
        await asyncio.sleep(PROBE_EVERY_S)
        started = time.monotonic()
        try:
            await asyncio.wait_for(page._client.send("Runtime.evaluate", {"expression": "0", "returnByValue": True}), freeze_s)
        except asyncio.TimeoutError:
            return time.monotonic() - started
        except Exception:  # a navigation or a closing target: not a frozen page
            continue


async def call(page: Any, script: str, *args: Any, timeout: float, freeze_s: float | None = None) -> Any:
    """Run a page function and return its JSON value in one CDP round trip, with a deadline.

    pyppeteer's page.evaluate takes three (call, fetch the value, release the handle); a prompt's
    cost is counted in round trips, so the page's scripts go through here.  With `freeze_s`, a
    liveness probe runs beside it, so a frozen page is given up on within seconds, not at `timeout`.
    """
    async def once() -> Any:
        context = await page.mainFrame.executionContext()
        reply = await page._client.send("Runtime.callFunctionOn", {
            "functionDeclaration": script, "executionContextId": context._contextId,
            "arguments": [{"value": arg} for arg in args],
            "returnByValue": True, "awaitPromise": True, "userGesture": True})
        if reply.get("exceptionDetails"):
            raise ElementHandleError(f"Evaluation failed: {getExceptionMessage(reply['exceptionDetails'])}")
        return reply.get("result", {}).get("value")

    if not freeze_s:
        try:
            return await asyncio.wait_for(once(), timeout)
        except asyncio.TimeoutError:
            raise SiteError(f"the page did not answer within {timeout:.0f} s", TIMEOUT) from None
    work = asyncio.ensure_future(once())
    probe = asyncio.ensure_future(frozen(page, freeze_s))
    try:
        done, _ = await asyncio.wait({work, probe}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for fut in (work, probe):
            if not fut.done():
                fut.cancel()
                fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # nobody is left to hear it
    if work in done:
        return work.result()
    if probe in done:
        raise SiteError(f"the page froze: its renderer did not answer for {freeze_s:.0f} s", TIMEOUT,
                        blame=SITE, frozen=True)
    raise SiteError(f"the page did not answer within {timeout:.0f} s", TIMEOUT)


async def cdp(page: Any, method: str, params: dict[str, Any], timeout: float) -> Any:
    """One raw CDP call on the page's session, with a deadline."""
    try:
        return await asyncio.wait_for(page._client.send(method, params), timeout)
    except asyncio.TimeoutError:
        raise SiteError(f"CDP {method} did not answer within {timeout:.0f} s", TIMEOUT) from None


class SiteAdapter(ABC):
    """Drives one web UI: open it once, then turn prompts into image bytes."""

    name: str = ""
    headless_allowed: bool = True  # False: the worker runs a headed Chromium for this site
    browser_args: tuple[str, ...] = ()  # extra Chromium arguments this site needs
    keeps_storage: bool = False  # the site keeps its sign-in in local storage too (the session keeps it)
    account: str | None = None  # the account the worker signs in with, set by the worker: messages name it

    def __init__(self) -> None:
        self.opened_url: str | None = None

    @abstractmethod
    async def open(self, page: Any, url: str, timeout: float) -> None:
        """Load the site so that prompts can be sent."""

    @abstractmethod
    async def generate(self, page: Any, prompt: str, deadline: float, cdp_timeout: float) -> bytes:
        """Send one prompt and return its image bytes, or raise SiteError."""

    def classify(self, message: str) -> tuple[str, float | None]:
        """Map a message shown by the site to a failure class and a stated wait."""
        wait = stated_wait(message)
        if re.search(r"too (many|quickly)|rate limit|try again in", message, re.I):
            return RATE_LIMIT, wait
        if re.search(r"content polic|violat\w*\s+(?:our\s+|the\s+)?(?:content|terms|polic|usage|guidelines)", message, re.I):
            return PERMANENT, None
        if re.search(r"\blog ?in\b|\bsign ?in\b|session expired", message, re.I):
            return AUTH, None
        return TRANSIENT, wait
