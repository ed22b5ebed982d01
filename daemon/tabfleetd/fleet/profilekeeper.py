"""A local worker's browser profile kept bounded: trimmed at each browser start, measured, and capped.

What goes and what stays is profiletrim.py's; this decides when, for one worker's profile.  A remote
browser's profile is its owner's, so a worker on one has no ProfileKeeper.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from . import profiletrim
from .browser import Chromium

log = logging.getLogger("tabfleetd.fleet.worker")  # its lines read as the worker's, which they are

MB = 2**20
CACHE_LIMIT_MB = 64  # a worker's HTTP disk cache is cleared once it grows past this, and at every rotation


class ProfileKeeper:
    """One local Chromium's profile: its size, last measured, and the size a trim left (what it must keep)."""

    def __init__(self, chromium: Chromium, cap_mb: float) -> None:
        self.chromium = chromium
        self.cap_mb = cap_mb
        self.size_mb: float | None = None
        self.floor_mb = 0.0

    async def trim(self) -> None:
        """Shed the profile's caches, crash dumps and history, and more when it is over its cap.

        Only at a browser start, with no Chromium on the profile: a running one holds those files open.
        """
        if self.chromium.proc is not None:
            return
        cap = int(self.cap_mb * MB)
        trimmed = await asyncio.get_running_loop().run_in_executor(None, profiletrim.trim, self.chromium.profile, cap)
        if trimmed.removed:
            log.info("profile trimmed from %.1f MB to %.1f MB (%d entries%s)", trimmed.before / MB, trimmed.after / MB,
                     len(trimmed.removed), "; over its cap, all but the session went" if trimmed.deep else "")
        if trimmed.over_cap:
            log.warning("the profile is still %.0f MB after trimming, over profile_max_mb %.0f: what holds the session "
                        "(cookies, storage) has outgrown the cap", trimmed.after / MB, self.cap_mb)
        self.size_mb = self.floor_mb = round(trimmed.after / MB, 1)

    async def measure(self) -> None:
        size = await asyncio.get_running_loop().run_in_executor(None, profiletrim.tree_bytes, self.chromium.profile)
        self.size_mb = round(size / MB, 1)

    def over_cap(self) -> bool:
        """Whether the running browser's profile has outgrown its cap by enough to restart it.

        A profile whose kept part alone is over the cap is restarted again only once it grows by a tenth of the
        cap more, not after every task.
        """
        if not self.cap_mb or self.size_mb is None:
            return False
        return self.size_mb > max(self.cap_mb, self.floor_mb + self.cap_mb / 10)

    async def clear_cache(self, page: Any, always: bool = False) -> None:
        """Drop the HTTP cache once it has grown past CACHE_LIMIT_MB, or always (at rotation); cookies, and so the login, stay.

        Not after every task: that made each page load fetch everything again, for nothing a cache limit does not do.
        """
        if not always:
            cache = self.chromium.profile / "Default" / "Cache"
            if await asyncio.get_running_loop().run_in_executor(None, profiletrim.tree_bytes, cache) < CACHE_LIMIT_MB * MB:
                return
            log.info("the HTTP cache has grown past %d MB; clearing it", CACHE_LIMIT_MB)
        try:
            await asyncio.wait_for(page._client.send("Network.clearBrowserCache"), 2)
        except Exception as exc:  # a cache that was not cleared costs memory, not correctness
            log.debug("could not clear the cache: %s", exc)
