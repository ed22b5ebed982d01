"""Fixtures for the site-profile tests: a local fixture web UI, and one Chromium to drive it directly.

Both run on one event loop in a background thread for a whole test module, so each test
costs only its own page; tests hand coroutines to that loop with `Harness.run`.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import secrets
import threading
import time
import tomllib
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from aiohttp import web

from tabfleetd.sites import profiles
from tabfleetd.fleet.browser import Chromium
from tabfleetd.fleet.devtools import connect_browser
from tabfleetd.demo.demoimage import render_png
from tabfleetd.errors import SiteError
from tabfleetd.sites.profile import ProfileAdapter

PAGES = Path(__file__).parent / "pages"
FIXTURE_PROFILE = Path(__file__).parent / "fixture.toml"
FORM_PROFILE = Path(__file__).parent / "form.toml"


@dataclass
class FixtureSite:
    """The fixture chat UI: cookie-protected images, a login page, a session probe, and a request log."""

    port: int = 0
    images: dict[str, str] = field(default_factory=dict)  # image id -> the text it renders
    generated: list[str] = field(default_factory=list)  # every text an image was made for, in order
    log: list[dict[str, Any]] = field(default_factory=list)
    runner: web.AppRunner | None = None
    person_signs_in: bool = False  # the login page submits itself, as a person at the window would


    def url(self, path: str = "/chat", **query: Any) -> str:
        return f"http://127.0.0.1:{self.port}{path}" + (f"?{urlencode(query)}" if query else "")

    def requests(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.log if r["path"].startswith(path)]

    async def start(self) -> None:
        app = web.Application(middlewares=[self._record])
        app.add_routes([web.get("/chat", self._chat), web.get("/form", self._form), web.get("/chatgpt", self._chatgpt), web.get("/app", self._app),
                        web.get("/login", self._login_page),
                        web.post("/login", self._login), web.get("/api/session", self._session),
                        web.post("/api/gen", self._gen), web.get("/img/{id}.png", self._image),
                        web.get("/xo/{id}.png", self._cross_image)])
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.log.append({"path": request.path_qs, "host": request.host, "cookies": dict(request.cookies),
                         "agent": request.headers.get("User-Agent", ""), "time": time.monotonic()})
        return await handler(request)

    def _page(self, request: web.Request, name: str = "chat.html") -> web.Response:
        response = web.Response(text=(PAGES / name).read_text(), content_type="text/html")
        if "sid" not in request.cookies:
            response.set_cookie("sid", secrets.token_hex(8), httponly=True, samesite="Lax")
        return response

    async def _chat(self, request: web.Request) -> web.Response:
        return self._page(request)

    async def _form(self, request: web.Request) -> web.Response:
        return self._page(request, "form.html")

    async def _chatgpt(self, request: web.Request) -> web.Response:
        return self._page(request, "chatgpt.html")

    async def _app(self, request: web.Request) -> web.Response:
        """The chat behind a login: without the auth cookie it sends the browser to the login page."""
        if request.cookies.get("auth") != "ok":
            raise web.HTTPFound(f"/login?next={request.path_qs}")
        return self._page(request)

    async def _login_page(self, request: web.Request) -> web.Response:
        html = ("<!doctype html><title>Log in</title><form method=post action='/login?next="
                f"{quote(request.query.get('next', '/app'), safe='')}'><button id=signin>Sign in</button></form>"
                + ("<script>document.forms[0].submit()</script>" if self.person_signs_in else ""))
        return web.Response(text=html, content_type="text/html")

    async def _login(self, request: web.Request) -> web.Response:
        response = web.HTTPFound(request.query.get("next", "/app"))
        response.set_cookie("auth", "ok", max_age=3600, httponly=True, samesite="Lax")  # persists across restarts
        raise response

    async def _session(self, request: web.Request) -> web.Response:
        return web.json_response({"user": {"name": "fixture"}} if request.cookies.get("auth") == "ok" else {})

    async def _gen(self, request: web.Request) -> web.Response:
        body = await request.json()
        ids = []
        for n in range(int(body.get("count", 1))):
            ids.append(self._new_image(body["prompt"] + ("" if n == 0 else f" #{n + 1}"), bool(body.get("stable"))))
        preview = self._new_image(body["prompt"] + " preview") if body.get("preview") else None
        return web.json_response({"ids": ids, "preview": preview})

    def _new_image(self, text: str, stable: bool = False) -> str:
        """A new image id; with `stable`, the same text always gets the same id, so the same URL."""
        image_id = hashlib.sha256(text.encode()).hexdigest()[:12] if stable else secrets.token_hex(6)
        self.images[image_id] = text
        self.generated.append(text)
        return image_id

    async def _image(self, request: web.Request) -> web.Response:
        if "sid" not in request.cookies:
            raise web.HTTPForbidden(text="no session")
        return self._png(request)

    async def _cross_image(self, request: web.Request) -> web.Response:
        return self._png(request)  # another origin for the page, and no CORS header: fetch() cannot read it

    def _png(self, request: web.Request) -> web.Response:
        text = self.images.get(request.match_info["id"])
        if text is None:
            raise web.HTTPNotFound()
        return web.Response(body=render_png(text), content_type="image/png")


class Harness:
    """The fixture site and one headless Chromium on a background event loop."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sites-harness", daemon=True)
        self.site = FixtureSite()
        self.chromium = Chromium("/usr/bin/chromium", root / "profile", root / "chromium.log")
        self.browser: Any = None

    @staticmethod
    def profile(**sections: dict[str, Any]) -> dict[str, Any]:
        return fixture_profile(**sections)

    @staticmethod
    def form(**sections: dict[str, Any]) -> dict[str, Any]:
        """The fixture form's profile (form.toml), with some sections' keys replaced."""
        return fixture_profile(FORM_PROFILE, **sections)

    def drive(self, profile: dict[str, Any], url: str, prompts: list[str], snapshots: Path | None = None,
              after: str | None = None) -> tuple[list[bytes | SiteError], Any]:
        """Open `url` in a new page and run the prompts as a worker does, each once; each result is image bytes or the
        SiteError. With `after`, the script is evaluated on the page at the end and its value returned too."""
        browser = self.browser_ready()

        async def go() -> tuple[list[bytes | SiteError], Any]:
            page = await browser.newPage()
            try:
                adapter = ProfileAdapter(profile, snapshots, wid=1)
                results: list[bytes | SiteError] = []
                for prompt in prompts:
                    try:
                        if adapter.opened_url != url:
                            await adapter.open(page, url, 10)
                        results.append(await adapter.generate(page, prompt, self.deadline(), 5))
                    except SiteError as exc:
                        results.append(exc)
                return results, (await page.evaluate(after) if after else None)
            finally:
                await page.close()

        return self.run(go())

    @staticmethod
    def deadline(seconds: float = 20) -> float:
        return time.monotonic() + seconds

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self.thread.start()
        self.run(self.site.start())

    def browser_ready(self) -> Any:
        if self.browser is None:
            self.browser = self.run(connect_browser(self.chromium, 30, {"width": 800, "height": 600}))
        return self.browser

    def stop(self) -> None:
        async def close() -> None:
            if self.browser is not None:
                try:
                    await asyncio.wait_for(self.browser.disconnect(), 5)
                except Exception:  # the browser is killed next anyway
                    pass
            await self.site.stop()
        try:
            self.run(close(), 30)
        finally:
            self.chromium.kill()
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """The fixture site (and, on first use, a Chromium) for one test module."""
    h = Harness(tmp_path_factory.mktemp("sites"))
    h.start()
    try:
        yield h
    finally:
        h.stop()


def fixture_profile(path: Path = FIXTURE_PROFILE, **sections: dict[str, Any]) -> dict[str, Any]:
    """A fixture page's profile (fixture.toml by default) with some sections' keys replaced, checked like any profile."""
    raw = tomllib.loads(path.read_text())
    for section, values in sections.items():
        if section == "top":
            raw.update(values)
        elif section == "messages":
            raw["messages"] = copy.deepcopy(values)
        else:
            raw.setdefault(section, {}).update(values)
    return profiles.normalize(raw, "fixture.toml")
