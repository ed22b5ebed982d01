"""The control commands: one handler per op, each with its wire message beside it."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from . import __version__, outputs, protocol
from .errors import BadArgs, UnknownOp, VersionMismatch
from .prompts import parse_prompts
from .server import Peer
from .states import BUCKETS, FINISHED_JOB_STATES, JobState

if TYPE_CHECKING:
    from .app import Daemon

Op = Callable[["Commands", dict[str, Any], Peer], Awaitable[Any]]
OPS: dict[str, Op] = {}
DEMO_KNOBS = frozenset({"latency", "jitter", "error_rate", "error_message", "rate_limit", "hang_rate", "lockup_rate", "seed"})
SITES = ("demo",)


def op(name: str) -> Callable[[Op], Op]:
    def register(fn: Op) -> Op:
        OPS[name] = fn
        return fn
    return register


def arg(args: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ..., *, allow_none: bool = False) -> Any:
    """Fetch one argument, checking its type; BadArgs names it when wrong or missing."""
    if name not in args or (args[name] is None and default is not ...):
        if default is ...:
            raise BadArgs(f"missing argument '{name}'")
        return default
    value = args[name]
    if value is None and allow_none:
        return None
    if isinstance(value, bool) and kind is not bool and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise BadArgs(f"argument '{name}' has the wrong type (bool)")
    if not isinstance(value, kind):
        raise BadArgs(f"argument '{name}' must be {getattr(kind, '__name__', kind)}, not {type(value).__name__}")
    return value


class Commands:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def __call__(self, name: str, args: dict[str, Any], peer: Peer) -> Any:
        handler = OPS.get(name)
        if handler is None:
            raise UnknownOp(f"unknown op '{name}' (known: {', '.join(sorted(OPS))})")
        return await handler(self, args, peer)

    # hello {"version": int, "client": str} -> {"version", "daemon", "pid"}
    @op("hello")
    async def hello(self, args: dict[str, Any], peer: Peer) -> Any:
        version = arg(args, "version", int)
        if version != protocol.PROTOCOL_VERSION:
            peer.greeted = False
            raise VersionMismatch(f"this tabfleetd {__version__} speaks protocol {protocol.PROTOCOL_VERSION}, "
                                  f"the client speaks {version}: install matching versions of tabfleetd and tabfleetctl")
        return {"version": protocol.PROTOCOL_VERSION, "daemon": __version__, "pid": os.getpid()}

    # ping {} -> {"pong": true, "uptime_s", "pid"}
    @op("ping")
    async def ping(self, args: dict[str, Any], peer: Peer) -> Any:
        return {"pong": True, "uptime_s": round(time.monotonic() - self.daemon.started, 1), "pid": os.getpid()}

    # submit {"filename": str, "data": bin, "site": str, "out": str|nil, "cwd": str, "name": str|nil,
    #         "workers": int|nil, "knobs": {str: str}} -> {"job": id, "tasks": n, "out": dir}
    @op("submit")
    async def submit(self, args: dict[str, Any], peer: Peer) -> Any:
        d = self.daemon
        filename = arg(args, "filename", str)
        data = arg(args, "data", (bytes, str))
        data = data.encode() if isinstance(data, str) else data
        site = arg(args, "site", str, "demo")
        if site not in SITES:
            raise BadArgs(f"unknown site '{site}' (known: {', '.join(SITES)})")
        knobs = arg(args, "knobs", dict, {})
        for key, value in knobs.items():
            if key not in DEMO_KNOBS:
                raise BadArgs(f"unknown site knob '{key}' (known: {', '.join(sorted(DEMO_KNOBS))})")
            if not isinstance(value, (str, int, float)):
                raise BadArgs(f"site knob '{key}' must be a string or a number")
        knobs = {str(k): str(v) for k, v in knobs.items()}
        workers = arg(args, "workers", int, 0)
        if workers < 0:
            raise BadArgs("argument 'workers' must be zero (all) or more")
        cwd = arg(args, "cwd", str, "/")
        out = arg(args, "out", str, None)
        out_dir = Path(cwd, out) if out else Path(cwd, "tabfleet-out", "{job}")
        name = arg(args, "name", str, None) or Path(filename).stem
        prompts = parse_prompts(filename, data, max_chars=d.config.max_prompt_chars)
        async with d.submit_lock:  # two submits must not both claim one output directory
            job_id = await d.store("new_job_id")
            out_dir = Path(str(out_dir).replace("{job}", job_id))
            await asyncio.get_running_loop().run_in_executor(None, outputs.claim_out_dir, out_dir, job_id)
            job = await d.store("create_job", job_id=job_id, name=name, site=site, knobs=knobs, out=str(out_dir),
                                prompts=prompts, max_workers=workers, max_attempts=d.config.max_attempts, source=filename)
        d.scheduler.job_changed(job)
        return {"job": job["id"], "tasks": job["total"], "out": job["out"]}

    # status {"job": str|nil} -> {"jobs": [...], "workers": [...], "memory": {...}}
    @op("status")
    async def status(self, args: dict[str, Any], peer: Peer) -> Any:
        job_id = arg(args, "job", str, None)
        jobs = [await self.daemon.store("get_job", job_id)] if job_id else await self.daemon.store("list_jobs")
        vm = psutil.virtual_memory()
        return {
            "jobs": [self.job_view(j) for j in jobs],
            "workers": [h.view() for h in sorted(self.daemon.fleet.workers.values(), key=lambda h: h.wid)],
            "memory": {"used_mb": round((vm.total - vm.available) / 2**20), "total_mb": round(vm.total / 2**20),
                       "percent": vm.percent, "daemon_rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1)},
        }

    def job_view(self, job: dict[str, Any]) -> dict[str, Any]:
        counts = job["counts"]
        rate = self.daemon.scheduler.rate_per_min(job["id"])
        remaining = counts["pending"] + counts["running"]
        eta = round(remaining / rate * 60) if rate > 0 and remaining else (0 if not remaining else None)
        view = {"id": job["id"], "name": job["name"], "state": job["state"], "site": job["site"], "out": job["out"],
                "total": job["total"], "rate_per_min": rate, "eta_s": eta, "created": job["created"],
                "finished": job["finished"]}
        view.update({b: counts[b] for b in BUCKETS})
        return view

    # tasks {"job": str, "state": str|nil}
    #   -> {"tasks": [{"index", "prompt", "state", "attempts", "file", "error", "error_kind", "worker", "started", "finished"}]}
    @op("tasks")
    async def tasks(self, args: dict[str, Any], peer: Peer) -> Any:
        job_id = arg(args, "job", str)
        state = arg(args, "state", str, None)
        await self.daemon.store("get_job", job_id)
        keep = ("index", "prompt", "state", "attempts", "file", "error", "error_kind", "worker", "started", "finished")
        return {"tasks": [{k: t.get(k) for k in keep} for t in await self.daemon.store("tasks_of", job_id)
                          if state is None or t["state"] == state]}

    async def _set_state(self, args: dict[str, Any], state: JobState) -> Any:
        d = self.daemon
        job_id = arg(args, "job", str)
        job = await d.store("get_job", job_id)
        if state == JobState.ACTIVE and job["state"] == JobState.DONE.value:
            return {"job": job_id, "state": job["state"], "changed": False, "message": "every task is done already"}
        if state == JobState.CANCELLED and job["state"] in {s.value for s in FINISHED_JOB_STATES}:
            return {"job": job_id, "state": job["state"], "changed": False, "message": f"the job has already ended ({job['state']})"}
        before = job["state"]
        job = await d.store("set_job_state", job_id, state, d.config.max_attempts)
        d.scheduler.job_changed(job)
        return {"job": job_id, "state": job["state"], "changed": before != job["state"]}

    # resume {"job": str} -> {"job", "state", "changed"}   failed tasks get fresh attempts
    @op("resume")
    async def resume(self, args: dict[str, Any], peer: Peer) -> Any:
        return await self._set_state(args, JobState.ACTIVE)

    # pause {"job": str} -> {"job", "state", "changed"}    running tasks finish; no new ones start
    @op("pause")
    async def pause(self, args: dict[str, Any], peer: Peer) -> Any:
        return await self._set_state(args, JobState.PAUSED)

    # cancel {"job": str} -> {"job", "state", "changed"}
    @op("cancel")
    async def cancel(self, args: dict[str, Any], peer: Peer) -> Any:
        return await self._set_state(args, JobState.CANCELLED)

    # workers {} -> {"workers": [{"id", "pid", "state", "tasks_done", "current_task", "rss_mb", "last_error", "restarts"}]}
    @op("workers")
    async def workers(self, args: dict[str, Any], peer: Peer) -> Any:
        return {"workers": [h.view() for h in sorted(self.daemon.fleet.workers.values(), key=lambda h: h.wid)]}

    # shutdown {} -> {"stopping": true}   the daemon stops after replying
    @op("shutdown")
    async def shutdown(self, args: dict[str, Any], peer: Peer) -> Any:
        asyncio.get_running_loop().call_soon(self.daemon.request_stop)
        return {"stopping": True}

