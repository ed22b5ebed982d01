"""Site profiles through the real daemon and tabfleetctl: listing, checking, submitting a profile file,
a headed worker on its own Xvfb, and signing a worker in with `tabfleetctl login`."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import psutil
import pyppeteer
import pytest

from tabfleetd import profiles
from tabfleetd.demoimage import render_png
from tabfleetd.display import VirtualDisplay
from tabfleetd.outputs import output_name

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

FIXTURE = Path(__file__).parent / "fixture.toml"


def write_profile(path: Path, url: str, extra: str = "") -> Path:
    """The fixture profile pointed at `url`, with extra TOML sections."""
    text = re.sub(r"(?m)^start_url = .*$", f'start_url = "{url}"', FIXTURE.read_text())
    path.write_text(text + "\n" + extra, encoding="utf-8")
    return path


def write_prompts(path: Path, prompts: list[str]) -> list[str]:
    path.write_text("\n".join(prompts) + "\n", encoding="utf-8")
    return prompts


def check_images(out: Path, prompts: list[str]) -> None:
    for index, prompt in enumerate(prompts, start=1):
        assert (out / output_name(index, prompt)).read_bytes() == render_png(prompt), prompt


def test_sites_list_show_check_and_login_without_a_display(make_daemon: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sites` lists the built-ins, `sites show` prints one, `sites check` names each bad key, login needs a display."""
    monkeypatch.delenv("DISPLAY", raising=False)
    daemon = make_daemon(workers=1)
    listed = daemon.ctl("sites", check=True).stdout
    assert re.search(r"(?m)^chatgpt\s+https://chatgpt.com/\s+headed\s+navigate", listed) and re.search(r"(?m)^demo\s", listed)
    shown = daemon.ctl("sites", "show", "chatgpt", check=True).stdout
    assert shown == profiles.builtin_text("chatgpt")
    (daemon.work / "mine.toml").write_text(shown.replace('name = "chatgpt"', 'name = "mine"'))
    assert "mine.toml: ok (site 'mine'; checked by tabfleetctl and tabfleetd)" in daemon.ctl("sites", "check", "mine.toml", check=True).stdout
    (daemon.work / "bad.toml").write_text(shown.replace("count = 1", "count = 0").replace("selector = 'img", "selecter = 'img"))
    bad = daemon.ctl("sites", "check", "bad.toml")
    assert bad.returncode == 1
    assert "bad.toml: key 'result.count' must be at least 1, not 0" in bad.stderr
    assert "unknown key 'result.selecter' (did you mean 'result.selector'?)" in bad.stderr
    assert "key 'result.selector' is missing" in bad.stderr
    (daemon.work / "broken.toml").write_text("[input\nselectors = 1\n")
    assert "not valid TOML" in daemon.ctl("sites", "check", "broken.toml").stderr
    write_prompts(daemon.work / "p.txt", ["one"])
    refused = daemon.ctl("submit", "p.txt", "--site", "bad.toml")
    assert refused.returncode == 4 and "key 'result.count'" in refused.stderr
    unknown = daemon.ctl("submit", "p.txt", "--site", "nowhere")
    assert unknown.returncode == 4 and "unknown site 'nowhere'" in unknown.stderr and "chatgpt, demo" in unknown.stderr
    login = daemon.ctl("login", "--worker", "1", "--site", "demo")
    assert login.returncode == 4 and "without DISPLAY" in login.stderr and "Xvfb will not do" in login.stderr
    daemon.stop()
    alone = daemon.ctl("sites", "check", "mine.toml")  # the checker is pure: tabfleetctl runs it without a daemon
    assert alone.returncode == 0 and "mine.toml: ok (site 'mine'; checked by tabfleetctl (no daemon answered))" in alone.stdout
    assert daemon.ctl("sites", "check", "bad.toml").returncode == 1


def test_submit_with_a_profile_file(make_daemon: Any, harness: Any) -> None:
    """`submit --site FILE.toml` sends the profile with the job; its knobs are the profile's; images are exact."""
    daemon = make_daemon(workers=2)
    write_profile(daemon.work / "fixture.toml", harness.site.url(editor="model", tag="file"))
    prompts = write_prompts(daemon.work / "p.txt", [f"a paper boat number {i}" for i in range(6)])
    result = daemon.ctl("submit", "p.txt", "--site", "fixture.toml", "--json", "--wait", check=True)
    job_id = json.loads(result.stdout.splitlines()[0])["job"]
    job = daemon.call("status", {"job": job_id})["jobs"][0]
    assert (job["state"], job["site"], job["done"]) == ("done", "fixture", 6)
    check_images(daemon.work / "tabfleet-out" / job_id, prompts)
    knob = daemon.ctl("submit", "p.txt", "--site", "fixture.toml", "--knob", "latency=1")
    assert knob.returncode == 4 and "unknown site knob 'latency' (known: none)" in knob.stderr


