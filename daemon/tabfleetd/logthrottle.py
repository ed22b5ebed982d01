"""A log line that a client can trigger at will, written at most once per interval with a count of the rest."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any


class ThrottledLog:
    """One kind of warning (a refused connection, a dropped client): the first in each interval is logged.

    The ones held back in between are counted and reported with the next line
    written, so a flood costs one line per interval, not one per attempt.
    """

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.clock = clock
        self.next_at = float("-inf")
        self.held = 0

    def warning(self, message: str, *args: Any) -> None:
        now = self.clock()
        if now < self.next_at:
            self.held += 1
            return
        if self.held:
            message += " (%d more like it held back)"
            args = (*args, self.held)
        self.logger.warning(message, *args)
        self.held = 0
        self.next_at = now + self.interval_s
