"""The generic ProfileAdapter on real Chromium against local fixture pages, one profile feature per test."""

from __future__ import annotations

import datetime
import stat
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tabfleetd.sites import profiles
from tabfleetd.demo.demoimage import render_png
from tabfleetd.demo.demosite import DemoSite
from tabfleetd.errors import SiteError
from tabfleetd.sites.profile import ProfileAdapter
from tabfleetd.sites.base import until_clock

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def test_model_editor_with_a_draft_gets_the_exact_prompt(harness: Any) -> None:
    """A ProseMirror-like editor that undoes DOM writes, holding a draft, is cleared with keys and typed with insertText."""
    prompt = "a red fox in deep snow"
    results, _ = harness.drive(harness.profile(), harness.site.url(editor="model", draft="an old draft"), [prompt])
    assert results == [render_png(prompt)]
    assert prompt in harness.site.images.values() and not any("old draft" in t for t in harness.site.images.values())


def test_keystroke_input_and_textarea(harness: Any) -> None:
    """input.method = "keys" types real keystrokes into the model editor; a plain textarea takes insertText."""
    keys = harness.profile(input={"method": "keys"})
    results, _ = harness.drive(keys, harness.site.url(editor="model"), ["typed key by key"])
    assert results == [render_png("typed key by key")]
    results, _ = harness.drive(harness.profile(), harness.site.url(editor="textarea", draft="left over"), ["a textarea prompt"])
    assert results == [render_png("a textarea prompt")]


def test_enter_is_the_fallback_when_there_is_no_send_button_or_it_does_not_send(harness: Any) -> None:
    """With no send button, or one whose click sends nothing, submit.key (Enter) sends the prompt."""
    for mode in ("enter", "dead"):
        profile = harness.profile(timeouts={"sent_s": 0.5})
        results, turns = harness.drive(profile, harness.site.url(send=mode), [f"sent with enter {mode}"],
                               after="() => document.querySelectorAll('.turn.user').length")
        assert results == [render_png(f"sent with enter {mode}")] and turns == 1, mode


def test_flickering_busy_signal_waits_for_the_final_image(harness: Any) -> None:
    """Busy goes away for 300 ms while a preview shows; settle_s keeps the preview from being taken."""
    url = harness.site.url(busy="flicker")
    results, _ = harness.drive(harness.profile(busy={"settle_s": 0.8}), url, ["a lighthouse at dusk"])
    assert results == [render_png("a lighthouse at dusk")]
    hasty, _ = harness.drive(harness.profile(busy={"settle_s": 0}), url, ["a lighthouse at noon"])
    assert hasty == [render_png("a lighthouse at noon preview")], "without settle_s the flicker should fool the wait"


def test_a_late_second_image_is_not_taken_for_the_next_prompt(harness: Any) -> None:
    """With result.count = 2 the worker waits for a late second image; with 1, the next prompt takes it by mistake."""
    url = harness.site.url(images=2, late=400, latency=600)
    results, _ = harness.drive(harness.profile(result={"count": 2}), url, ["first prompt", "second prompt"])
    assert results == [render_png("first prompt"), render_png("second prompt")]
    mixed, _ = harness.drive(harness.profile(result={"count": 1}), url, ["third prompt", "fourth prompt"])
    assert mixed[0] == render_png("third prompt") and mixed[1] == render_png("third prompt #2")


@pytest.mark.parametrize("mode", ["blob", "data", "url"])
def test_blob_data_and_cookie_protected_images_are_read_byte_exact(harness: Any, mode: str) -> None:
    """blob:, data: and cookie-protected http images all come back as the site's exact bytes (an in-page fetch)."""
    prompt = f"an image shown as {mode}"
    results, _ = harness.drive(harness.profile(), harness.site.url(img=mode), [prompt])
    assert results == [render_png(prompt)]
    if mode == "url":
        image_id = next(i for i, t in harness.site.images.items() if t == prompt)
        fetched = harness.site.requests(f"/img/{image_id}.png")
        assert len(fetched) == 2 and all("sid" in r["cookies"] for r in fetched), "the <img> and the fetch, with the cookie"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(harness.site.url(f"/img/{image_id}.png"), timeout=5)
        assert refused.value.code == 403


def test_cross_origin_image_needs_the_response_body(harness: Any) -> None:
    """An image from another origin without CORS cannot be fetched in the page; download.method = "response" reads it."""
    url = harness.site.url(img="cross")
    refused, _ = harness.drive(harness.profile(), url, ["a cross-origin image"])
    assert isinstance(refused[0], SiteError) and "image download failed" in str(refused[0])
    results, _ = harness.drive(harness.profile(download={"method": "response"}), url, ["a network body"])
    assert results == [render_png("a network body")]


CLOCK = "4:17 PM"