def xvfb_processes(state: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "Xvfb" and any(str(state) in a for a in cmdline):
            found.append(proc)
    return found


def test_headed_profile_runs_on_the_workers_own_xvfb(make_daemon: Any, harness: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With browser.headless = false and no DISPLAY, the worker runs headed Chromium on its own Xvfb, which ends with it."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed; the README's test command installs it (apt-get install xvfb)")
    monkeypatch.delenv("DISPLAY", raising=False)
    daemon = make_daemon(workers=1)
    write_profile(daemon.work / "headed.toml", harness.site.url(tag="headed"), "[browser]\nheadless = false\n")
    prompts = write_prompts(daemon.work / "p.txt", ["drawn on a virtual screen", "and another one"])
    result = daemon.ctl("submit", "p.txt", "--site", "headed.toml", "--json", "--wait", check=True)
    check_images(daemon.work / "tabfleet-out" / json.loads(result.stdout.splitlines()[0])["job"], prompts)
    agents = {r["agent"] for r in harness.site.requests("/chat?tag=headed")}
    assert agents and not any("Headless" in a for a in agents), agents
    assert len(xvfb_processes(daemon.state)) == 1
    daemon.stop()
    daemon.wait_for(lambda: not xvfb_processes(daemon.state), 10, "Xvfb ending with its worker")


async def sign_in_as_a_person(port_file: Path, timeout: float = 30) -> str:
    """Find the visible login window's browser, press its sign-in button, then close the window; return the page's URL."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            port, path = port_file.read_text().split()[:2]
            browser = await asyncio.wait_for(pyppeteer.connect(browserWSEndpoint=f"ws://127.0.0.1:{port}{path}",
                                                               defaultViewport=None), 3)
        except (OSError, ValueError, asyncio.TimeoutError, pyppeteer.errors.PyppeteerError):
            await asyncio.sleep(0.2)
            continue
        if "Headless" in await browser.userAgent():  # still the worker's own browser, about to be replaced
            await browser.disconnect()
            await asyncio.sleep(0.2)
            continue
        pages = await browser.pages()
        page = next((p for p in pages if "/login" in p.url), None)
        if page is None:
            await browser.disconnect()
            await asyncio.sleep(0.2)
            continue
        await page.waitForSelector("#signin", {"timeout": 10_000})
        await asyncio.gather(page.waitForNavigation({"timeout": 10_000}), page.click("#signin"))
        await page.waitForSelector("#prompt-textarea", {"timeout": 10_000})
        url = page.url
        for open_page in await browser.pages():
            await open_page.close()  # the last window closes: Chromium ends, as when a person closes it
        try:
            await browser.disconnect()
        except Exception:  # the browser has already gone
            pass
        return url
    raise AssertionError("no visible login window appeared")


def test_login_signs_a_blocked_worker_in_and_it_takes_tasks_again(make_daemon: Any, harness: Any, short_tmp: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A signed-out worker is blocked; `login` shows its profile on the display; the sign-in persists and the job finishes."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed; the README's test command installs it (apt-get install xvfb)")
    screen = VirtualDisplay(short_tmp / "screen", short_tmp / "screen.log")  # stands in for a person's desktop
    try:
        monkeypatch.setenv("DISPLAY", asyncio.run(screen.start()))
        daemon = make_daemon(workers=1)
        write_profile(daemon.work / "site.toml", harness.site.url("/app", tag="login"), '[login]\nurls = ["/login"]\n')
        prompts = write_prompts(daemon.work / "p.txt", ["made after signing in"])
        job_id = json.loads(daemon.ctl("submit", "p.txt", "--site", "site.toml", "--json", check=True).stdout)["job"]
        blocked = daemon.wait_for(lambda: [w for w in daemon.call("workers")["workers"] if w["state"] == "blocked"], 30,
                                  "the signed-out worker being blocked")
        assert "login page" in blocked[0]["health"] and "tabfleetctl login --worker 1" in blocked[0]["health"]
        login = daemon.ctl("login", "--worker", "1", "--site", "site.toml", check=True)
        assert f"open on display {screen.name}" in login.stdout and "/app?tag=login" in login.stdout
        url = harness.run(sign_in_as_a_person(daemon.state / "profiles" / "worker-1" / "DevToolsActivePort"))
        assert "/app?tag=login" in url
        job = daemon.wait_job(job_id, 60)
        assert (job["state"], job["done"]) == ("done", 1), daemon.log_text()
        check_images(daemon.work / "tabfleet-out" / job_id, prompts)
        signed = [r for r in harness.site.requests("/app?tag=login") if r["cookies"].get("auth") == "ok"]
        assert len({r["agent"] for r in signed}) == 2, "the login window and then the worker's own browser"
    finally:
        screen.stop()
