"""An account's session in a real Chromium (tabfleetd.fleet.sessions): cookies in and out, local storage before the site loads."""

from __future__ import annotations

from typing import Any

import pytest

from tabfleetd.fleet import sessions

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_cookies_go_in_fill_gaps_come_back_and_can_be_replaced(harness: Any) -> None:
    """The site sees an applied cookie; a merge keeps what the browser has; read back as stored; replace clears them."""
    browser = harness.browser_ready()
    send = browser._connection.send
    auth = {"name": "auth", "value": "ok", "domain": "127.0.0.1", "path": "/", "secure": False, "httpOnly": True}

    async def go() -> dict[str, Any]:
        page = await browser.newPage()
        try:
            seen: dict[str, Any] = {"applied": await sessions.apply_cookies(send, [auth], None, replace=False)}
            await page.goto(harness.site.url("/chat"))
            seen["probe"] = await page.evaluate("() => fetch('/api/session').then(r => r.json())")
            stale = auth | {"value": "stale"}
            seen["merged"] = await sessions.apply_cookies(send, [stale], None, replace=False)
            seen["read"] = await sessions.read_cookies(send, None)
            seen["replaced"] = await sessions.apply_cookies(send, [], None, replace=True)
            seen["after"] = await page.evaluate("() => fetch('/api/session').then(r => r.json())")
            return seen
        finally:
            await page.close()

    seen = harness.run(go())
    assert seen["applied"] == 1 and seen["probe"] == {"user": {"name": "fixture"}}
    assert seen["merged"] == 0, "the browser's own cookie is newer than the stored one"
    assert [c for c in seen["read"] if c["name"] == "auth"] == [auth | {"sourceScheme": "NonSecure", "sourcePort": 80}]
    assert seen["after"] == {}


def test_local_storage_is_there_before_the_sites_scripts_and_is_read_back(harness: Any) -> None:
    """The site's first load finds the account's local storage; once the script is removed, what the site
    writes later stands; the items are read back for the account."""
    browser = harness.browser_ready()
    origin = harness.site.url("").rstrip("/")

    async def go() -> dict[str, Any]:
        page = await browser.newPage()
        try:
            script = await sessions.install_storage(page, [{"origin": origin, "localStorage": [
                {"name": "token", "value": "from-the-account"}]}, {"origin": "https://elsewhere.example",
                                                                     "localStorage": [{"name": "x", "value": "y"}]}])
            await page.goto(harness.site.url("/chat"))
            first = await page.evaluate("[localStorage.getItem('token'), localStorage.getItem('x')]")
            assert script is not None
            await sessions.remove_storage_script(page, script)
            await page.evaluate("localStorage.setItem('token', 'refreshed by the site')")
            await page.goto(harness.site.url("/chat"))
            later = await page.evaluate("localStorage.getItem('token')")
            return {"first": first, "later": later, "read": await sessions.read_storage(page)}
        finally:
            await page.close()

    seen = harness.run(go())
    assert seen["first"] == ["from-the-account", None]
    assert seen["later"] == "refreshed by the site"
    assert seen["read"] == {"origin": origin, "localStorage": [{"name": "token", "value": "refreshed by the site"}]}
    merged = sessions.merge_origin([{"origin": origin, "localStorage": []}, {"origin": "https://b", "localStorage": []}],
                                   seen["read"])
    assert merged == [{"origin": "https://b", "localStorage": []}, seen["read"]]
