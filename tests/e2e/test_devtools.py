"""The DevTools pipe on real Chromium: deadlines hold on a frozen browser, death is seen at once, nothing leaks in."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import time
from pathlib import Path

import pytest

from tabfleetd.fleet.browser import Chromium
from tabfleetd.fleet.devtools import connect_browser
from tabfleetd.errors import BrowserStartError

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

CHROMIUM = "/usr/bin/chromium"


def fd_targets(pid: int) -> dict[int, str]:
    found = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            found[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
    return found


def test_frozen_browser_keeps_deadlines_and_a_dead_one_fails_calls_at_once(tmp_path: Path) -> None:
    """A call to a stopped Chromium ends at its deadline while the loop keeps running; once Chromium is killed,
    a pending call fails within a second (EOF on the pipe), with no websocket ping to wait for."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    leak_r, leak_w = os.pipe()
    os.set_inheritable(leak_w, True)  # like multiprocessing's channel in a worker: must not reach Chromium
    chromium = Chromium(CHROMIUM, tmp_path / "profile", tmp_path / "chromium.log")

    async def run() -> dict[str, float | int | str | bool]:
        browser = await connect_browser(chromium, 30, {"width": 800, "height": 600})
        page = (await browser.pages())[0]
        assert await page.evaluate("() => 6 * 7") == 42
        seen: dict[str, float | int | str | bool] = {}
        fds = fd_targets(chromium.pid)
        seen["fds_are_pipes"] = all(fds[n].startswith("pipe:") for n in (3, 4))
        seen["leaked"] = f"pipe:[{os.fstat(leak_w).st_ino}]" in fds.values()
        seen["cmdline"] = " ".join(open(f"/proc/{chromium.pid}/cmdline").read().split("\0"))

        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.05)

        tick_task = asyncio.create_task(ticker())
        os.killpg(chromium.pid, signal.SIGSTOP)
        started = time.monotonic()
        try:
            await asyncio.wait_for(page.evaluate("() => 1"), 1.0)
            seen["frozen_call"] = "answered"
        except asyncio.TimeoutError:
            seen["frozen_call"] = "timed out"
        seen["frozen_elapsed"] = time.monotonic() - started
        seen["ticks"] = ticks
        tick_task.cancel()
        os.killpg(chromium.pid, signal.SIGCONT)
        seen["after_thaw"] = await asyncio.wait_for(page.evaluate("() => 'alive'"), 10)

        pending = asyncio.ensure_future(page.evaluate("() => new Promise(() => {})"))
        await asyncio.sleep(0.2)
        os.kill(chromium.pid, signal.SIGKILL)
        started = time.monotonic()
        try:
            await asyncio.wait_for(pending, 10)
        except Exception as exc:
            seen["death_error"] = f"{type(exc).__name__}: {exc}"
        seen["death_elapsed"] = time.monotonic() - started
        return seen

    try:
        seen = asyncio.run(run())
    finally:
        chromium.kill()
        os.close(leak_r)
        os.close(leak_w)
    assert seen["fds_are_pipes"] and not seen["leaked"]
    assert "--remote-debugging-pipe" in str(seen["cmdline"]) and "--remote-debugging-port" not in str(seen["cmdline"])
    assert not (tmp_path / "profile" / "DevToolsActivePort").exists()
    assert seen["frozen_call"] == "timed out" and 0.9 < float(seen["frozen_elapsed"]) < 2.0, seen
    assert int(seen["ticks"]) >= 10, "the event loop kept running while Chromium was frozen"
    assert seen["after_thaw"] == "alive"
    assert "Target closed" in str(seen["death_error"]) and float(seen["death_elapsed"]) < 1.0, seen


def test_chromium_that_exits_at_start_is_a_clear_start_error(tmp_path: Path) -> None:
    """A Chromium that exits before answering on its pipe gives BrowserStartError with its exit code and log."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    chromium = Chromium(CHROMIUM, tmp_path / "profile", tmp_path / "chromium.log", extra_args=("--version",))
    with pytest.raises(BrowserStartError) as caught:
        asyncio.run(connect_browser(chromium, 30, None))
    assert "exited with code 0 at start" in str(caught.value) and str(tmp_path / "chromium.log") in str(caught.value)
    assert chromium.proc is None  # killed and reaped
    assert stat.S_IMODE((tmp_path / "chromium.log").stat().st_mode) == 0o600
