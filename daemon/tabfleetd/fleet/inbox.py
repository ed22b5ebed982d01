"""A worker's inbox: the daemon's messages are read while a task runs, so that an abort reaches the task at once.

    daemon -> worker  {"t": "abort", "key"}   the task's job was cancelled: stop generating it (the page is
                      closed; one not begun yet never starts), answer "aborted"; another key is ignored

Every other message waits in the queue for the worker's loop, in the order it came, as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .channel import Channel
from ..errors import SiteError

log = logging.getLogger(__name__)

ABORTED = "aborted"  # a task stopped because its job was cancelled: nothing charged to anyone
T = TypeVar("T")


class Abortable:
    """The task a worker runs, under its key, and the step of it an abort may stop: its generation."""

    def __init__(self) -> None:
        self.key: str | None = None
        self._step: asyncio.Future[Any] | None = None
        self._aborted = False

    def begin(self, key: str) -> None:
        """A task starts: from now on an abort of its key stops its generation, or keeps one from starting."""
        self.key, self._step, self._aborted = key, None, False

    def end(self) -> None:
        self.key = self._step = None

    async def run(self, step: Coroutine[Any, Any, T]) -> T:
        """Await the generation; raise SiteError(ABORTED) if the task's abort stopped it (a cancel of the caller
        stays a cancel)."""
        if self._aborted:
            step.close()
            raise self._error()
        self._step = asyncio.ensure_future(step)
        try:
            return await self._step
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._aborted and current is not None and not current.cancelling():
                raise self._error() from None
            raise
        finally:
            self._step = None

    def abort(self, key: str) -> bool:
        """Stop the task's generation (now, or before it starts) if key is the running task's; whether it was."""
        if key != self.key or self._aborted:
            return False
        self._aborted = True
        if self._step is not None and not self._step.done():
            self._step.cancel()
        return True

    @staticmethod
    def _error() -> SiteError:
        return SiteError("stopped: its job was cancelled", ABORTED, blame="site")


class Inbox:
    """Reads the channel for as long as it is open: aborts are acted on at once, the rest is queued."""

    def __init__(self, chan: Channel, on_abort: Callable[[str], bool]) -> None:
        self.chan = chan
        self.on_abort = on_abort
        self._queue: asyncio.Queue[dict[str, Any] | BaseException | None] = asyncio.Queue()

    async def read(self) -> None:
        """Run until the daemon closes the channel (queued as None) or a frame is bad (queued, raised by get)."""
        while True:
            try:
                msg = await self.chan.recv()
            except EOFError:
                self._queue.put_nowait(None)
                return
            except Exception as exc:  # a bad frame ends the worker, as when the loop read it itself
                self._queue.put_nowait(exc)
                return
            if msg.get("t") == "abort":
                key = str(msg.get("key"))
                log.info("abort of task %s: %s", key, "stopping it" if self.on_abort(key) else "not generating it")
                continue
            self._queue.put_nowait(msg)

    async def get(self) -> dict[str, Any] | None:
        """The next message for the worker's loop; None once the daemon has gone."""
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item
