"""A browser elsewhere, as one worker uses it: a browser context of its own, and only its own pages in it.

The worker never launches, quits or reconfigures a remote browser.  On attaching it makes a browser context
with `disposeOnDetach` (Target.createBrowserContext), so its pages and cookies are its own, apart from any
other worker or person using that browser, and the browser closes them all by itself when the connection
goes, even when the worker is killed.  Detaching closes the context and the connection, nothing else.
A frozen page is closed with Target.closeTarget, which the browser does at once whatever the renderer does.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pyppeteer.browser import BrowserContext

from .devtools import close_page, connect_remote
from ..settings.endpoint import RemoteEndpoint
from ..errors import BrowserStartError

log = logging.getLogger(__name__)

CLOSE_S = 3.0


class RemoteBrowser:
    def __init__(self, endpoint: RemoteEndpoint) -> None:
        self.endpoint = endpoint
        self.browser: Any = None
        self.context_id: str | None = None

    @property
    def shown(self) -> str:
        return self.endpoint.shown

    def info(self) -> dict[str, Any]:
        """What the daemon may show and record of this browser (never a secret)."""
        return {"kind": "remote", "endpoint": self.shown}

    async def attach(self, timeout: float, viewport: dict[str, Any] | None) -> Any:
        """Connect, make this worker's context and open its page; the page.  BrowserStartError says why not."""
        browser = await connect_remote(self.endpoint, timeout, viewport)
        try:
            reply = await asyncio.wait_for(browser._connection.send("Target.createBrowserContext", {"disposeOnDetach": True}),
                                           timeout)
            context_id = reply["browserContextId"]
            browser._contexts[context_id] = BrowserContext(browser, context_id)
            page = await asyncio.wait_for(browser._contexts[context_id].newPage(), timeout)
        except Exception as exc:
            await self.disconnect(browser)
            problem = "did not answer" if isinstance(exc, asyncio.TimeoutError) else self.endpoint.scrub(str(exc))
            raise BrowserStartError(f"the remote browser at {self.shown} would not open a page for this worker: "
                                    f"{problem or type(exc).__name__}") from None
        self.browser, self.context_id = browser, context_id
        log.info("attached to the remote browser at %s", self.shown)
        return page

    @property
    def lost(self) -> bool:
        """The connection has closed (the browser or the endpoint went away), or was never made."""
        return self.browser is None or not self.browser._connection._connected

    async def wait_lost(self) -> None:
        """Return once the connection has closed."""
        browser = self.browser
        if browser is None:
            return
        await browser._connection.connection.closed.wait()

    async def new_page(self, timeout: float) -> Any:
        """Another page in this worker's context."""
        return await asyncio.wait_for(self.browser._contexts[self.context_id].newPage(), timeout)

    async def close_page(self, page: Any) -> None:
        """Close one of this worker's pages, frozen or not (the browser ends its renderer)."""
        if not self.lost:
            await close_page(self.browser, page, CLOSE_S)

    async def detach(self) -> None:
        """Close this worker's context (and so its pages), then the connection; the remote browser stays as it was."""
        browser, context_id = self.browser, self.context_id
        self.browser = self.context_id = None
        if browser is None:
            return
        if browser._connection._connected and context_id:
            try:
                await asyncio.wait_for(browser._connection.send("Target.disposeBrowserContext",
                                                                {"browserContextId": context_id}), CLOSE_S)
            except Exception as exc:  # disposeOnDetach closes it once the connection is gone
                log.debug("closing this worker's context on %s: %s", self.shown, exc)
        await self.disconnect(browser)
        log.info("detached from the remote browser at %s", self.shown)

    @staticmethod
    async def disconnect(browser: Any) -> None:
        try:
            await asyncio.wait_for(browser._connection.dispose(), CLOSE_S)
        except Exception:
            browser._connection.connection.shutdown()