@pytest.mark.parametrize("text, kind, wait", [
    ("You're generating images too quickly. Please try again in 30 seconds.", "rate_limit", 30),
    ("You're generating images too quickly. Please wait for 2 minutes.", "rate_limit", 120),
    ("You've hit the plan limit. Your limit resets in 3 hours.", "rate_limit", 3 * 3600),
    (f"You're out of image creations. Wait for more at {CLOCK}.", "rate_limit", "clock"),
    ("This request may violate our content policies.", "permanent", None),
    ("toast:Something went wrong. Please try again.", "transient", None),
    ("toast:Your session expired, log in again.", "auth", None),
    ("title:Just a moment...", "transient", None),  # mid-prompt: the next prompt reloads and waits for the check
    ("Hmm, no picture today.", "transient", None),
])
def test_each_message_class(harness: Any, tmp_path: Path, text: str, kind: str, wait: Any) -> None:
    """Messages in the answer, elsewhere on the page, or in the title map to their failure class and stated wait."""
    marker = text if text.startswith(("toast:", "title:")) else f"say:{text}"
    results, _ = harness.drive(harness.profile(), harness.site.url(), [f"[[{marker}]]"], snapshots=tmp_path)
    (error,) = results
    assert isinstance(error, SiteError) and error.kind == kind, error
    assert marker.split(":", 1)[1].rstrip(".")[:20] in str(error)
    if wait == "clock":
        expected = until_clock(CLOCK, datetime.datetime.now())
        assert expected is not None and error.wait_s is not None and abs(error.wait_s - expected) < 30
    else:
        assert error.wait_s == wait
    if text.startswith("Hmm"):
        assert "holds no image" in str(error) and list(tmp_path.glob("*.png")) and list(tmp_path.glob("*.html"))


def test_login_page_and_session_probe_mean_auth(harness: Any) -> None:
    """A redirect to a login.urls page, or a session probe without a user, fails as auth with a login hint."""
    at_login, _ = harness.drive(harness.profile(login={"urls": ["/login"]}), harness.site.url("/app"), ["x"])
    assert isinstance(at_login[0], SiteError) and at_login[0].kind == "auth" and "tabfleetctl login --worker 1" in str(at_login[0])
    probed, _ = harness.drive(harness.profile(login={"probe_url": "/api/session", "probe_pattern": '"user"'}),
                      harness.site.url(), ["y"])
    assert isinstance(probed[0], SiteError) and probed[0].kind == "auth" and "/api/session" in str(probed[0])


def test_a_selector_that_misses_is_named_and_leaves_a_screenshot_and_html(harness: Any, tmp_path: Path) -> None:
    """When the input selector matches nothing, the error names the key and the selector, and a snapshot is saved
    for the daemon's user alone (0600 in a 0700 directory), named in the error by its name only, not its path."""
    snapshots = tmp_path / "worker-1"
    results, _ = harness.drive(harness.profile(input={"selectors": ["#composer-v2"]}, timeouts={"load_s": 1}),
                       harness.site.url(), ["lost"], snapshots=snapshots)
    error = results[0]
    assert isinstance(error, SiteError) and "input.selectors" in str(error) and "#composer-v2" in str(error)
    shots, pages = list(snapshots.glob("*.png")), list(snapshots.glob("*.html"))
    assert len(shots) == 1 and len(pages) == 1 and f"worker-1/{shots[0].name}" in str(error)
    assert str(tmp_path) not in str(error)
    assert [stat.S_IMODE(p.stat().st_mode) for p in (snapshots, shots[0], pages[0])] == [0o700, 0o600, 0o600]
    assert shots[0].read_bytes().startswith(b"\x89PNG") and "prompt-textarea" in pages[0].read_text()


def test_new_conversation_by_click_and_by_navigation(harness: Any) -> None:
    """conversation.new = "click" empties the thread before each prompt; "navigate" loads the start URL again."""
    clicked, turns = harness.drive(harness.profile(conversation={"new": "click", "selector": "#new-chat"}),
                           harness.site.url(tag="click"), ["click one", "click two"],
                           after="() => document.querySelectorAll('.turn.user').length")
    assert clicked == [render_png("click one"), render_png("click two")] and turns == 1
    navigated, _ = harness.drive(harness.profile(conversation={"new": "navigate"}), harness.site.url(tag="nav"),
                         ["nav one", "nav two", "nav three"])
    assert navigated == [render_png(p) for p in ("nav one", "nav two", "nav three")]
    assert len(harness.site.requests("/chat?tag=nav")) == 3


def test_pacing_pauses_between_prompts(harness: Any) -> None:
    """pacing.pause_s leaves at least that long between one prompt's end and the next one's request."""
    results, _ = harness.drive(harness.profile(pacing={"pause_s": 0.7}), harness.site.url(latency=0), ["pace one", "pace two"])
    assert results == [render_png("pace one"), render_png("pace two")]
    gens = [r["time"] for r in harness.site.requests("/api/gen")][-2:]
    assert gens[1] - gens[0] >= 0.7


def test_demo_profile_costs_three_round_trips(harness: Any) -> None:
    """On the demo site a prompt costs three CDP calls: PREPARE, Input.insertText and SEND (with the download)."""
    browser = harness.browser_ready()

    async def go() -> tuple[list[str], bytes]:
        demo = DemoSite()
        await demo.start()
        page = await browser.newPage()
        try:
            profile = profiles.builtin("demo")
            adapter = ProfileAdapter(profile)
            await adapter.open(page, profiles.start_url(profile, "rt", {"latency": "0.05"}, demo.base_url), 10)
            await adapter.generate(page, "warm up", harness.deadline(), 5)
            calls: list[str] = []
            send = page._client.send

            def counting(method: str, params: dict[str, Any] | None = None) -> Any:
                calls.append(method)
                return send(method, params)

            page._client.send = counting
            data = await adapter.generate(page, "counted prompt", harness.deadline(), 5)
            return calls, data
        finally:
            await page.close()
            await demo.stop()

    calls, data = harness.run(go())
    assert data == render_png("counted prompt")
    assert calls == ["Runtime.callFunctionOn", "Input.insertText", "Runtime.callFunctionOn"]
