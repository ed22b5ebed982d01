"""A loopback stand-in for a chat-style image generator, for tests and benchmarks.

``DemoSite`` serves one chat page plus a tiny JSON API on 127.0.0.1. The page
follows a fixed DOM contract (see ``PAGE``) that the browser-driving code
relies on, so it behaves like the real site from automation's point of view:
type into a contenteditable composer, press send, wait for the assistant turn
to finish, read the image back with the page's own cookies.

Faults are switched on per job through the page URL's query string, which the
page forwards verbatim with every generate request:

    latency=1.0        seconds before the answer
    jitter=0           ± uniform seconds added to latency
    error_rate=0       chance of an error answer (HTTP 500)
    error_message=...  text of that error
    rate_limit=N/S     at most N generations per S seconds per scope (HTTP 429)
    hang_rate=0        chance the request never answers
    lockup_rate=0      chance the page's renderer busy-loops forever
    scope=default      key isolating rate-limit counters and seeded RNGs
    seed=<int>         make the error/hang/lockup/jitter draws repeatable
    challenge=0        seconds a bot check ("Just a moment...") shows after each page load (page-side only)
    login=0            1: the site needs a signed-in account, as a real one does: without the session cookie
                       ``demo_account`` the page sends the browser to /signin and generating is refused as
                       logged out; each generation sets that cookie again with a fresh value (a session cookie)
    person=NAME        on /signin (its ``next`` page's knob): the page signs NAME in by itself, as a person at the
                       window would

A prompt containing ``[[error]]``, ``[[ratelimit]]``, ``[[hang]]`` or
``[[lockup]]`` gets that outcome every time; ``[[logout]]`` logs the sending
browser's session out for good (every later prompt from it gets an auth error; with login=1, its account's).
Bad knob values fall back to
their defaults with a warning rather than failing the request.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import logging
import math
import random
import secrets
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from .demoimage import render_png
from .demopage import PAGE, SIGNIN_PAGE

__all__ = ["DEFAULT_ERROR_MESSAGE", "DemoSite", "Knobs", "PAGE", "SESSION_COOKIE"]

log = logging.getLogger(__name__)

SESSION_COOKIE = "demo_session"
ACCOUNT_COOKIE = "demo_account"
ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
DEFAULT_ERROR_MESSAGE = (
    "Something went wrong. If this issue persists please contact us through our help center."
)
RATE_LIMIT_MESSAGE = "You're generating images too quickly. Please try again in {k} seconds."
# Retry hint for a [[ratelimit]] prompt when no rate_limit knob gives a window.
_POISON_RETRY_AFTER = 60
_MAX_IMAGES = 2_000  # a page fetches its image right after the answer; 10,000 held ~2 MB in the daemon for nothing
# Prompts whose generations are counted for /api/stats; a demo left running for days forgets the oldest.
_MAX_PROMPTS_COUNTED = 20_000
_SCOPES_KEPT = 256  # rate-limit windows and seeded draws kept per scope; quiet scopes go past this
_HANG_CHECK_S = 0.5  # how often a hung request looks whether its client is still there
_MAX_PROMPT_CHARS = 100_000
_MAX_TEXT_KNOB_CHARS = 1_000
_MAX_LATENCY = 3_600.0

# Sessions are signed rather than stored: every DemoSite in this process
# accepts them (browsers share cookies across ports of one host), nothing
# grows with the number of sessions, and a restarted process re-issues them.
_SESSION_KEY = secrets.token_bytes(32)
_UNSEEDED = random.Random()


def _sign(nonce: str) -> str:
    return hmac.new(_SESSION_KEY, nonce.encode("ascii"), hashlib.sha256).hexdigest()[:32]


def _new_session() -> str:
    nonce = secrets.token_urlsafe(16)
    return f"{nonce}.{_sign(nonce)}"


def _valid_session(token: str | None) -> bool:
    if not token or token.count(".") != 1 or not token.isascii():
        return False
    nonce, mac = token.split(".")
    return hmac.compare_digest(mac, _sign(nonce))


def _new_account_token(name: str) -> str:
    nonce = secrets.token_urlsafe(9)
    return f"{name}.{nonce}.{_sign(name + '.' + nonce)}"


def _account_of(token: str | None) -> str | None:
    """The account a sign-in cookie names, when it is one this process signed."""
    if not token or token.count(".") < 2 or not token.isascii():
        return None
    rest, mac = token.rsplit(".", 1)
    name = rest.rsplit(".", 1)[0]
    return name if ACCOUNT_NAME.fullmatch(name) and hmac.compare_digest(mac, _sign(rest)) else None


def _flag(raw: str) -> bool:
    if raw not in ("0", "1"):
        raise ValueError("must be 0 or 1")
    return raw == "1"


def _rate(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be within 0..1")
    return value


def _seconds(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= _MAX_LATENCY:
        raise ValueError(f"must be within 0..{_MAX_LATENCY:g}")
    return value


def _text(raw: str) -> str:
    if not raw or len(raw) > _MAX_TEXT_KNOB_CHARS:
        raise ValueError(f"must be 1..{_MAX_TEXT_KNOB_CHARS} characters")
    return raw


def _rate_limit(raw: str) -> tuple[int, float]:
    count, _, window = raw.partition("/")
    n, s = int(count), float(window)
    if n < 1 or not 0.0 < s <= 86_400.0:
        raise ValueError("must be N/S with N >= 1 and 0 < S <= 86400")
    return n, s


_PARSERS: dict[str, Callable[[str], object]] = {
    "latency": _seconds,
    "jitter": _seconds,
    "error_rate": _rate,
    "error_message": _text,
    "rate_limit": _rate_limit,
    "hang_rate": _rate,
    "lockup_rate": _rate,
    "scope": _text,
    "seed": int,
    "login": _flag,
}


def _challenge(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 600.0:
        raise ValueError("must be within 0..600")
    return value


_KNOB_FORMS = {"rate_limit": "must be N/S, e.g. 5/60 (at most N per S seconds)", "seed": "must be a whole number"}


def knob_problems(raw: Mapping[str, object]) -> list[str]:
    """Why each knob value cannot be used (checked at submit, so a typo is refused instead of ignored)."""
    problems = []
    for name, value in raw.items():
        parse = _PARSERS.get(name) or (_challenge if name == "challenge" else None)
        if parse is None:
            continue  # the profile's knob list decides which names exist
        try:
            parse(str(value))
        except (ValueError, OverflowError) as exc:
            # Our own checks say "must be ..."; Python's conversions do not, so say what the knob takes.
            detail = str(exc) if str(exc).startswith("must be") else _KNOB_FORMS.get(name, "must be a number")
            problems.append(f"site knob {name}={str(value)[:80]!r} {detail}")
    return problems


@dataclass(frozen=True)
class Knobs:
    """The fault settings of one generate request."""

    latency: float = 1.0
    jitter: float = 0.0
    error_rate: float = 0.0
    error_message: str = DEFAULT_ERROR_MESSAGE
    rate_limit: tuple[int, float] | None = None
    hang_rate: float = 0.0
    lockup_rate: float = 0.0
    scope: str = "default"
    seed: int | None = None
    login: bool = False

    @classmethod
    def parse(cls, raw: Mapping[str, object]) -> Knobs:
        """Knobs from query-string values; an invalid value keeps its default."""
        values: dict[str, object] = {}
        for name, parse in _PARSERS.items():
            if name not in raw:
                continue
            try:
                values[name] = parse(str(raw[name]))
            except (ValueError, OverflowError) as exc:
                log.warning(
                    "demo site: bad knob %s=%.80r, using default %r (%s)",
                    name, raw[name], getattr(cls, name), exc,
                )
        return cls(**values)  # type: ignore[arg-type]


class DemoSite:
    """The demo chat site as an aiohttp app bound to loopback."""

    def __init__(self) -> None:
        # prompt -> number of images generated for it, so tests see duplicates.
        self.generated: dict[str, int] = {}
        self.logged_out: set[str] = set()  # sessions that sent a [[logout]] prompt
        self.logged_out_accounts: set[str] = set()  # accounts signed out by a [[logout]] prompt (login=1)
        self.signed_in: collections.Counter[str] = collections.Counter()  # account -> generations made signed in
        self.signins: collections.Counter[str] = collections.Counter()  # account -> sign-ins at /signin
        self._images: collections.OrderedDict[str, str] = collections.OrderedDict()
        # Per scope (a job, with the bundled profile's start URL): its recent generations and its seeded draws.
        self._recent: dict[str, tuple[float, collections.deque[float]]] = {}  # scope -> (window, times)
        self._rngs: dict[tuple[str, int], random.Random] = {}
        self.hanging = 0  # requests held open by a hang, until their client goes away
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._host = "127.0.0.1"

    @property
    def base_url(self) -> str:
        """Where the site listens, e.g. ``http://127.0.0.1:41234``."""
        if self._runner is None:
            raise RuntimeError("demo site is not running")
        return f"http://{self._host}:{self._port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Bind and serve; ``port=0`` picks a free port."""
        if self._runner is not None:
            raise RuntimeError("demo site already running")
        app = web.Application()
        app.add_routes(
            [
                web.get("/", self._page),
                web.post("/api/generate", self._generate),
                web.get("/img/{image_id:[A-Za-z0-9_-]+}.png", self._image),
                web.get("/healthz", self._healthz),
                web.get("/api/stats", self._stats),
                web.get("/signin", self._signin_page),
                web.post("/signin", self._signin),
                web.get("/api/whoami", self._whoami),
            ]
        )
        self._closing = asyncio.Event()
        # A short shutdown timeout backs up _closing for any handler still stuck.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._port = runner.addresses[0][1]
        self._host = host
        self._runner = runner
        log.info("demo site listening on %s", self.base_url)

    async def stop(self) -> None:
        """Stop serving; hung and sleeping requests are released first."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._closing.set()
        await runner.cleanup()
        log.info("demo site on port %s stopped", self._port)

    async def _pause(self, seconds: float | None) -> bool:
        """Sleep (forever if None) unless the site stops; True if it stopped."""
        try:
            await asyncio.wait_for(self._closing.wait(), seconds)
        except asyncio.TimeoutError:
            return False
        return True

    async def _hang(self, request: web.Request) -> bool:
        """Hold a request open until the site stops or its client goes away; True if the site stopped."""
        # aiohttp does not cancel a handler whose client left, so a hang that waited
        # only for the site to stop would keep every abandoned request for good.
        self.hanging += 1
        try:
            while not await self._pause(_HANG_CHECK_S):
                if request.transport is None or request.transport.is_closing():
                    return False
            return True
        finally:
            self.hanging -= 1

    def _rng(self, knobs: Knobs) -> random.Random:
        if knobs.seed is None:
            return _UNSEEDED
        key = (knobs.scope, knobs.seed)
        rng = self._rngs.get(key)
        if rng is None:
            rng = self._rngs[key] = random.Random(f"{knobs.scope}:{knobs.seed}")
            if len(self._rngs) > _SCOPES_KEPT:
                del self._rngs[next(iter(self._rngs))]  # the scope seeded first goes first
        return rng

    def _admit(self, knobs: Knobs) -> int | None:
        """Record one generation in the scope's window; seconds to wait if full."""
        if knobs.rate_limit is None:
            return None
        limit, window = knobs.rate_limit
        now = time.monotonic()
        if len(self._recent) >= _SCOPES_KEPT:
            self._forget_quiet_scopes(now)
        _, recent = self._recent.get(knobs.scope, (window, collections.deque()))
        self._recent[knobs.scope] = (window, recent)  # the window as this request states it
        while recent and recent[0] <= now - window:
            recent.popleft()
        if len(recent) >= limit:
            return max(1, math.ceil(recent[-limit] + window - now))
        recent.append(now)
        return None

    def _forget_quiet_scopes(self, now: float) -> None:
        """Drop the scopes with nothing left in their window: a demo that runs for days sees a scope per job."""
        for scope, (window, recent) in list(self._recent.items()):
            if not recent or recent[-1] <= now - window:
                del self._recent[scope]

    async def _page(self, request: web.Request) -> web.Response:
        if request.query.get("login") == "1" and self._signed_in(request) is None:
            raise web.HTTPFound("/signin?" + urllib.parse.urlencode({"next": request.path_qs}))
        response = web.Response(text=PAGE, content_type="text/html", charset="utf-8")
        response.headers["Cache-Control"] = "no-store"
        if not _valid_session(request.cookies.get(SESSION_COOKIE)):
            response.set_cookie(SESSION_COOKIE, _new_session(), path="/", httponly=True, samesite="Lax")
        return response

    def _signed_in(self, request: web.Request) -> str | None:
        name = _account_of(request.cookies.get(ACCOUNT_COOKIE))
        return None if name is None or name in self.logged_out_accounts else name

    async def _signin_page(self, request: web.Request) -> web.Response:
        return web.Response(text=SIGNIN_PAGE, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    async def _signin(self, request: web.Request) -> web.Response:
        """A person signed in: the account's session cookie (no expiry: it goes when the browser closes)."""
        form = await request.post()
        name, target = str(form.get("name") or ""), str(form.get("next") or "/")
        if not ACCOUNT_NAME.fullmatch(name):
            raise web.HTTPBadRequest(text="a name is 1 to 64 letters, digits and . _ @ -")
        if not target.startswith("/") or target.startswith("//"):
            target = "/"
        self.logged_out_accounts.discard(name)
        self.signins[name] += 1
        response = web.HTTPSeeOther(target)
        response.set_cookie(ACCOUNT_COOKIE, _new_account_token(name), path="/", httponly=True, samesite="Lax")
        raise response

    async def _whoami(self, request: web.Request) -> web.Response:
        name = self._signed_in(request)
        return web.json_response({"user": {"name": name}} if name else {})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _image(self, request: web.Request) -> web.Response:
        if not _valid_session(request.cookies.get(SESSION_COOKIE)):
            raise web.HTTPForbidden(text="no session")
        prompt = self._images.get(request.match_info["image_id"])
        if prompt is None:
            raise web.HTTPNotFound(text="no such image")
        return web.Response(
            body=render_png(prompt),
            content_type="image/png",
            headers={"Cache-Control": "private, max-age=3600"},
        )

    async def _stats(self, request: web.Request) -> web.Response:
        """How often each prompt was generated, so tests can count duplicate generations."""
        return web.json_response({"generated": self.generated, "signed_in": dict(self.signed_in),
                                  "signins": dict(self.signins)})

    async def _generate(self, request: web.Request) -> web.Response:
        session = request.cookies.get(SESSION_COOKIE)
        if not _valid_session(session):
            return _error(403, "Your session has expired. Please reload the page.", "error", None)
        if session in self.logged_out:
            return _error(401, "You have been logged out. Please log in again to continue.", "auth", None)
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "Request body must be JSON.", "error", None)
        prompt = body.get("prompt") if isinstance(body, dict) else None
        if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > _MAX_PROMPT_CHARS:
            return _error(400, "A prompt is required.", "error", None)
        raw_knobs = body.get("knobs")
        knobs = Knobs.parse(raw_knobs if isinstance(raw_knobs, dict) else {})
        account = self._signed_in(request)
        if knobs.login and account is None:
            return _error(401, "You have been logged out. Please log in again to continue.", "auth", None)
        if "[[logout]]" in prompt:
            # This browser's account is now logged out, as when a real session expires.
            self.logged_out.add(str(session))
            if knobs.login and account is not None:
                self.logged_out_accounts.add(account)
            return _error(401, "You have been logged out. Please log in again to continue.", "auth", None)

        wait: int | None
        if "[[ratelimit]]" in prompt:
            wait = math.ceil(knobs.rate_limit[1]) if knobs.rate_limit else _POISON_RETRY_AFTER
        else:
            wait = self._admit(knobs)
        # Draw all four every time so a seeded sequence does not shift with the knobs.
        rng = self._rng(knobs)
        jitter, hang, lockup, error = (rng.random() for _ in range(4))

        if wait is None and ("[[lockup]]" in prompt or lockup < knobs.lockup_rate):
            log.info("demo site: lockup for %.60r", prompt)
            return web.json_response({"lockup": True})
        if wait is None and ("[[hang]]" in prompt or hang < knobs.hang_rate):
            log.info("demo site: hanging on %.60r", prompt)
            await self._hang(request)
            return _error(503, "The server is shutting down.", "error", None)

        delay = knobs.latency + (2.0 * jitter - 1.0) * knobs.jitter
        if await self._pause(max(0.0, delay)):
            return _error(503, "The server is shutting down.", "error", None)

        if wait is not None:
            return _error(429, RATE_LIMIT_MESSAGE.format(k=wait), "rate_limit", wait)
        if "[[error]]" in prompt or error < knobs.error_rate:
            return _error(500, knobs.error_message, "error", None)

        image_id = secrets.token_urlsafe(12)
        self._images[image_id] = prompt
        while len(self._images) > _MAX_IMAGES:
            self._images.popitem(last=False)
        self.generated[prompt] = self.generated.get(prompt, 0) + 1
        if len(self.generated) > _MAX_PROMPTS_COUNTED:
            del self.generated[next(iter(self.generated))]  # the prompt first counted goes first
        response = web.json_response({"image": f"/img/{image_id}.png"})
        if knobs.login and account is not None:
            # Sites refresh their session cookie as they go: a copy of the session kept from before is not the newest.
            self.signed_in[account] += 1
            response.set_cookie(ACCOUNT_COOKIE, _new_account_token(account), path="/", httponly=True, samesite="Lax")
        return response


def _error(status: int, message: str, kind: str, retry_after: int | None) -> web.Response:
    return web.json_response(
        {"error": message, "kind": kind, "retry_after": retry_after}, status=status
    )
