"""An account's session in a browser: applied when a worker attaches, read back after tasks.

Cookies go in and out through CDP's Storage domain, for the worker's browser context (a remote worker's own
context) or the browser's default one (a local worker's profile).  Local storage, for a site whose profile
says it keeps its sign-in there (`login.local_storage`), is written by a script that runs before the site's
own on the origin's first page load, and read from the page after tasks.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .cookiefile import MAX_ITEM_CHARS, from_cdp

log = logging.getLogger(__name__)

Send = Callable[[str, dict[str, Any]], Awaitable[Any]]
CALL_S = 5.0
STORAGE_READ_S = 1.0
COOKIE_FIELDS = ("name", "value", "domain", "path", "secure", "httpOnly", "sameSite", "expires", "sourceScheme", "sourcePort")
STORAGE_SCRIPT = """(() => {
  const wanted = %s;
  const items = wanted[location.origin];
  if (!items) return;
  try { for (const [name, value] of items) localStorage.setItem(name, value); } catch (e) {}
})();"""
READ_STORAGE = ("JSON.stringify([location.origin, (() => { try { return Object.entries(localStorage); } "
                "catch (e) { return null; } })()])")


def scope(context_id: str | None) -> dict[str, Any]:
    return {"browserContextId": context_id} if context_id else {}


def key(cookie: dict[str, Any]) -> tuple[str, str, str]:
    return cookie.get("name", ""), cookie.get("domain", ""), cookie.get("path", "/")


async def call(send: Send, method: str, params: dict[str, Any], timeout: float = CALL_S) -> Any:
    return await asyncio.wait_for(send(method, params), timeout)


async def apply_cookies(send: Send, cookies: list[dict[str, Any]], context_id: str | None, *, replace: bool) -> int:
    """Put the account's cookies in the browser; returns how many went in.

    replace: the browser's cookies are cleared first (a session imported or removed); otherwise the account's
    fill in what the browser lacks (session cookies a restart dropped, a lost profile) and leave the rest as
    the site last set it.
    """
    if replace:
        await call(send, "Storage.clearCookies", scope(context_id))
    elif cookies:
        have = {key(c) for c in (await call(send, "Storage.getCookies", scope(context_id))).get("cookies", [])}
        cookies = [c for c in cookies if key(c) not in have]
    params = [{k: c[k] for k in COOKIE_FIELDS if k in c} for c in cookies]
    if not params:
        return 0
    try:
        await call(send, "Storage.setCookies", {"cookies": params} | scope(context_id))
        return len(params)
    except asyncio.TimeoutError:
        raise
    except Exception as exc:  # one cookie Chromium will not take fails them all: set them one by one
        log.warning("setting %d cookies at once failed (%s); setting them one at a time", len(params), exc)
    taken = 0
    for param in params:
        try:
            await call(send, "Storage.setCookies", {"cookies": [param]} | scope(context_id))
            taken += 1
        except asyncio.TimeoutError:
            raise
        except Exception:
            log.warning("the browser refused cookie %r for %s", param.get("name"), param.get("domain"))
    return taken


async def read_cookies(send: Send, context_id: str | None) -> list[dict[str, Any]]:
    """The browser's cookies in the stored shape, in a stable order."""
    cookies = from_cdp((await call(send, "Storage.getCookies", scope(context_id))).get("cookies", []))
    return sorted(cookies, key=key)


async def install_storage(page: Any, origins: list[dict[str, Any]]) -> str | None:
    """Have the page write the account's local storage on each origin's first load; the script's id, to remove it."""
    wanted = {o["origin"]: [[i["name"], i["value"]] for i in o["localStorage"]] for o in origins if o.get("localStorage")}
    if not wanted:
        return None
    reply = await call(page._client.send, "Page.addScriptToEvaluateOnNewDocument",
                       {"source": STORAGE_SCRIPT % json.dumps(wanted)})
    return reply.get("identifier")


async def remove_storage_script(page: Any, identifier: str) -> None:
    await call(page._client.send, "Page.removeScriptToEvaluateOnNewDocument", {"identifier": identifier})


async def read_storage(page: Any) -> dict[str, Any] | None:
    """The page's origin and its local storage items, or None (an opaque origin, storage refused, too much)."""
    # Short: it runs before a frozen page's browser is recycled, and the page may be the frozen one.
    reply = await call(page._client.send, "Runtime.evaluate", {"expression": READ_STORAGE, "returnByValue": True},
                       STORAGE_READ_S)
    try:
        origin, items = json.loads(reply["result"]["value"])
    except (KeyError, TypeError, ValueError):
        return None
    if not isinstance(origin, str) or not origin.startswith(("http://", "https://")) or not isinstance(items, list):
        return None
    if sum(len(str(n)) + len(str(v)) for n, v in items) > MAX_ITEM_CHARS:
        log.warning("local storage of %s is larger than %d characters; not kept", origin, MAX_ITEM_CHARS)
        return None
    return {"origin": origin, "localStorage": [{"name": str(n), "value": str(v)} for n, v in items]}


def merge_origin(origins: list[dict[str, Any]], entry: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The account's origins with one origin's local storage as just read."""
    if entry is None:
        return origins
    return [o for o in origins if o["origin"] != entry["origin"]] + [entry]
