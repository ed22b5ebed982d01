"""A benchmark-only worker: it speaks the real worker protocol (worker.py) but answers every task at once.

It has no browser.  For each task it writes a ready image at the task's path the way a worker does (an
atomic write of the real outputs module) and reports it done, so the daemon does all of its own work per
task (dispatch, store writes, manifest, events) and nothing else takes time.  tests/bench/coordinator_daemon.py
puts it in place of tabfleetd's worker; nothing in tabfleetd can.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import os
import signal
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from tabfleetd.fleet.channel import Channel
from tabfleetd.demo.demoimage import render_png
from tabfleetd.files.outputs import read_image, write_atomic

IMAGE = render_png("a ready image")
SHA256 = hashlib.sha256(IMAGE).hexdigest()


def main(wid: int, conn: Connection, config: Any, chromium: str) -> None:
    """Process entry point, with the real worker's signature."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: gone with the daemon, as a real worker is
    except (OSError, AttributeError):
        pass
    sys.exit(asyncio.run(run(conn, float(config.heartbeat_interval_s))))


async def heartbeats(chan: Channel, every: float) -> None:
    while True:
        await chan.send({"t": "hb", "rss_mb": 0.0})
        await asyncio.sleep(every)


async def run(conn: Connection, heartbeat_s: float) -> int:
    chan = await Channel.open(conn)
    await chan.send({"t": "hello", "pid": os.getpid(), "rotations": 0, "browser": None})
    beating = asyncio.create_task(heartbeats(chan, heartbeat_s))
    try:
        while True:
            try:
                msg = await chan.recv()
            except EOFError:
                return 0
            if msg.get("t") == "stop":
                return 0
            if msg.get("t") == "task":
                await chan.send(answer(msg))
    finally:
        beating.cancel()


def answer(msg: dict[str, Any]) -> dict[str, Any]:
    started = time.time()
    path = Path(msg["path"])
    adopted = read_image(path) is not None
    if not adopted:
        write_atomic(path, IMAGE)
    finished = time.time()
    return {"t": "result", "key": msg["key"], "ok": True, "file": path.name, "sha256": SHA256, "bytes": len(IMAGE),
            "adopted": adopted, "started": started, "finished": finished, "sent_at": started, "answer_s": finished - started}
