"""The generic site adapter: drives any prompt→image web UI from a checked site profile.

A prompt costs three CDP round trips when the profile allows it (the demo's
does): PREPARE (baseline, focus, clear), Input.insertText, and SEND, which
clicks send, waits in the page for the answer to settle and downloads the
image. Everything else (navigation per prompt, keystrokes, a key fallback, a
network-body download, snapshots) costs extra calls only when used.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
import os
import random
import re
import time
from pathlib import Path
from typing import Any, NoReturn

import pyppeteer.errors

from . import profiles
from ..errors import SiteError
from . import pagejs
from .base import (AUTH, CHALLENGE, PERMANENT, RATE_LIMIT, SITE, TIMEOUT, TRANSIENT, UNREACHABLE, SiteAdapter, call,
                   captured_wait, cdp)

log = logging.getLogger(__name__)

SNAPSHOTS_KEPT = 20  # per worker: enough to see a pattern, bounded over a week-long run
RESPONSES_KEPT = 64
_NAVIGATED = ("Execution context was destroyed", "Cannot find context", "Inspected target navigated")
# Chromium's net errors that mean the site cannot be reached at all (not one request failing).
_UNREACHABLE = ("ERR_NAME_NOT_RESOLVED", "ERR_NAME_RESOLUTION_FAILED", "ERR_CONNECTION_REFUSED", "ERR_CONNECTION_RESET",
                "ERR_CONNECTION_CLOSED", "ERR_CONNECTION_TIMED_OUT", "ERR_CONNECTION_FAILED", "ERR_ADDRESS_UNREACHABLE",
                "ERR_INTERNET_DISCONNECTED", "ERR_NETWORK_CHANGED", "ERR_PROXY_CONNECTION_FAILED", "ERR_TUNNEL_CONNECTION_FAILED",
                "ERR_TIMED_OUT", "ERR_EMPTY_RESPONSE")
_DOWN_STATUS = frozenset({502, 503, 504})
REACH_TIMEOUT_S = 3.0
ANSWER_MARGIN_S = 5.0  # the worker's own deadline on the answer and its download, past the page's
_CLASSES = {"transient": TRANSIENT, "rate_limit": RATE_LIMIT, "permanent": PERMANENT, "auth": AUTH, "challenge": CHALLENGE}


def page_config(p: dict[str, Any]) -> dict[str, Any]:
    """The part of a profile the page scripts need, times in milliseconds."""
    return {
        "conversation": {k: p["conversation"][k] for k in ("new", "selector", "ready")},
        "input": {k: p["input"][k] for k in ("selectors", "clear")},
        "submit": {k: p["submit"][k] for k in ("selectors", "key", "confirm", "user_turn")},
        "busy": {"selectors": p["busy"]["selectors"], "settle_ms": p["busy"]["settle_s"] * 1000},
        "result": {k: p["result"][k] for k in ("scope", "selector", "answer", "answer_in_place", "count", "dedupe",
                                               "min_px", "repeat")}
        | {"stable_ms": p["result"]["stable_s"] * 1000, "grace_ms": p["result"]["grace_s"] * 1000},
        "login": {k: p["login"][k] for k in ("urls", "selectors")},
        "messages": [{"pattern": m["pattern"], "selector": m["selector"], "cls": m["class"], "where": m["where"]}
                     for m in p["messages"]],
        "download": p["download"]["method"],
        "load_ms": p["timeouts"]["load_s"] * 1000,
        "sent_ms": p["timeouts"]["sent_s"] * 1000,
    }


class ProfileAdapter(SiteAdapter):
    """Turns prompts into image bytes on the site a profile describes."""

    def __init__(self, spec: dict[str, Any], snapshot_dir: Path | None = None, wid: int | None = None) -> None:
        super().__init__()
        self.spec = spec  # as stored on the job; compared to reuse this adapter for the next task
        self.profile = profiles.normalize(spec, "the job's profile")  # fills keys added since the job was queued
        self.name = self.profile["name"]
        self.cfg = page_config(self.profile)
        self.headless_allowed = bool(self.profile["browser"]["headless"])
        self.browser_args = tuple(self.profile["browser"]["args"])
        self.keeps_storage = bool(self.profile["login"].get("local_storage"))
        self.snapshot_dir = snapshot_dir
        self.wid = wid
        self.fresh = False  # the page was just loaded: no navigation needed for the next prompt
        self.last_end: float | None = None
        self.rng = random.Random()
        self.responses: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._watched: Any = None
        self.freeze_s: float | None = None  # set by the worker: how long a silent renderer counts as frozen
        self.answer_s: float | None = None  # this task's answer deadline, from the scheduler
        self.sent_at: float | None = None  # wall-clock time of the last send (for pacing)
        self.answered_in: float | None = None  # seconds the last successful answer took (for answer deadlines)
        self.budget_s = 0.0  # how long the page was given to answer the last send

    # -- opening ---------------------------------------------------------------

    async def open(self, page: Any, url: str, timeout: float) -> None:
        self.opened_url = None
        self.watch_responses(page)
        budget = min(float(self.profile["timeouts"]["load_s"]), timeout)
        await self.load(page, url, budget)
        login = self.profile["login"]
        if login["probe_url"]:
            probe = await self.run(page, pagejs.PROBE, login["probe_url"], login["probe_pattern"], timeout=budget)
            if not probe.get("ok"):
                where = await self.snapshot(page, "signed-out")
                raise SiteError(f"signed out: the session probe {login['probe_url']} answered HTTP {probe.get('status')} "
                                f"without a signed-in user; {self.login_hint()}{where}", AUTH)
        self.opened_url = url
        self.fresh = True

    async def load(self, page: Any, url: str, budget: float) -> None:
        """Navigate and wait until the input (or ready) selector shows, or the page says why it cannot."""
        started = time.monotonic()
        await self.goto(page, url, budget)
        left = max(0.1, budget - (time.monotonic() - started))
        ready = await self.run(page, pagejs.READY, self.cfg, int(left * 1000), timeout=left + 2)
        if self.challenged(ready):
            ready = await self.pass_challenge(page, url, budget)
        if not ready.get("ok"):
            await self.fail(page, ready)

    async def goto(self, page: Any, url: str, budget: float) -> None:
        """Navigate; a site that cannot be reached at all is UNREACHABLE, not one failed prompt."""
        try:
            response = await asyncio.wait_for(page.goto(url, {"waitUntil": "domcontentloaded", "timeout": budget * 1000}),
                                              budget + 1)
        except (asyncio.TimeoutError, pyppeteer.errors.TimeoutError):
            raise SiteError(f"{url} did not load within {budget:.0f} s", TIMEOUT, blame=SITE) from None
        except pyppeteer.errors.PageError as exc:
            unreachable = any(code in str(exc) for code in _UNREACHABLE)
            raise SiteError(f"cannot load {url}: {exc}", UNREACHABLE if unreachable else TRANSIENT, blame=SITE) from None
        status = getattr(response, "status", None)
        if status in _DOWN_STATUS:
            raise SiteError(f"{url} answered HTTP {status}: the site is down", UNREACHABLE, blame=SITE)

    @staticmethod
    def challenged(result: dict[str, Any]) -> bool:
        return (result.get("message") or {}).get("cls") == CHALLENGE

    async def pass_challenge(self, page: Any, url: str, budget: float) -> dict[str, Any]:
        """A bot check: many clear themselves after a few seconds; wait, then load once more, before a person is needed."""
        wait_s = float(self.profile["timeouts"].get("challenge_s", 15.0))
        log.info("%s: a bot check is showing; waiting up to %.0f s for it to clear", self.name, wait_s)
        cleared = await self.run(page, pagejs.UNBLOCKED, self.cfg, int(wait_s * 1000), timeout=wait_s + 2)
        if cleared.get("ok"):
            return cleared
        await self.goto(page, url, budget)
        return await self.run(page, pagejs.READY, self.cfg, int(budget * 1000), timeout=budget + 2)

    def watch_responses(self, page: Any) -> None:
        """With download.method = "response": keep the last image responses so their bodies can be read."""
        if self.profile["download"]["method"] != "response" or self._watched is page:
            return
        self._watched = page

        def keep(response: Any) -> None:
            kind = response.request.resourceType if response.request else ""
            if kind == "image" or str(response.headers.get("content-type", "")).startswith("image/"):
                self.responses[response.url] = response
                while len(self.responses) > RESPONSES_KEPT:
                    self.responses.popitem(last=False)

        page.on("response", keep)

    # -- one prompt ------------------------------------------------------------

    async def generate(self, page: Any, prompt: str, deadline: float, cdp_timeout: float,
                       answer_s: float | None = None) -> bytes:
        await self.pace(deadline)
        self.answer_s, self.sent_at, self.answered_in = answer_s, None, None
        try:
            return await self.run_prompt(page, prompt, deadline, cdp_timeout)
        except SiteError as exc:
            if exc.kind in (TRANSIENT, TIMEOUT) and not exc.frozen and await self.unreachable(page):
                raise SiteError(f"{self.opened_url or 'the site'} cannot be reached ({exc})", UNREACHABLE, blame=SITE) from None
            raise
        finally:
            self.last_end = time.monotonic()

    async def unreachable(self, page: Any) -> bool:
        """After a failure: True when the site's own origin cannot be reached from the page at all."""
        try:
            reach = await call(page, pagejs.REACH, int(REACH_TIMEOUT_S * 1000), timeout=REACH_TIMEOUT_S + 1)
        except Exception:  # the page itself is gone or stuck: that says nothing of the site
            return False
        return isinstance(reach, dict) and reach.get("ok") is False

    async def pace(self, deadline: float) -> None:
        """The profile's pause between prompts, with jitter; it counts toward the task deadline."""
        pacing = self.profile["pacing"]
        if self.last_end is None or (pacing["pause_s"] <= 0 and pacing["jitter_s"] <= 0):
            return
        pause = max(0.0, pacing["pause_s"] + self.rng.uniform(-pacing["jitter_s"], pacing["jitter_s"]))
        wait = min(pause - (time.monotonic() - self.last_end), deadline - time.monotonic() - 5)
        if wait > 0:
            log.debug("pacing: %.1f s before the next prompt", wait)
            await asyncio.sleep(wait)

    async def run_prompt(self, page: Any, prompt: str, deadline: float, cdp_timeout: float) -> bytes:
        p = self.profile
        if p["conversation"]["new"] == "navigate" and not self.fresh:
            await self.load(page, self.opened_url or "", min(float(p["timeouts"]["load_s"]), self.left(deadline)))
        self.fresh = False
        await self.type_prompt(page, prompt, deadline, cdp_timeout)
        result = await self.send(page, prompt, deadline, pressed=False)
        if result.get("retype"):
            # Nothing was sent: the page replaced or reset its box after the typing (it was still being built).
            log.info("%s: %s; typing the prompt again", self.name, result["retype"])
            await self.type_prompt(page, prompt, deadline, cdp_timeout)
            result = await self.send(page, prompt, deadline, pressed=False, retyped=True)
        if result.get("press"):
            log.info("%s: %s; pressing %s", self.name, result["press"], p["submit"]["key"])
            await self.press(page, p["submit"]["key"], cdp_timeout)
            result = await self.send(page, prompt, deadline, pressed=True)
        return await self.image(page, result, cdp_timeout)

    async def type_prompt(self, page: Any, prompt: str, deadline: float, cdp_timeout: float) -> None:
        """PREPARE (baseline, focus, clear), then the prompt typed into the box."""
        p = self.profile
        prep = await self.run(page, pagejs.PREPARE, self.cfg, prompt,
                              timeout=min(cdp_timeout + p["timeouts"]["load_s"], self.left(deadline) + 1))
        if prep.get("clear_keys"):
            await self.clear_with_keys(page, cdp_timeout)
        elif not prep.get("ok"):
            await self.fail(page, prep)
        if p["input"]["method"] == "keys":
            await self.type_keys(page, prompt, deadline, cdp_timeout)
        else:
            await cdp(page, "Input.insertText", {"text": prompt}, cdp_timeout)

    async def send(self, page: Any, prompt: str, deadline: float, pressed: bool, retyped: bool = False) -> dict[str, Any]:
        remaining = self.left(deadline)
        if remaining <= 0:
            raise SiteError("task deadline passed before sending", TIMEOUT)
        # The page gives up first, so that it can still say why (and a snapshot still fits);
        # the worker gives up shortly after whatever the page does: a frozen page runs no timers.
        budget = remaining - min(2.0, remaining * 0.25)
        answer_s = self.answer_s or float(self.profile["timeouts"]["answer_s"])
        if answer_s > 0:
            budget = min(budget, answer_s)
        opts = {"pressed": pressed, "retyped": retyped, "timeout_ms": int(budget * 1000)}
        self.budget_s = budget
        sent_at, started = time.time(), time.monotonic()
        result = await self.run(page, pagejs.SEND, self.cfg, prompt, opts, timeout=min(remaining, budget + ANSWER_MARGIN_S))
        if self.sent_at is None:
            self.sent_at = sent_at
        if "b64" in result or result.get("use_response"):
            self.answered_in = time.monotonic() - started
        return result

    async def image(self, page: Any, result: dict[str, Any], cdp_timeout: float) -> bytes:
        if result.get("use_response"):
            data = await self.response_body(result["src"], cdp_timeout)
            if data is not None:
                return data
            result = await self.run(page, pagejs.DOWNLOAD, self.cfg, result["src"], timeout=cdp_timeout)
        if "b64" not in result:
            await self.fail(page, result)
        if result.get("via") == "canvas":
            log.warning("%s: saved the image as drawn on the page, not its file (%s)", self.name, result.get("why"))
        if result.get("partial"):
            log.info("%s: %d of %d images came; saving the first", self.name, result.get("images"), self.profile["result"]["count"])
        return base64.b64decode(result["b64"])

    async def response_body(self, src: str, timeout: float) -> bytes | None:
        response = self.responses.get(src)
        if response is None:
            return None
        try:
            return await asyncio.wait_for(response.buffer(), timeout)
        except Exception as exc:  # evicted from the browser's buffer, or not a network load; the page can still fetch
            log.info("%s: no response body for %s (%s); fetching in the page", self.name, src[:100], exc)
            return None

    # -- outcomes --------------------------------------------------------------

    async def fail(self, page: Any, result: dict[str, Any]) -> NoReturn:
        """Raise the SiteError a page script's answer means, saving a snapshot where a person must look."""
        if "message" in result:
            hit = result["message"]
            entry = self.profile["messages"][hit["index"]] if hit.get("index", -1) >= 0 else None
            cls = _CLASSES.get(hit.get("cls"), TRANSIENT)
            wait = captured_wait(hit.get("groups") or {}, entry["wait_unit"] if entry else "seconds",
                                 entry["wait_s"] if entry else None, hit["text"]) if cls == RATE_LIMIT else None
            if entry and entry["reload"]:
                self.opened_url = None
            text = hit["text"]
            if cls == CHALLENGE and self.opened_url is not None:
                # A bot check in the middle of a prompt: the next prompt loads the page again and waits for
                # the check to clear; only one that persists (at load) blocks the worker.
                self.opened_url = None
                raise SiteError(f"{text} (a bot check; the page is loaded again for the next prompt)", TRANSIENT, blame=SITE)
            if cls in (AUTH, CHALLENGE):
                self.opened_url = None
                text += "; " + (self.login_hint() if cls == AUTH else f"a person must pass the check: {self.login_hint(verb='open')}")
                text += await self.snapshot(page, cls)
            raise SiteError(text, cls, wait, blame=SITE)
        if "missing" in result:
            self.opened_url = None
            where = await self.snapshot(page, "missing-" + result["missing"])
            raise SiteError(f"no visible element matches {result['missing']} {result.get('selectors')}: the site may have "
                            f"changed; fix the profile{where}", TRANSIENT, blame=SITE)
        if result.get("timeout"):
            where = await self.snapshot(page, "timeout")
            raise SiteError(f"no finished image within {self.budget_s:.0f} s (still busy: "
                            f"{'yes' if result.get('busy') else 'no'}, new images: {result.get('ready', 0)} loaded of "
                            f"{result.get('images', 0)}{'' if result.get('scope', True) else ', result.scope matched nothing'})"
                            f"{where}", TIMEOUT, blame=SITE)
        if result.get("noimage"):
            answer = result.get("answer") or ""
            cls, wait = self.classify(answer)
            where = await self.snapshot(page, "no-image")
            raise SiteError(f"the reply holds no image (nothing new matches result.selector "
                            f"{self.profile['result']['selector']!r}): {answer or '(no text)'}{where}", cls, wait, blame=SITE)
        message = str(result.get("error") or f"unexpected answer from the page: {str(result)[:200]}")
        if result.get("reopen"):
            self.opened_url = None
        where = await self.snapshot(page, "error") if result.get("snapshot") else ""
        raise SiteError(message + where, result.get("kind") or TRANSIENT)

    def login_hint(self, verb: str = "sign in") -> str:
        if self.account is not None:
            return (f"{verb} account {self.account} with `tabfleetctl login --account {self.account} --site {self.name}`"
                    f" (or `tabfleetctl accounts import {self.account} COOKIES-FILE`)")
        worker = f" --worker {self.wid}" if self.wid is not None else ""
        return f"{verb} this worker's browser with `tabfleetctl login{worker} --site {self.name}`"

    async def snapshot(self, page: Any, reason: str) -> str:
        """Save a screenshot and the page's HTML for the operator fixing the profile; the message suffix naming them.

        They show a signed-in page, so only the daemon's user may read them (0600 in 0700 directories), and the
        message (which clients see) names them relative to the state dir's snapshots/, never by full path.
        """
        if self.snapshot_dir is None:
            return ""
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{re.sub(r'[^A-Za-z0-9_-]+', '-', reason)[:40]}"
        try:
            png = await asyncio.wait_for(page.screenshot({"type": "png"}), 3)
            html = await asyncio.wait_for(page.content(), 3)
            await asyncio.get_running_loop().run_in_executor(
                None, self.save_snapshot, self.snapshot_dir, name, png, html.encode("utf-8", errors="replace"))
        except Exception as exc:  # a snapshot is a courtesy; the task's own error matters more
            log.warning("%s: could not save a snapshot: %s", self.name, exc)
            return ""
        log.info("%s: snapshot saved as %s/%s.png/.html", self.name, self.snapshot_dir, name)
        return f" (a screenshot and the page's HTML are saved for the operator: {self.snapshot_dir.name}/{name}.png, .html)"

    @staticmethod
    def save_snapshot(directory: Path, name: str, png: bytes, html: bytes) -> None:
        """Write NAME.png and NAME.html readable by the daemon's user alone; keep the newest SNAPSHOTS_KEPT."""
        directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.mkdir(mode=0o700, exist_ok=True)
        directory.chmod(0o700)  # whatever the umask, and however an older tabfleet left it
        for suffix, data in ((".png", png), (".html", html)):
            fd = os.open(directory / (name + suffix), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            os.fchmod(fd, 0o600)  # a file left by an older tabfleet keeps its mode through O_CREAT
            with open(fd, "wb") as out:
                out.write(data)
        for old in sorted(directory.glob("*.png"))[:-SNAPSHOTS_KEPT]:
            old.unlink(missing_ok=True)
            old.with_suffix(".html").unlink(missing_ok=True)

    # -- browser calls ---------------------------------------------------------

    async def run(self, page: Any, script: str, *args: Any, timeout: float) -> dict[str, Any]:
        """One page script; a navigation under our feet is transient, a broken script names its cause."""
        try:
            result = await call(page, script, *args, timeout=max(0.1, timeout), freeze_s=self.freeze_s)
        except pyppeteer.errors.ElementHandleError as exc:
            self.opened_url = None
            bad = "bad CSS selector" in str(exc)
            raise SiteError(f"a page script failed: {exc}", PERMANENT if bad else TRANSIENT) from None
        except pyppeteer.errors.NetworkError as exc:
            if any(mark in str(exc) for mark in _NAVIGATED):
                self.opened_url = None
                raise SiteError("the page navigated away while it was being driven; it is loaded again next time",
                                TRANSIENT) from None
            raise
        return result if isinstance(result, dict) else {"error": f"unexpected answer from the page: {result!r}"}

    async def clear_with_keys(self, page: Any, timeout: float) -> None:
        """Ctrl+A, Backspace as real key events, for editors that undo a DOM-level delete."""
        ctrl_a = {"modifiers": 2, "key": "a", "code": "KeyA", "windowsVirtualKeyCode": 65}
        backspace = {"key": "Backspace", "code": "Backspace", "windowsVirtualKeyCode": 8}
        for event in ({"type": "rawKeyDown", "commands": ["selectAll"]} | ctrl_a, {"type": "keyUp"} | ctrl_a,
                      {"type": "rawKeyDown"} | backspace, {"type": "keyUp"} | backspace):
            await cdp(page, "Input.dispatchKeyEvent", event, timeout)

    async def type_keys(self, page: Any, prompt: str, deadline: float, timeout: float) -> None:
        """Real keystrokes; a line break is Shift+Enter, since Enter alone sends on most sites."""
        delay = float(self.profile["input"]["key_delay_ms"])
        for i, line in enumerate(prompt.split("\n")):
            if i:
                await self.press(page, "Shift+Enter", timeout)
            budget = max(timeout, self.left(deadline))
            try:
                await asyncio.wait_for(page.keyboard.type(line, {"delay": delay}), budget)
            except asyncio.TimeoutError:
                raise SiteError(f"typing the prompt took over {budget:.0f} s", TIMEOUT) from None

    async def press(self, page: Any, combo: str, timeout: float) -> None:
        *mods, key = combo.split("+")
        try:
            for mod in mods:
                await asyncio.wait_for(page.keyboard.down(mod), timeout)
            await asyncio.wait_for(page.keyboard.press(key), timeout)
            for mod in reversed(mods):
                await asyncio.wait_for(page.keyboard.up(mod), timeout)
        except asyncio.TimeoutError:
            raise SiteError(f"pressing {combo} did not finish within {timeout:.0f} s", TIMEOUT) from None

    @staticmethod
    def left(deadline: float) -> float:
        return deadline - time.monotonic()


def adapter_for(site: dict[str, Any] | str, current: SiteAdapter | None = None,
                snapshot_dir: Path | None = None, wid: int | None = None) -> ProfileAdapter:
    """The adapter for a task's site: `current` when it already drives that profile, else a new one.

    `site` is the profile stored on the job, or a built-in's name (jobs queued before profiles).
    """
    spec = profiles.builtin(site) if isinstance(site, str) else site
    if isinstance(current, ProfileAdapter) and current.spec == spec:
        return current
    return ProfileAdapter(spec, snapshot_dir, wid)
