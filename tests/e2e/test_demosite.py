"""End-to-end tests of the demo site, driven through real headless Chromium."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import pyppeteer
from pyppeteer.browser import Browser
from pyppeteer.page import Page

from tabfleetd.demo import demosite
from tabfleetd.demo.demoimage import render_png
from tabfleetd.demo.demosite import DEFAULT_ERROR_MESSAGE, SESSION_COOKIE, DemoSite

CHROMIUM = "/usr/bin/chromium"
WAIT_MS = 10_000

DONE_COUNT = "n => document.querySelectorAll('.turn.assistant[data-state=done]').length >= n"
FETCH_BASE64 = """async (src) => {
  const response = await fetch(src, {credentials: "include"});
  const bytes = new Uint8Array(await response.arrayBuffer());
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text);
}"""
LAST_ANSWER = """() => {
  const turns = document.querySelectorAll('#thread .turn.assistant');
  const turn = turns[turns.length - 1];
  const img = turn.querySelector('img.result');
  const error = turn.querySelector('p.error');
  return {
    state: turn.dataset.state || null,
    loading: !!turn.querySelector('.loading[data-testid=image-gen-loading-state]'),
    src: img ? img.getAttribute('src') : null,
    alt: img ? img.alt : null,
    width: img ? img.naturalWidth : 0,
    error: error ? error.textContent : null,
    kind: error ? error.dataset.kind : null,
  };
}"""
BUTTONS = """() => ({
  send: !document.getElementById('send').hidden,
  stop: !document.getElementById('stop').hidden,
})"""


def run(test: Callable[[], Awaitable[None]]) -> None:
    """Run one async test body in a fresh event loop."""
    asyncio.run(test())


async def launch() -> Browser:
    """Start headless Chromium; --no-sandbox only because root cannot sandbox."""
    args = [
        "--headless=new",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    if os.geteuid() == 0:
        args.insert(0, "--no-sandbox")
    # headless=False keeps pyppeteer from adding the old-style bare --headless.
    return await asyncio.wait_for(
        pyppeteer.launch(
            executablePath=CHROMIUM,
            headless=False,
            args=args,
            handleSIGINT=False,
            handleSIGTERM=False,
            handleSIGHUP=False,
        ),
        30,
    )


async def close(browser: Browser) -> None:
    """Close the browser, killing it if a locked renderer stalls the close."""
    try:
        await asyncio.wait_for(browser.close(), 15)
    except Exception:
        browser.process.kill()
        browser.process.wait(timeout=10)


@contextlib.asynccontextmanager
async def demo_page(query: str) -> AsyncIterator[tuple[DemoSite, Page]]:
    """A running DemoSite and a Chromium page showing it with ``query``."""
    site = DemoSite()
    await site.start()
    browser: Browser | None = None
    try:
        browser = await launch()
        page = await asyncio.wait_for(browser.newPage(), WAIT_MS / 1000)
        await page.goto(f"{site.base_url}/?{query}", timeout=WAIT_MS)
        yield site, page
    finally:
        if browser is not None:
            await close(browser)
        await asyncio.wait_for(site.stop(), 10)


@contextlib.asynccontextmanager
async def page_session() -> AsyncIterator[tuple[DemoSite, aiohttp.ClientSession]]:
    """A running DemoSite and an HTTP client holding the session cookie its page sets, as a browser would."""
    site = DemoSite()
    await site.start()
    try:
        # unsafe=True: aiohttp's jar otherwise ignores cookies from IP hosts.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
            async with client.get(f"{site.base_url}/"):
                pass
            yield site, client
    finally:
        await site.stop()


async def send(page: Page, prompt: str, *, enter: bool = False) -> None:
    """Type a prompt the way automation does and send it."""
    await page.focus("#prompt-textarea")
    await page._client.send("Input.insertText", {"text": prompt})
    if enter:
        await page.keyboard.press("Enter")
    else:
        await page.click("#send")


async def wait_done(page: Page, count: int) -> None:
    """Wait until ``count`` assistant turns are done."""
    await page.waitForFunction(DONE_COUNT, {"timeout": WAIT_MS}, count)


async def evaluate(page: Page, script: str, *args: Any) -> Any:
    """page.evaluate with a timeout."""
    return await asyncio.wait_for(page.evaluate(script, *args), WAIT_MS / 1000)


async def image_bytes(page: Page, src: str) -> bytes:
    """Read an image the way the daemon does: in-page, with the page's cookies."""
    return base64.b64decode(await evaluate(page, FETCH_BASE64, src))


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_prompt_yields_its_image() -> None:
    """A sent prompt ends in a done turn whose image bytes equal render_png(prompt)."""

    async def body() -> None:
        async with demo_page("latency=0.2") as (site, page):
            prompt = "a lighthouse at dusk, oil painting"
            await send(page, prompt)
            await wait_done(page, 1)
            answer = await evaluate(page, LAST_ANSWER)
            assert answer["state"] == "done" and not answer["loading"]
            assert answer["alt"] == f"Generated image: {prompt}"
            assert re.fullmatch(r"/img/[A-Za-z0-9_-]+\.png", answer["src"])
            assert answer["width"] == 128
            assert await image_bytes(page, answer["src"]) == render_png(prompt)
            user = await evaluate(page, "() => document.querySelector('.turn.user[data-role=user]').textContent")
            assert user == prompt
            assert await evaluate(page, "() => document.getElementById('prompt-textarea').innerText.trim()") == ""
            assert await evaluate(page, BUTTONS) == {"send": True, "stop": False}
            assert site.generated == {prompt: 1}

    run(body)


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_three_prompts_in_a_row() -> None:
    """Three prompts on one page each get their own image, in order."""

    async def body() -> None:
        async with demo_page("latency=0.2") as (site, page):
            prompts = ["first: a red cube", "second: a green sphere", "third: a blue cone"]
            for n, prompt in enumerate(prompts, start=1):
                await send(page, prompt, enter=n == 2)
                await wait_done(page, n)
            alts = await evaluate(page, "() => [...document.querySelectorAll('img.result')].map(i => i.alt)")
            assert alts == [f"Generated image: {p}" for p in prompts]
            srcs = await evaluate(page, "() => [...document.querySelectorAll('img.result')].map(i => i.getAttribute('src'))")
            assert len(set(srcs)) == 3
            for prompt, src in zip(prompts, srcs):
                assert await image_bytes(page, src) == render_png(prompt)
            assert site.generated == {p: 1 for p in prompts}

    run(body)


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_error_rate_one_shows_error() -> None:
    """error_rate=1 ends the turn with the default error message, kind error."""

    async def body() -> None:
        async with demo_page("latency=0.2&error_rate=1") as (site, page):
            await send(page, "this will fail")
            await wait_done(page, 1)
            answer = await evaluate(page, LAST_ANSWER)
            assert answer["kind"] == "error"
            assert answer["error"] == DEFAULT_ERROR_MESSAGE
            assert answer["src"] is None and not answer["loading"]
            assert site.generated == {}

    run(body)


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_poison_prompt_errors_without_knobs() -> None:
    """A prompt containing [[error]] fails even with no error knob."""

    async def body() -> None:
        async with demo_page("latency=0.1") as (_site, page):
            await send(page, "poisoned [[error]] prompt")
            await wait_done(page, 1)
            assert (await evaluate(page, LAST_ANSWER))["kind"] == "error"

    run(body)


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_rate_limit_second_send() -> None:
    """rate_limit=1/30 lets one generation through and rate-limits the next."""

    async def body() -> None:
        scope = uuid.uuid4().hex
        async with demo_page(f"latency=0.1&rate_limit=1/30&scope={scope}") as (_site, page):
            await send(page, "first one")
            await wait_done(page, 1)
            assert (await evaluate(page, LAST_ANSWER))["width"] == 128
            await send(page, "second one")
            await wait_done(page, 2)
            answer = await evaluate(page, LAST_ANSWER)
            assert answer["kind"] == "rate_limit"
            match = re.search(r"try again in (\d+) seconds", answer["error"])
            assert match and 1 <= int(match.group(1)) <= 30

    run(body)


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_image_and_api_need_session_cookie() -> None:
    """Without the page's session cookie the API and images answer 403."""

    async def body() -> None:
        site = DemoSite()
        await site.start()
        try:
            timeout = aiohttp.ClientTimeout(total=10)
            payload = {"prompt": "cookie test", "knobs": {"latency": "0"}}
            # unsafe=True: aiohttp's jar otherwise ignores cookies from IP hosts.
            jar = aiohttp.CookieJar(unsafe=True)
            async with aiohttp.ClientSession(timeout=timeout, cookie_jar=jar) as client:
                async with client.get(f"{site.base_url}/healthz") as response:
                    assert await response.text() == "ok"
                async with client.post(f"{site.base_url}/api/generate", json=payload) as response:
                    assert response.status == 403
                async with client.get(f"{site.base_url}/") as response:
                    assert response.status == 200
                    cookie = response.cookies[SESSION_COOKIE]
                    assert cookie["httponly"] and cookie["path"] == "/"
                async with client.post(f"{site.base_url}/api/generate", json=payload) as response:
                    assert response.status == 200
                    src = (await response.json())["image"]
                async with client.get(f"{site.base_url}{src}") as response:
                    assert response.status == 200
                    assert response.content_type == "image/png"
                    assert await response.read() == render_png("cookie test")
            async with aiohttp.ClientSession(timeout=timeout) as stranger:
                async with stranger.get(f"{site.base_url}{src}") as response:
                    assert response.status == 403
        finally:
            await site.stop()

    run(body)


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_seeded_draws_repeat() -> None:
    """With a seed, two sites give the same error/success sequence."""

    async def outcomes() -> list[int]:
        site = DemoSite()
        await site.start()
        try:
            knobs = {"latency": "0", "error_rate": "0.5", "seed": "42", "scope": "s"}
            async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=10), cookie_jar=aiohttp.CookieJar(unsafe=True)
            ) as client:
                async with client.get(f"{site.base_url}/"):
                    pass
                statuses = []
                for i in range(20):
                    payload = {"prompt": f"p{i}", "knobs": knobs}
                    async with client.post(f"{site.base_url}/api/generate", json=payload) as response:
                        statuses.append(response.status)
                return statuses
        finally:
            await site.stop()

    async def body() -> None:
        first, second = await outcomes(), await outcomes()
        assert first == second
        assert set(first) == {200, 500}

    run(body)


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_hang_keeps_turn_busy_and_stop_is_quick() -> None:
    """hang_rate=1 leaves the turn loading with Stop shown; the site still stops fast."""

    async def body() -> None:
        async with demo_page("latency=0.1&hang_rate=1") as (site, page):
            await send(page, "this never answers")
            await asyncio.sleep(2)
            answer = await evaluate(page, LAST_ANSWER)
            assert answer["state"] is None and answer["loading"]
            assert await evaluate(page, BUTTONS) == {"send": False, "stop": True}
            await page.click("#stop")
            await wait_done(page, 1)
            assert (await evaluate(page, LAST_ANSWER))["kind"] == "stopped"
            assert await evaluate(page, BUTTONS) == {"send": True, "stop": False}
            # A second hung request is still open when the site stops.
            await send(page, "this never answers either")
            await asyncio.sleep(0.5)
            started = time.monotonic()
            await asyncio.wait_for(site.stop(), 10)
            assert time.monotonic() - started < 3

    run(body)


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_hung_request_ends_when_its_client_leaves() -> None:
    """A hung request is let go once its client disconnects, so abandoned hangs do not pile up in the site."""

    async def body() -> None:
        async with page_session() as (site, client):
            payload = {"prompt": "left hanging", "knobs": {"latency": "0", "hang_rate": "1"}}
            posts = [asyncio.create_task(client.post(f"{site.base_url}/api/generate", json=payload)) for _ in range(3)]
            deadline = time.monotonic() + 5
            while site.hanging < 3:
                assert time.monotonic() < deadline, f"only {site.hanging} of 3 requests hung"
                await asyncio.sleep(0.05)
            for post in posts:
                post.cancel()
            await asyncio.gather(*posts, return_exceptions=True)
            await client.close()  # the client goes away
            deadline = time.monotonic() + 5
            while site.hanging:
                assert time.monotonic() < deadline, f"{site.hanging} hung requests outlived their client"
                await asyncio.sleep(0.05)
            assert site.generated == {}

    run(body)


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_generation_counts_keep_the_newest_prompts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past its cap the site's per-prompt counts forget the oldest prompts, so a demo left running does not grow."""
    monkeypatch.setattr(demosite, "_MAX_PROMPTS_COUNTED", 5)

    async def body() -> None:
        async with page_session() as (site, client):
            for n in [*range(8), 7]:
                payload = {"prompt": f"prompt {n}", "knobs": {"latency": "0"}}
                async with client.post(f"{site.base_url}/api/generate", json=payload) as response:
                    assert response.status == 200
            assert site.generated == {"prompt 3": 1, "prompt 4": 1, "prompt 5": 1, "prompt 6": 1, "prompt 7": 2}

    run(body)


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_quiet_rate_limit_scopes_are_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scope per job (the bundled profile's) does not pile up: past the cap, scopes with an empty window go,
    while a scope whose window is still full keeps refusing."""
    monkeypatch.setattr(demosite, "_SCOPES_KEPT", 4)

    async def body() -> None:
        async with page_session() as (site, client):

            async def generate(scope: str, window: str) -> int:
                knobs = {"latency": "0", "rate_limit": f"1/{window}", "scope": scope}
                async with client.post(f"{site.base_url}/api/generate",
                                       json={"prompt": f"in {scope}", "knobs": knobs}) as response:
                    return response.status

            assert await generate("busy", "60") == 200
            for n in range(12):
                assert await generate(f"job{n}", "0.05") == 200
                await asyncio.sleep(0.06)
            assert len(site._recent) <= 5
            assert await generate("busy", "60") == 429  # its full window was kept

    run(body)


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_lockup_freezes_renderer() -> None:
    """lockup_rate=1 busy-loops the page so evaluate no longer returns."""

    async def body() -> None:
        async with demo_page("latency=0.1&lockup_rate=1") as (_site, page):
            assert await evaluate(page, "1+1") == 2
            await send(page, "freeze the page")
            # The lockup starts once the server's answer lands, a moment after the send.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(page.evaluate("1+1"), 2)
                except asyncio.TimeoutError:
                    return
                await asyncio.sleep(0.05)
            pytest.fail("the page never locked up")

    run(body)


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_bad_knob_values_still_generate() -> None:
    """Unparseable knobs fall back to defaults and the prompt still gets its image."""

    async def body() -> None:
        query = "latency=abc&jitter=-1&error_rate=2&rate_limit=x/y&hang_rate=nan&seed=z&lockup_rate="
        async with demo_page(query) as (site, page):
            await send(page, "robust to bad knobs")
            await wait_done(page, 1)
            answer = await evaluate(page, LAST_ANSWER)
            assert answer["width"] == 128
            assert await image_bytes(page, answer["src"]) == render_png("robust to bad knobs")
            assert site.generated == {"robust to bad knobs": 1}

    run(body)


@pytest.mark.e2e
@pytest.mark.timeout(90)
def test_thread_keeps_last_fifty_pairs() -> None:
    """After 52 prompts the thread holds only the newest 50 prompt/answer pairs."""

    async def body() -> None:
        async with demo_page("latency=0") as (_site, page):
            for n in range(1, 53):
                await send(page, f"prompt number {n}")
                await wait_done(page, min(n, 50))
                await page.waitForFunction(
                    "() => !document.getElementById('send').hidden", {"timeout": WAIT_MS}
                )
            users = await evaluate(page, "() => [...document.querySelectorAll('.turn.user')].map(t => t.textContent)")
            assert users == [f"prompt number {n}" for n in range(3, 53)]
            assert await evaluate(page, "() => document.getElementById('thread').children.length") == 100

    run(body)
