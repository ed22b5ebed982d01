"""The store's thread: every Store call runs there, so LMDB's fsyncs never block the daemon's event loop."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import Store


class AsyncStore:
    """Runs Store methods on one dedicated thread so LMDB's fsyncs never block the event loop.

    A second thread runs long reads that need no write lock (the backup copy), so the store thread keeps
    answering meanwhile; close() waits for both before the environment closes.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._aside = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-copy")

    async def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await self._run(self._pool, method, args, kwargs)

    async def aside(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run a read-only Store method off the store thread (never one that closes or reopens the environment)."""
        return await self._run(self._aside, method, args, kwargs)

    async def _run(self, pool: ThreadPoolExecutor, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        fn = functools.partial(getattr(self.store, method), *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(pool, fn)

    def close(self) -> None:
        self._aside.shutdown(wait=True)
        self._pool.shutdown(wait=True)
        self.store.close()
