"""An account's session in a browser: applied when a worker attaches, read back after tasks.

Cookies go in and out through CDP's Storage domain, for the worker's browser context (a remote worker's own
context) or the browser's default one (a local worker's profile).  Local storage, for a site whose profile
says it keeps its sign-in there (`login.local_storage`), is written by a script that runs before the site's
own on the origin's first page load, and read from the page after tasks.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .accounts import AccountFiles
from .cookiefile import MAX_ITEM_CHARS, from_cdp

log = logging.getLogger(__name__)

Send = Callable[[str, dict[str, Any]], Awaitable[Any]]
CALL_S = 5.0
SAVE_EVERY_S = 10.0  # the account's cookies are read back after a task at most this often (always at rotation and stop)
PROFILE_ACCOUNT = "tabfleet-account"  # names the account a local profile last held
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


def digest(session: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(session, sort_keys=True).encode()).hexdigest()


def keep_profile_to(profile: Path, account: str) -> None:
    """A local profile holds one account: one that held another (the config changed) starts empty."""
    mark = profile / PROFILE_ACCOUNT
    try:
        held = mark.read_text().strip() if mark.is_file() and not mark.is_symlink() else None
    except OSError:
        held = None
    if held is not None and held != account:
        log.warning("profile %s held account %s, not %s: starting it empty", profile, held, account)
        shutil.rmtree(profile, ignore_errors=True)
    if held != account:
        profile.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(account + "\n")


class AccountSession:
    """One worker's account in the browsers it attaches: applied to each, read back after tasks.

    The session read back is the worker's to send to the daemon (which writes the account's file); until the
    daemon has written one, `pending` holds it for the next attach.
    """

    def __init__(self, account: str, files: AccountFiles) -> None:
        self.account = account
        self.files = files
        self.origins: list[dict[str, Any]] = []  # the account's local storage, as applied and since read back
        self.digest = ""  # of the session last applied or read back, so an unchanged one is not sent again
        self.checked = 0.0
        self.signed_in = True  # False once the site said signed out: such a browser's cookies never replace the account's
        self.storage_script: str | None = None  # removed once the site has loaded with the account's local storage
        self.pending: dict[str, Any] | None = None  # a login's session, applied by the next attach

    async def stored(self) -> dict[str, Any] | None:
        """The account's stored session (None: it has none), the pending one first."""
        if self.pending is not None:
            session, self.pending = self.pending, None
            return session
        try:
            record = await asyncio.get_running_loop().run_in_executor(None, self.files.read, self.account)
        except (OSError, ValueError) as exc:
            log.error("cannot read the session of account %s: %s", self.account, exc)
            raise
        return None if record is None else record.get("session") or {}

    async def apply(self, send: Send, page: Any, context_id: str | None, *, replace: bool) -> None:
        """Put the stored session in the browser just attached (or, with replace, in place of what it holds)."""
        try:
            stored = await self.stored()
        except (OSError, ValueError):
            return
        session = stored or {"cookies": [], "origins": []}
        try:
            applied = await apply_cookies(send, session.get("cookies", []), context_id, replace=replace)
            self.origins = list(session.get("origins") or [])
            self.storage_script = await install_storage(page, self.origins) if self.origins and page is not None else None
        except Exception as exc:  # the browser is going away; the next attach tries again
            log.warning("could not apply the session of account %s: %s", self.account, exc)
            return
        self.digest, self.signed_in = digest(session), True
        if stored is not None:
            log.info("account %s: %d cookies applied%s", self.account, applied, " (replacing the browser's)" if replace else "")

    async def install_origins(self, page: Any) -> None:
        """A new page in the same browser: the account's local storage goes with it (its cookies are the context's)."""
        self.storage_script = await install_storage(page, self.origins) if self.origins else None

    async def site_opened(self, page: Any) -> None:
        """The site has its local storage now: later loads keep what the site does to it."""
        if self.storage_script is not None:
            identifier, self.storage_script = self.storage_script, None
            await remove_storage_script(page, identifier)

    async def read_back(self, send: Send, page: Any, context_id: str | None, keeps_storage: bool,
                        force: bool = False) -> dict[str, Any] | None:
        """The session as the browser has it now, when it changed since it was applied or last read (at most every
        SAVE_EVERY_S, unless forced); None otherwise, and always for a browser the site has signed out."""
        now = time.monotonic()
        if not self.signed_in or (not force and now - self.checked < SAVE_EVERY_S):
            return None
        self.checked = now
        try:
            cookies = await read_cookies(send, context_id)
            origins = self.origins
            if page is not None and keeps_storage:
                origins = merge_origin(origins, await read_storage(page))
        except Exception as exc:  # a browser going away, a frozen page: the last saved session stands
            log.debug("could not read the session back: %s", exc)
            return None
        session = {"cookies": cookies, "origins": origins}
        if digest(session) == self.digest:
            return None
        self.digest, self.origins = digest(session), origins
        return session
