"""Task and worker events: a bounded in-memory log that clients can read or subscribe to."""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from typing import Any

MAX_EVENTS = 5000
SUBSCRIBER_QUEUE = 1000


class EventLog:
    """Recent events, newest last; subscribers get each new event on their own bounded queue."""

    def __init__(self, capacity: int = MAX_EVENTS) -> None:
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=capacity)
        self.subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._seq = itertools.count(1)

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"seq": next(self._seq), "time": time.time(), "kind": kind, **fields}
        self.events.append(event)
        for queue in list(self.subscribers):
            if queue.full():
                # A slow subscriber loses its oldest events rather than holding memory or the loop.
                queue.get_nowait()
            queue.put_nowait(event)
        return event

    def recent(self, job: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        picked = [e for e in self.events if job is None or e.get("job") == job]
        return picked[-limit:] if limit else picked

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self.subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self.subscribers.discard(queue)
