"""The login window: a headed Chromium on a person's display, on a worker's profile, until the person closes it.

The worker stops its own browser first (a profile allows one browser) and starts it again after; this module only
runs the window and reads back the session it ends with.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from . import sessions
from .browser import Chromium
from .devtools import connect_browser
from ..errors import BrowserError

log = logging.getLogger("tabfleetd.fleet.worker")  # the worker's own logger: these lines are its story

LOGIN_POLL_S = 1.0  # how often the login window's cookies are read (they vanish with it when the person closes it)
DISCONNECT_S = 2.0
DEFAULT_TIMEOUT_S = 1800.0  # a window left open longer is closed


async def run_window(msg: dict[str, Any], chromium: Chromium, session: sessions.AccountSession, timeout: float
                     ) -> tuple[list[dict[str, Any]] | None, Any]:
    """Open the login window `msg` asks for on `chromium`'s profile, with the account's stored session applied, and
    wait for it to close; return the cookies it last had (None: never read) and the origins' storage.

    Its cookies are read every second while it is open, since the session cookies go with the window; the last
    reading is what the account keeps.
    """
    browser = page = None
    cookies: list[dict[str, Any]] | None = None
    origins = session.origins
    try:
        browser = await connect_browser(chromium, timeout, None)
        try:
            pages = await asyncio.wait_for(browser.pages(), timeout)
            page = pages[0] if pages else await asyncio.wait_for(browser.newPage(), timeout)
            stored = await session.stored() or {}
            await sessions.apply_cookies(browser._connection.send, stored.get("cookies", []), None, replace=False)
            await asyncio.wait_for(page.goto(msg["url"], {"waitUntil": "domcontentloaded"}), timeout)
        except Exception as exc:  # the window is open all the same; the person can type the address
            log.warning("login: could not load %s: %s", msg["url"], exc)
        # The pipe stays open meanwhile: Chromium takes a closed DevTools pipe as the order to quit.
        log.info("login: a browser window is open on display %s; waiting for it to be closed", msg["display"])
        deadline = time.monotonic() + float(msg.get("timeout_s") or DEFAULT_TIMEOUT_S)
        while chromium.proc is not None and chromium.proc.poll() is None:
            if time.monotonic() > deadline:
                raise asyncio.TimeoutError
            try:
                cookies = await sessions.read_cookies(browser._connection.send, None)
                if msg.get("local_storage") and page is not None:
                    origins = sessions.merge_origin(origins, await sessions.read_storage(page))
            except Exception:  # the window is closing: the last reading stands
                pass
            await asyncio.sleep(LOGIN_POLL_S)
        log.info("login: the window was closed")
    except asyncio.TimeoutError:
        log.warning("login: the window was left open too long; closing it")
    except BrowserError as exc:
        log.error("login: cannot open a browser window on display %s: %s", msg["display"], exc)
    finally:
        if browser is not None:
            try:
                await asyncio.wait_for(browser.disconnect(), DISCONNECT_S)
            except Exception:  # the browser may already be gone; it is killed next anyway
                pass
        chromium.kill()
    return cookies, origins
