"""A worker process: one Chromium, one page, one site adapter, one task at a time.

Started by the fleet through a spawn context.  It talks to the daemon only
through its Channel:

    daemon -> worker  {"t": "task", "key", "prompt", "path", "site", "url", "deadline_s"}
                      {"t": "stop"}
    worker -> daemon  {"t": "hello", "pid", "browser": {"pid", "pgid", "profile"}}
                      {"t": "hb", "rss_mb"}
                      {"t": "result", "key", "ok": true, "file", "sha256", "bytes", "adopted", "started", "finished"}
                      {"t": "result", "key", "ok": false, "error", "kind", "wait_s", "started", "finished"}
                      {"t": "fatal", "error", "code"}   the worker cannot run at all
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import logging
import os
import signal
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil
import pyppeteer

from .browser import Chromium
from .channel import Channel
from .config import Config
from .errors import BrowserError, SiteError
from .outputs import write_atomic
from .sites import adapter_for
from .sites.base import CRASH, TIMEOUT, SiteAdapter

log = logging.getLogger("tabfleetd.worker")

PR_SET_PDEATHSIG = 1
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF", b"GIF8")

EXIT_OK = 0
EXIT_BROWSER = 3  # Chromium could not be started


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the daemon dies, however it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def main(wid: int, conn: Connection, config: Config, chromium: str) -> None:
    """Process entry point."""
    die_with_parent()
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s worker-{wid} %(levelname)s %(name)s: %(message)s")
    for noisy in ("pyppeteer", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    sys.exit(asyncio.run(Worker(wid, conn, config, chromium).run()))


def tree_memory_mb(pid: int) -> float:
    """Proportional set size (PSS) of a process and all its descendants.

    Summed RSS would count Chromium's shared pages once per process, several
    times over; PSS splits each shared page among the processes that map it.
    """
    total = 0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for proc in procs:
        try:
            total += proc.memory_full_info().pss
        except psutil.Error:
            continue
    return round(total / 2**20, 1)


class Worker:
    def __init__(self, wid: int, conn: Connection, config: Config, chromium: str) -> None:
        self.wid = wid
        self.conn = conn
        self.config = config
        self.chromium = Chromium(
            chromium, config.state_dir / "profiles" / f"worker-{wid}",
            config.state_dir / "logs" / f"chromium-{wid}.log",
            headless=config.headless, extra_args=config.chromium_args)
        self.browser: Any = None
        self.page: Any = None
        self.adapter: SiteAdapter | None = None
        self.chan: Channel | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()
        assert main_task is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, main_task.cancel)
        self.chan = await Channel.open(self.conn)
        heartbeat = None
        try:
            try:
                await self.start_browser()
            except BrowserError as exc:
                await self.chan.send({"t": "fatal", "error": str(exc), "code": exc.code})
                return EXIT_BROWSER
            heartbeat = asyncio.create_task(self.heartbeats())
            while True:
                try:
                    msg = await self.chan.recv()
                except EOFError:
                    log.info("the daemon has gone; stopping")
                    break
                if msg.get("t") == "task":
                    await self.chan.send(await self.run_task(msg))
                elif msg.get("t") == "stop":
                    break
        except asyncio.CancelledError:
            log.info("stopping on signal")
        finally:
            if heartbeat:
                heartbeat.cancel()
            await self.stop_browser()
        return EXIT_OK

    async def start_browser(self) -> None:
        timeout = self.config.browser_start_timeout_s
        ws = await self.chromium.start(timeout)
        try:
            self.browser = await asyncio.wait_for(
                pyppeteer.connect(browserWSEndpoint=ws, defaultViewport={"width": 1024, "height": 768}), timeout)
            pages = await asyncio.wait_for(self.browser.pages(), timeout)
            self.page = pages[0] if pages else await asyncio.wait_for(self.browser.newPage(), timeout)
        except Exception as exc:
            self.chromium.kill()
            raise BrowserError(f"cannot drive Chromium: {type(exc).__name__}: {exc}") from None
        self.adapter = None
        assert self.chan is not None
        await self.chan.send({"t": "hello", "pid": os.getpid(), "browser": {
            "pid": self.chromium.pid, "pgid": self.chromium.pid, "profile": str(self.chromium.profile)}})

    async def stop_browser(self) -> None:
        if self.browser is not None:
            try:
                await asyncio.wait_for(self.browser.disconnect(), 2)
            except Exception:  # the browser may already be gone; we kill it next anyway
                pass
        self.browser = self.page = None
        self.chromium.kill()

    async def recycle_browser(self) -> None:
        log.info("recycling Chromium")
        await self.stop_browser()
        await self.start_browser()

    async def heartbeats(self) -> None:
        assert self.chan is not None
        last_rss = 0.0
        measured = 0.0
        while True:
            now = time.monotonic()
            if now - measured > 5:
                last_rss, measured = tree_memory_mb(os.getpid()), now
            await self.chan.send({"t": "hb", "rss_mb": last_rss})
            await asyncio.sleep(self.config.heartbeat_interval_s)

    async def run_task(self, msg: dict[str, Any]) -> dict[str, Any]:
        started = time.time()
        deadline = time.monotonic() + float(msg["deadline_s"])
        path = Path(msg["path"])
        reply: dict[str, Any] = {"t": "result", "key": msg["key"], "started": started}
        try:
            if path.exists():
                data, adopted = path.read_bytes(), True
            else:
                data, adopted = await self.generate(msg, deadline), False
                write_atomic(path, data)
        except SiteError as exc:
            if exc.kind == TIMEOUT:
                await self.recycle_quietly()
            return reply | {"ok": False, "error": str(exc), "kind": exc.kind, "wait_s": exc.wait_s, "finished": time.time()}
        except Exception as exc:  # a dead browser surfaces as many pyppeteer/websockets types
            log.warning("task %s: %s: %s", msg["key"], type(exc).__name__, exc)
            await self.recycle_quietly()
            return reply | {"ok": False, "error": f"{type(exc).__name__}: {exc}", "kind": CRASH, "wait_s": None, "finished": time.time()}
        return reply | {"ok": True, "file": path.name, "sha256": hashlib.sha256(data).hexdigest(),
                        "bytes": len(data), "adopted": adopted, "finished": time.time()}

    async def recycle_quietly(self) -> None:
        try:
            await self.recycle_browser()
        except BrowserError as exc:
            log.error("cannot restart Chromium: %s", exc)
            raise SystemExit(EXIT_BROWSER) from None

    async def generate(self, msg: dict[str, Any], deadline: float) -> bytes:
        if self.page is None:
            await self.start_browser()
        url = msg["url"]
        if self.adapter is None or self.adapter.name != msg["site"] or self.adapter.opened_url != url:
            self.adapter = adapter_for(msg["site"])
            await self.adapter.open(self.page, url, min(self.config.cdp_timeout_s, max(1.0, deadline - time.monotonic())))
        remaining = deadline - time.monotonic()
        try:
            data = await asyncio.wait_for(
                self.adapter.generate(self.page, msg["prompt"], deadline, self.config.cdp_timeout_s), remaining + 2)
        except asyncio.TimeoutError:
            raise SiteError(f"no image within the task deadline of {msg['deadline_s']:.0f} s", TIMEOUT) from None
        if not data.startswith(IMAGE_MAGIC):
            raise SiteError(f"the site returned {len(data)} bytes that are not an image", "transient")
        return data
