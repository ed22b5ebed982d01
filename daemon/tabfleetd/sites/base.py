"""The site adapter interface and the deadline-bound CDP helpers adapters share."""

from __future__ import annotations

import asyncio
import base64
import re
from abc import ABC, abstractmethod
from typing import Any

from ..errors import SiteError

# Failure classes an adapter may decide; the scheduler's policies key on them.
TRANSIENT, RATE_LIMIT, PERMANENT, AUTH, TIMEOUT, CRASH = "transient", "rate_limit", "permanent", "auth", "timeout", "crash"

_WAIT = re.compile(r"(?:try again|wait)\D{0,20}?(\d+(?:\.\d+)?)\s*(second|sec|s\b|minute|min|hour|h\b)", re.I)
_UNIT_S = {"s": 1, "sec": 1, "second": 1, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def stated_wait(message: str) -> float | None:
    """The wait a rate-limit message states, in seconds, if it states one."""
    match = _WAIT.search(message)
    if not match:
        return None
    unit = match.group(2).lower()
    return float(match.group(1)) * _UNIT_S.get(unit, 1)


async def evaluate(page: Any, script: str, *args: Any, timeout: float) -> Any:
    """page.evaluate with a deadline (a locked renderer never answers)."""
    try:
        return await asyncio.wait_for(page.evaluate(script, *args), timeout)
    except asyncio.TimeoutError:
        raise SiteError(f"the page did not answer within {timeout:.0f} s", TIMEOUT) from None


async def cdp(page: Any, method: str, params: dict[str, Any], timeout: float) -> Any:
    """One raw CDP call on the page's session, with a deadline."""
    try:
        return await asyncio.wait_for(page._client.send(method, params), timeout)
    except asyncio.TimeoutError:
        raise SiteError(f"CDP {method} did not answer within {timeout:.0f} s", TIMEOUT) from None


def decode_image(payload: dict[str, Any]) -> bytes:
    return base64.b64decode(payload["b64"])


class SiteAdapter(ABC):
    """Drives one web UI: open it once, then turn prompts into image bytes."""

    name: str = ""

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
