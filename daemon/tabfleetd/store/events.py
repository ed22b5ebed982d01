"""Task and worker events: a bounded in-memory log that clients can read or subscribe to.

The log holds the newest MAX_EVENTS, whatever the uptime; the store keeps
them longer (eventstore.py: a listener hands each event to the store), and
seqs carry on across restarts from the last one stored.

Three ways to consume it, for three kinds of reader:

- ``recent()`` for a one-off look (the ``events`` op, which asks the store for older ones);
- ``subscribe()`` gives a bounded asyncio queue, for a stream to a client that
  may be slow (a full queue loses its oldest event, never blocks ``emit``);
- ``listen()`` registers a synchronous callback run inside ``emit``, for
  in-process counters (metrics) that must see every event exactly once.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

MAX_EVENTS = 2000  # older events are read from the store
SUBSCRIBER_QUEUE = 1000
# An event names its prompt; the whole prompt (up to max_prompt_chars) stays with the task.  Cut here, an event's
# size, and so the log's memory and the store's events, do not depend on how long the prompts are.
EVENT_PROMPT_CHARS = 160

# The kinds a person reads about task progress; the events op and command default to these.
TASK_KINDS = frozenset({"task_done", "task_retry", "task_failed"})

Listener = Callable[[dict[str, Any]], None]


class EventLog:
    """Recent events, newest last; subscribers get each new event on their own bounded queue."""

    def __init__(self, capacity: int = MAX_EVENTS) -> None:
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=capacity)
        self.subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self.listeners: list[Listener] = []
        self.dropped = 0  # events a slow subscriber lost, summed over subscribers
        self._seq = itertools.count(1)
        self._next = 1

    def continue_after(self, seq: int) -> None:
        """Number the next event seq + 1 (the last one stored by an earlier run); before any emit."""
        self._seq = itertools.count(seq + 1)
        self._next = seq + 1

    def floor(self) -> int:
        """The smallest seq from which this log holds every event (older ones are only in the store)."""
        return self.events[0]["seq"] if self.events else self._next

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        prompt = fields.get("prompt")
        if isinstance(prompt, str) and len(prompt) > EVENT_PROMPT_CHARS:
            fields["prompt"] = prompt[:EVENT_PROMPT_CHARS - 1] + "…"
        event = {"seq": next(self._seq), "time": time.time(), "kind": kind, **fields}
        self._next = event["seq"] + 1
        self.events.append(event)
        for queue in list(self.subscribers):
            if queue.full():
                # A slow subscriber loses its oldest events rather than holding memory or the loop.
                queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(event)
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                # A broken counter must not stop the scheduler that emitted the event.
                log.exception("event listener %r failed on %s", listener, kind)
        return event

    def recent(self, job: str | None = None, limit: int = 100, kinds: Iterable[str] | None = None,
               after: int = 0, before: int | None = None) -> list[dict[str, Any]]:
        """The newest `limit` events (0: all kept), oldest first, optionally of one job, some kinds, or between seqs."""
        wanted = None if kinds is None else frozenset(kinds)
        picked = [e for e in self.events
                  if (job is None or e.get("job") == job) and (wanted is None or e["kind"] in wanted) and e["seq"] > after
                  and (before is None or e["seq"] < before)]
        return picked[-limit:] if limit else picked

    def subscribe(self, capacity: int = SUBSCRIBER_QUEUE) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(capacity)
        self.subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self.subscribers.discard(queue)

    def listen(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def unlisten(self, listener: Listener) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)
