"""The web dashboard, loaded in real headless Chromium while a real batch runs."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import urllib.error
import urllib.request
from typing import Any

import pytest
import pyppeteer
from prometheus_client.parser import text_string_to_metric_families
from pyppeteer.browser import Browser

from tabfleetd.demo.demoimage import render_png

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PORT = free_port()
BASE = f"http://127.0.0.1:{PORT}"
DAEMON_WORKERS = 2
DAEMON_CONFIG = {"dashboard_port": PORT, "metrics_port": PORT, "stagger_s": 0.0}  # one app serves both
PROMPTS = [f"a lighthouse at dusk, study {i}" for i in range(12)]

# What the page shows, read from its DOM (the test never calls /api/state itself).
READ_PAGE = """() => ({
  refreshes: Number(document.body.dataset.refreshes),
  conn: document.getElementById('conn').textContent,
  jobs: [...document.querySelectorAll('.job')].map(j => ({
    id: j.dataset.job, state: j.dataset.state, progress: j.querySelector('.progress-text').textContent,
    counts: Object.fromEntries([...j.querySelectorAll('.count')].map(c => [c.dataset.count, Number(c.querySelector('b').textContent)])),
  })),
  workers: [...document.querySelectorAll('tr.worker')].map(w => ({id: w.dataset.worker, state: w.dataset.state,
    prompt: w.querySelector('.prompt').textContent})),
  shots: [...document.querySelectorAll('figure.shot')].map(f => ({job: f.dataset.job, index: Number(f.dataset.index),
    caption: f.querySelector('.prompt').textContent, src: f.querySelector('img').getAttribute('src'),
    width: f.querySelector('img').naturalWidth, complete: f.querySelector('img').complete})),
  events: document.querySelectorAll('#events li').length,
})"""


async def launch() -> Browser:
    """Headless Chromium; --no-sandbox only because root cannot sandbox."""
    args = ["--headless=new", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"]
    if os.geteuid() == 0:
        args.insert(0, "--no-sandbox")
    return await asyncio.wait_for(pyppeteer.launch(executablePath=CHROMIUM, headless=False, args=args, handleSIGINT=False,
                                                   handleSIGTERM=False, handleSIGHUP=False), 30)


def get(daemon: Any, path: str, host: str | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(BASE + path, headers=({"Host": host} if host else {}) | daemon.web_headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture(scope="module")
def batch(module_daemon: Any) -> str:
    """A 12-prompt job, submitted and left running (about four seconds with two workers)."""
    (module_daemon.work / "lights.txt").write_text("\n".join(PROMPTS) + "\n")
    return str(json.loads(module_daemon.ctl("submit", "lights.txt", "--knob", "latency=0.4", "--json", check=True).stdout)["job"])


def test_dashboard_shows_a_running_batch_and_its_images(module_daemon: Any, batch: str) -> None:
    """During a batch the page shows the job's counts adding up, busy workers, and each image with its own prompt."""
    job = batch

    async def body() -> None:
        browser = await launch()
        try:
            page = await browser.newPage()
            await page.setViewport({"width": 1400, "height": 1000})
            # The one-time link tabfleetctl prints sets the session cookie and leads to the page.
            link = module_daemon.ctl("dashboard", check=True).stdout.strip()
            assert link.startswith(BASE + "/login/")
            await page.goto(link, timeout=15_000)
            assert page.url == BASE + "/"
            # Mid-batch: some images shown, some tasks still to go.
            await page.waitForFunction(
                "() => document.querySelectorAll('figure.shot img').length >= 2 && "
                "[...document.querySelectorAll('figure.shot img')].every(i => i.complete && i.naturalWidth > 0)",
                {"timeout": 30_000})
            mid = await page.evaluate(READ_PAGE)
            (row,) = [j for j in mid["jobs"] if j["id"] == job]
            assert sum(row["counts"].values()) == 12, row
            assert row["state"] == "active" and row["counts"]["done"] < 12
            assert [w["id"] for w in mid["workers"]] == ["1", "2"]
            assert any(w["state"] == "busy" and w["prompt"] in PROMPTS for w in mid["workers"]), mid["workers"]
            for shot in mid["shots"]:
                assert shot["job"] == job and shot["caption"] == PROMPTS[shot["index"] - 1]
                assert shot["src"] == f"/img/{job}/{shot['index']}" and shot["width"] > 0
            await page.screenshot({"path": str(module_daemon.root / "dashboard-mid.png"), "fullPage": True})
            # The page refreshes itself: without a reload it comes to show the finished job and every image it can hold.
            module_daemon.wait_job(job, timeout=60)
            await page.waitForFunction(
                f"() => {{ const j = document.querySelector('.job[data-job=\"{job}\"]'); "
                "return j && j.dataset.state === 'done' && document.querySelectorAll('figure.shot').length === 12; }",
                {"timeout": 15_000})
            end = await page.evaluate(READ_PAGE)
            (row,) = [j for j in end["jobs"] if j["id"] == job]
            assert row["progress"] == "12 / 12" and row["counts"]["done"] == 12
            assert sorted(s["index"] for s in end["shots"]) == list(range(1, 13))
            assert end["refreshes"] > mid["refreshes"] and end["conn"].startswith("updated")
            assert end["events"] > 0
            await page.screenshot({"path": str(module_daemon.root / "dashboard-end.png"), "fullPage": True})
        finally:
            await asyncio.wait_for(browser.close(), 15)

    asyncio.run(body())


def test_images_are_served_only_for_done_tasks(module_daemon: Any, batch: str) -> None:
    """/img serves a done task's exact PNG; unknown jobs, indexes and path tricks get 404."""
    job = batch
    module_daemon.wait_job(job, timeout=60)
    status, headers, body = get(module_daemon, f"/img/{job}/3")
    assert status == 200 and headers["Content-Type"] == "image/png" and body == render_png(PROMPTS[2])
    assert "immutable" in headers["Cache-Control"]
    for path in (f"/img/{job}/99", "/img/nosuchjob/1", f"/img/{job}/..%2F..%2Fetc%2Fpasswd", "/img/..%2F/1",
                 "/etc/passwd", f"/img/{job}/manifest.jsonl"):
        assert get(module_daemon, path)[0] == 404, path


def test_page_is_locked_down(module_daemon: Any) -> None:
    """The page has a strict CSP, and a request naming a foreign Host (DNS rebinding) is refused."""
    status, headers, body = get(module_daemon, "/")
    assert status == 200 and b"tabfleet" in body
    assert "script-src 'self'" in headers["Content-Security-Policy"] and headers["X-Content-Type-Options"] == "nosniff"
    assert get(module_daemon, "/api/state", host=f"evil.example:{PORT}")[0] == 421
    assert get(module_daemon, "/", host=f"localhost:{PORT}")[0] == 200


def test_metrics_share_the_dashboard_port(module_daemon: Any) -> None:
    """With metrics_port equal to dashboard_port, /metrics is served by the same listener and parses."""
    status, headers, body = get(module_daemon, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"tabfleet_jobs", "tabfleet_tasks", "tabfleet_workers"} <= names


def test_a_busy_port_stops_the_daemon_with_a_config_error(module_daemon: Any, make_daemon: Any) -> None:
    """A second daemon whose dashboard port is taken exits 78 naming the address, leaving nothing behind."""
    other = make_daemon(config={"dashboard_port": PORT}, start=False, name="busy")
    result = subprocess.run(other.argv(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 78, result.stderr
    assert f"the dashboard cannot listen on 127.0.0.1:{PORT}" in result.stderr
    assert not other.socket.exists()
