"""The read-only web dashboard: jobs with progress, workers, and a gallery of the latest images.

It serves one page that refreshes itself from /api/state, and the images of
tasks the store lists as done, by job and index: a request can never name a
path, so nothing but finished outputs is ever read from disk.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import __version__
from ..files import outputs
from ..control.commands import Commands
from .dashboard_page import CSS, HTML, JS
from ..errors import OutDirError, UnknownJob
from ..store.events import TASK_KINDS
from ..files.outdir import image_type
from ..control.server import Peer
from ..states import TaskState
from ..store.store import task_key
from ..control.subscription import trim_finished

if TYPE_CHECKING:
    from ..control.daemonview import DaemonView

GALLERY_SIZE = 24
OLDER_PAGE = 5000  # done tasks per store read when the gallery is first filled after a start
EVENTS_SHOWN = 10
SECURITY_HEADERS = {
    # The page's script and style are served from here; nothing inline, nothing from elsewhere.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class Dashboard:
    def __init__(self, daemon: DaemonView) -> None:
        self.daemon = daemon
        self.commands = Commands(daemon)
        # The status op ignores who asks; the dashboard asks as the daemon itself.
        self.peer = Peer(os.getpid(), os.getuid(), os.getgid(), greeted=True)
        self._older: list[dict[str, Any]] | None = None  # images finished before the event log began, read once
        self._older_lock = asyncio.Lock()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.page)
        app.router.add_get("/dashboard.css", self.asset(CSS, "text/css"))
        app.router.add_get("/dashboard.js", self.asset(JS, "text/javascript"))
        app.router.add_get("/api/state", self.state)
        app.router.add_get("/img/{job:[A-Za-z0-9_-]{1,64}}/{index:[0-9]{1,9}}", self.image)

    def close(self) -> None:
        pass

    async def page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=HTML, content_type="text/html", charset="utf-8",
                            headers=SECURITY_HEADERS | {"Cache-Control": "no-cache"})

    @staticmethod
    def asset(text: str, content_type: str) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            return web.Response(text=text, content_type=content_type, charset="utf-8",
                                headers=SECURITY_HEADERS | {"Cache-Control": "no-cache"})
        return handle

    async def state(self, request: web.Request) -> web.StreamResponse:
        status = await self.commands.status({}, self.peer)
        task_events = self.daemon.events.recent(limit=EVENTS_SHOWN, kinds=TASK_KINDS)
        body = {"version": __version__, "time": time.time(), "jobs": trim_finished(status["jobs"]),
                "workers": status["workers"], "memory": status["memory"], "gallery": await self.gallery(),
                "events": task_events[::-1]}
        return web.json_response(body, headers=SECURITY_HEADERS | {"Cache-Control": "no-store"})

    async def gallery(self) -> list[dict[str, Any]]:
        """The newest finished images: from the event log, topped up from the store after a restart."""
        items: list[dict[str, Any]] = []
        seen: set[tuple[str, int]] = set()
        for event in reversed(self.daemon.events.events):
            if event["kind"] == "task_done" and event.get("file") and (event["job"], event["index"]) not in seen:
                seen.add((event["job"], event["index"]))
                items.append(picture(event["job"], event["index"], event["prompt"], event["file"], event["time"]))
                if len(items) == GALLERY_SIZE:
                    return items
        for item in await self.older():
            if (item["job"], item["index"]) not in seen:
                items.append(item)
        return items[:GALLERY_SIZE]

    async def older(self) -> list[dict[str, Any]]:
        async with self._older_lock:
            if self._older is None:
                self._older = await self._read_older()
        return self._older

    async def _read_older(self) -> list[dict[str, Any]]:
        # Page through the done tasks, keeping only the newest few: a job may hold a million of them.
        newest: list[tuple[float, int, dict[str, Any]]] = []  # a min-heap on finish time
        order = itertools.count()  # ties never compare the dicts
        for job in reversed(await self.daemon.store("list_jobs")):
            if not job["counts"]["done"]:
                continue
            after: int | None = 0
            while after is not None:
                page, after = await self.daemon.store("tasks_page", job["id"], after, OLDER_PAGE, TaskState.DONE.value)
                for t in page:
                    if t.get("file"):
                        item = picture(job["id"], t["index"], t["prompt"], t["file"], t.get("finished") or 0)
                        push = heapq.heappush if len(newest) < GALLERY_SIZE else heapq.heappushpop
                        push(newest, (item["finished"], next(order), item))
            if len(newest) >= GALLERY_SIZE:
                break
        return [item for _, _, item in sorted(newest, key=lambda e: e[0], reverse=True)]

    async def image(self, request: web.Request) -> web.StreamResponse:
        job_id, index = request.match_info["job"], int(request.match_info["index"])
        task = await self.daemon.store("get_task", task_key(job_id, index))
        name = (task or {}).get("file")
        # Only a done task's own file, by its bare name inside its job's directory.
        if not task or task["state"] != TaskState.DONE.value or not name or Path(name).name != name or name.startswith("."):
            raise web.HTTPNotFound(text="no such image\n")
        try:
            job = await self.daemon.store("get_job", job_id)
        except UnknownJob:
            raise web.HTTPNotFound(text="no such image\n") from None
        # Read through the directory's fd without following a symlink, and only if it is an image file: a client
        # who owns the directory may have put a link to one of the daemon's files there since.
        try:
            data = await asyncio.get_running_loop().run_in_executor(None, outputs.read_image, Path(job["out"]) / name)
        except (OutDirError, OSError):
            data = None
        if data is None:
            raise web.HTTPNotFound(text="the image file is gone\n")
        # A done task's file never changes, so the browser keeps it instead of fetching it each refresh.
        return web.Response(body=data, content_type=image_type(data[:16]),
                            headers=SECURITY_HEADERS | {"Cache-Control": "private, max-age=86400, immutable"})


def picture(job: str, index: int, prompt: str, file: str, finished: float) -> dict[str, Any]:
    return {"job": job, "index": index, "prompt": prompt, "file": file, "finished": finished, "src": f"/img/{job}/{index}"}
