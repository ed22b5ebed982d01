"""The control commands: one handler per op, each with its wire message beside it."""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from .. import __version__, protocol
from ..files import outputs
from ..sites import profiles
from ..fleet.display import display_problem
from ..errors import BadArgs, NotAuthorized, OverCapacity, ProfileError, RequestError, UnknownOp, VersionMismatch
from .export import PAGE as EXPORT_PAGE, pages as export_pages
from ..fleet.fleet import BLOCKED, BUSY, IDLE
from ..files.outdir import resolve_out
from .prompts import parse_prompts
from ..schedule.rate import eta_seconds
from .server import Peer, Stream, is_operator
from ..states import BUCKETS, FINISHED_JOB_STATES, JOB_TRANSITIONS, JobState
from .subscription import Subscription, trim_finished

if TYPE_CHECKING:
    from .daemonview import DaemonView

Op = Callable[["Commands", dict[str, Any], Peer], Awaitable[Any]]
OPS: dict[str, Op] = {}
# Ops that act on the daemon, not on one's own jobs: root's and the daemon user's (see README "Security model").
OPERATOR_OPS = {"shutdown": "stop the daemon", "set_workers": "resize the fleet", "restart_worker": "restart a worker",
                "login": "open a worker's browser profile for signing in",
                "memory_growth": "read the daemon's allocation sites"}
# Ops that hand out an account's session: root's and the daemon user's alone, whatever shared_fleet says.
OPERATOR_ONLY_OPS: dict[str, str] = {}
TASKS_PAGE = 1000  # tasks per `tasks` reply unless the client asks for fewer
TASKS_PAGE_MAX = 5000


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


def governed(view: dict[str, Any]) -> dict[str, Any]:
    """The governor's reading, when it has one, replaces the machine-wide figures."""
    out = {k: v for k, v in view.items() if v is not None}
    if "limit_mb" in out:
        out["total_mb"] = out["limit_mb"]
    return out


class Commands:
    def __init__(self, daemon: DaemonView) -> None:
        self.daemon = daemon

    async def __call__(self, name: str, args: dict[str, Any], peer: Peer) -> Any:
        handler = OPS.get(name)
        if handler is None:
            raise UnknownOp(f"unknown op '{name}' (known: {', '.join(sorted(OPS))})")
        if name in OPERATOR_ONLY_OPS and not is_operator(peer.uid):
            raise NotAuthorized(f"only root or the daemon's user may {OPERATOR_ONLY_OPS[name]} (uid {peer.uid} may not; "
                                "no setting allows others)")
        if name in OPERATOR_OPS and not (is_operator(peer.uid) or self.daemon.config.shared_fleet):
            raise NotAuthorized(f"only root or the daemon's user may {OPERATOR_OPS[name]} (uid {peer.uid} may not; "
                                "the operator can allow every socket client with shared_fleet = true)")
        return await handler(self, args, peer)

    def check_owner(self, job: dict[str, Any], peer: Peer, verb: str) -> None:
        """Another uid's job may be changed only by root, the daemon's user, or anyone with shared_jobs."""
        if job.get("uid") == peer.uid or is_operator(peer.uid) or self.daemon.config.shared_jobs:
            return
        owner = f"uid {job['uid']}" if job.get("uid") is not None else "a client of an older tabfleetd"
        raise NotAuthorized(f"job {job['id']} was submitted by {owner}: only that user, root or the daemon's user may "
                            f"{verb} it (the operator can allow every socket client with shared_jobs = true)")

    # hello {"version": int, "client": str} -> {"version", "daemon", "pid"}
    @op("hello")
    async def hello(self, args: dict[str, Any], peer: Peer) -> Any:
        version = arg(args, "version", int)
        if version != protocol.PROTOCOL_VERSION:
            peer.greeted = False
            raise VersionMismatch(f"this tabfleetd {__version__} speaks protocol {protocol.PROTOCOL_VERSION}, "
                                  f"the client speaks {version}: install matching versions of tabfleetd and tabfleetctl")
        return {"version": protocol.PROTOCOL_VERSION, "daemon": __version__, "pid": os.getpid()}

    # ping {} -> {"pong": true, "uptime_s", "pid", "demo_url": str|nil}
    @op("ping")
    async def ping(self, args: dict[str, Any], peer: Peer) -> Any:
        demo = self.daemon.demo
        return {"pong": True, "uptime_s": round(time.monotonic() - self.daemon.started, 1), "pid": os.getpid(),
                "demo_url": demo.base_url if demo is not None else None}

    # submit {"filename": str, "data": bin, "site": str, "profile": str|nil (a profile file's TOML), "profile_file": str|nil,
    #         "out": str|nil, "cwd": str, "name": str|nil, "workers": int|nil, "knobs": {str: str}, "vars": {str: str}|nil}
    #   -> {"job": id, "tasks": n, "out": dir}   the checked profile is stored on the job, its start-URL variables bound;
    #   a profile whose args or hosts the site policy forbids (browser.args allow-list, site_hosts, site_networks) is
    #   refused, naming the key.  "out" (default CWD/tabfleet-out/{job}; "{job}" becomes the job id) must lie inside an
    #   output root and outside the daemon's state dir; a file over max_tasks_per_job, or one that would take the
    #   unfinished tasks of all jobs over max_queued_tasks, is refused (OverCapacity). A big file loads in batches (bulk.py).
    @op("submit")
    async def submit(self, args: dict[str, Any], peer: Peer) -> Any:
        d = self.daemon
        filename = arg(args, "filename", str)
        data = arg(args, "data", (bytes, str))
        data = data.encode() if isinstance(data, str) else data
        profile = await self.allowed_profile(args)
        site = profile["name"]
        knobs = arg(args, "knobs", dict, {})
        for key, value in knobs.items():
            if key not in profile["knobs"]:
                raise BadArgs(f"unknown site knob '{key}' (known: {', '.join(sorted(profile['knobs'])) or 'none'})")
            if not isinstance(value, (str, int, float)):
                raise BadArgs(f"site knob '{key}' must be a string or a number")
        knobs = {str(k): str(v) for k, v in knobs.items()}
        if profiles.needs_demo(profile):
            from ..demo.demosite import knob_problems

            if problems := knob_problems(knobs):
                raise BadArgs("; ".join(problems))
        workers = arg(args, "workers", int, 0)
        if workers < 0:
            raise BadArgs("argument 'workers' must be zero (all) or more")
        cwd = arg(args, "cwd", str, "/")
        out = arg(args, "out", str, None) or os.path.join("tabfleet-out", "{job}")
        name = arg(args, "name", str, None) or Path(filename).stem
        loop = asyncio.get_running_loop()
        # A million-line file takes seconds to parse: never on the event loop.
        prompts = await loop.run_in_executor(
            None, functools.partial(parse_prompts, filename, data, max_chars=d.config.max_prompt_chars))
        async with d.submit_lock:  # two submits must not both claim one output directory, nor both pass the caps
            await self.check_caps(filename, len(prompts))
            job_id = await d.store("new_job_id")
            out_dir = await loop.run_in_executor(None, resolve_out, out.replace("{job}", job_id), cwd,
                                                 d.config.output_roots, (d.config.state_dir,))
            created = await loop.run_in_executor(None, outputs.claim_out_dir, out_dir, job_id, frozenset(d.scheduler.jobs))
            try:
                job = await d.bulk.create_job(job_id=job_id, name=name, site=site, knobs=knobs, out=str(out_dir),
                                              prompts=prompts, max_workers=workers, max_attempts=d.config.max_attempts,
                                              source=filename, profile=profile, uid=peer.uid,
                                              names=outputs.NAMES_VERSION)
            except Exception:
                # No marker may name a job that does not exist.
                await loop.run_in_executor(None, outputs.release_out_dir, out_dir, job_id, created)
                raise
        d.scheduler.job_changed(job)
        return {"job": job["id"], "tasks": job["total"], "out": job["out"]}

    async def check_caps(self, filename: str, count: int) -> None:
        cfg = self.daemon.config
        if cfg.max_tasks_per_job and count > cfg.max_tasks_per_job:
            raise OverCapacity(f"{filename} has {count} prompts, over the limit of {cfg.max_tasks_per_job} per job "
                               "(max_tasks_per_job); split it into smaller files")
        if cfg.max_queued_tasks:
            queued = sum(j["counts"]["pending"] + j["counts"]["running"] for j in await self.daemon.store("list_jobs"))
            if queued + count > cfg.max_queued_tasks:
                raise OverCapacity(f"{filename} has {count} prompts and {queued} tasks of other jobs are unfinished: "
                                   f"together over the limit of {cfg.max_queued_tasks} (max_queued_tasks); wait for "
                                   "jobs to finish, or cancel some")

    # status {"job": str|nil, "recent": bool|nil (false)} -> {"jobs": [...], "workers": [...], "memory": {...},
    #   "limits": {...}, "hidden": int, "events_stored": int}   recent: unfinished jobs and the last few that ended;
    #   hidden: the others; events_stored: the events the store keeps, as of its last write
    @op("status")
    async def status(self, args: dict[str, Any], peer: Peer) -> Any:
        job_id = arg(args, "job", str, None)
        jobs = [await self.daemon.store("get_job", job_id)] if job_id else await self.daemon.store("list_jobs")
        shown = trim_finished(jobs) if arg(args, "recent", bool, False) and not job_id else jobs
        vm = psutil.virtual_memory()
        return {
            "jobs": [self.job_view(j) for j in shown],
            "hidden": len(jobs) - len(shown),
            "workers": self.daemon.worker_views(),
            "memory": {"used_mb": round((vm.total - vm.available) / 2**20), "total_mb": round(vm.total / 2**20),
                       "percent": vm.percent, "daemon_rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1)}
            | governed(self.daemon.fleet.memory_view()),
            "limits": self.daemon.scheduler.pacing_view(time.time()),
            "events_stored": self.daemon.store.store.events_stored,
        }

    def job_view(self, job: dict[str, Any]) -> dict[str, Any]:
        counts = job["counts"]
        # An ended job makes nothing: rate 0 and no ETA, rather than a rate that decays for two minutes.
        ended = job["state"] in {s.value for s in FINISHED_JOB_STATES}
        rate = 0.0 if ended else self.daemon.scheduler.rate_per_min(job["id"])
        eta = None if ended else eta_seconds(counts["pending"] + counts["running"], rate)
        view = {"id": job["id"], "name": job["name"], "state": job["state"], "site": job["site"], "out": job["out"],
                "uid": job.get("uid"), "total": job["total"], "rate_per_min": rate, "eta_s": eta, "created": job["created"],
                "finished": job["finished"], "waiting": self.daemon.scheduler.waiting_view(job["id"])}
        view.update({b: counts[b] for b in BUCKETS})
        return view

    # tasks {"job": str, "state": str|nil, "after": int|nil (0), "limit": int|nil (1000, at most 5000)}
    #   -> {"tasks": [{"index", "prompt", "state", "attempts", "file", "error", "error_kind", "worker", "started", "finished"}],
    #       "next": int|nil}
    #   One page: up to limit tasks with index > after, in index order. "next" is the "after" of the following page,
    #   nil after the last. A page looks at no more than 20,000 tasks, so with a state filter it may hold fewer than
    #   limit (even none) and still have a "next"; a client follows "next" until it is nil.
    @op("tasks")
    async def tasks(self, args: dict[str, Any], peer: Peer) -> Any:
        job_id = arg(args, "job", str)
        state = arg(args, "state", str, None)
        after = arg(args, "after", int, 0)
        limit = arg(args, "limit", int, TASKS_PAGE)
        if after < 0 or not 1 <= limit <= TASKS_PAGE_MAX:
            raise BadArgs(f"arguments 'after' must be zero or more and 'limit' between 1 and {TASKS_PAGE_MAX}")
        keep = ("index", "prompt", "state", "attempts", "file", "error", "error_kind", "worker", "started", "finished")
        found, nxt = await self.daemon.store("tasks_page", job_id, after, limit, state)
        return {"tasks": [{k: t.get(k) for k in keep} for t in found], "next": nxt}

    async def _set_state(self, args: dict[str, Any], peer: Peer, state: JobState, verb: str) -> Any:
        d = self.daemon
        job_id = arg(args, "job", str)
        job = await d.store("get_job", job_id)
        self.check_owner(job, peer, verb)
        before = job["state"]
        # Every request that cannot change the job is answered alike: unchanged, and why (never an error).
        why = None
        if before == state.value:
            why = f"the job is {before} already"
        elif state not in JOB_TRANSITIONS[JobState(before)]:
            why = "every task is done already" if before == JobState.DONE.value and state == JobState.ACTIVE \
                else f"the job has already ended ({before})"
        if why:
            return {"job": job_id, "state": before, "changed": False, "message": why}
        # The state changes at once; a big job's tasks follow in batches, between which other calls are served.
        job = await d.bulk.set_state(job_id, state, d.config.max_attempts)
        return {"job": job_id, "state": job["state"], "changed": before != job["state"]}

    # resume {"job": str} -> {"job", "state", "changed"}   failed tasks get fresh attempts
    @op("resume")
    async def resume(self, args: dict[str, Any], peer: Peer) -> Any:
        return await self._set_state(args, peer, JobState.ACTIVE, "resume")

    # pause {"job": str} -> {"job", "state", "changed"}    running tasks finish; no new ones start
    @op("pause")
    async def pause(self, args: dict[str, Any], peer: Peer) -> Any:
        return await self._set_state(args, peer, JobState.PAUSED, "pause")

    # cancel {"job": str} -> {"job", "state", "changed"}
    @op("cancel")
    async def cancel(self, args: dict[str, Any], peer: Peer) -> Any:
        return await self._set_state(args, peer, JobState.CANCELLED, "cancel")

    # workers {} -> {"workers": [{"id", "pid", "state", "tasks_done", "current_task", "rss_mb", "profile_mb", "last_error",
    #                             "restarts", ...}]}   profile_mb: the local browser profile's size (null: remote, not yet measured)
    @op("workers")
    async def workers(self, args: dict[str, Any], peer: Peer) -> Any:
        return {"workers": self.daemon.worker_views()}

    # restart_worker {"worker": int} -> {"worker", "restarting": true}
    #   ends the worker and its Chromium; it starts again (and takes tasks again if it was blocked)
    @op("restart_worker")
    async def restart_worker(self, args: dict[str, Any], peer: Peer) -> Any:
        wid = arg(args, "worker", int)
        handle = self.daemon.fleet.workers.get(wid)
        if handle is None:
            raise BadArgs(f"no worker {wid} (workers: {', '.join(map(str, sorted(self.daemon.fleet.workers)))})")
        self.daemon.fleet.restart(handle, "restarted by request")
        return {"worker": wid, "restarting": True}

    # set_workers {"count": int} -> {"desired", "target"}   grow or shrink the fleet at run time
    @op("set_workers")
    async def set_workers(self, args: dict[str, Any], peer: Peer) -> Any:
        count = arg(args, "count", int)
        if not 1 <= count <= 64:
            raise BadArgs("argument 'count' must be between 1 and 64")
        self.daemon.fleet.resize(count)
        return {"desired": count, "target": self.daemon.fleet.target}

    # shutdown {} -> {"stopping": true}   the daemon stops after replying
    @op("shutdown")
    async def shutdown(self, args: dict[str, Any], peer: Peer) -> Any:
        asyncio.get_running_loop().call_soon(self.daemon.request_stop)
        return {"stopping": True}

    # memory_growth {"top": int|nil (20; 1..200)} -> {"tracing": false, "rss_mb"} when trace_memory_frames is 0, else
    #   {"tracing": true, "frames", "since_s": float|nil (nil on the first call), "traced_mb", "peak_mb", "overhead_mb",
    #    "rss_mb", "sites": [{"where": "file:line" (innermost daemon frame), "stack": [innermost first], "size_kib",
    #    "growth_kib", "count", "count_growth"}]}   the sites that grew most since the previous call (the first call: the
    #   largest); the snapshot is taken in a thread, so the daemon keeps serving meanwhile
    @op("memory_growth")
    async def memory_growth(self, args: dict[str, Any], peer: Peer) -> Any:
        top = arg(args, "top", int, 20)
        if not 1 <= top <= 200:
            raise BadArgs("argument 'top' must be between 1 and 200")
        reply = await self.daemon.memory_growth.growth_async(top)
        return reply | {"rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1)}

    # dashboard_url {} -> {"url": str}   a link that signs one browser in to the dashboard, once, within 2 minutes
    @op("dashboard_url")
    async def dashboard_url(self, args: dict[str, Any], peer: Peer) -> Any:
        web = self.daemon.web
        if web is None or web.auth is None or "dashboard" not in web.urls:
            raise RequestError("the dashboard is off: set dashboard_port in tabfleetd's config")
        return {"url": web.login_url()}

    # subscribe {"job": str|nil, "interval_s": float|nil (1.0; 0.1..60), "after": int|nil (seq: replay later events first)}
    #   -> stream of {"jobs", "workers", "memory" (as in status), "events": [new events], "missed_events": bool, "time"}
    #      "more": true each, pushed at least every interval_s and soon after events; with a job it
    #      ends ("result": nil, "more": false) after the frame that shows the job ended.  Close the connection to stop.
    @op("subscribe")
    async def subscribe(self, args: dict[str, Any], peer: Peer) -> Any:
        job_id = arg(args, "job", str, None)
        interval = float(arg(args, "interval_s", (int, float), 1.0))
        after = arg(args, "after", int, None)
        if job_id:
            await self.daemon.store("get_job", job_id)  # an unknown job is refused before the stream starts
        query = {"job": job_id} if job_id else {}
        return Stream(Subscription(self.daemon.events, lambda: self.status(query, peer), job_id, interval, after).items())

    # events {"job": str|nil, "limit": int|nil (100; 0 or over 5000: 5000), "kinds": [str]|nil (all),
    #         "after": int|nil (seq), "before": int|nil (seq; to page back: the oldest seq of the last page)}
    #   -> {"events": [{"seq", "time", "kind", "job", "index", "prompt", "worker", "attempts", ...}], oldest first}
    #      the newest `limit` with after < seq < before; from memory, and from the store (across restarts) beyond it
    @op("events")
    async def events(self, args: dict[str, Any], peer: Peer) -> Any:
        job_id = arg(args, "job", str, None)
        limit = arg(args, "limit", int, 100)
        kinds = arg(args, "kinds", list, None)
        after = arg(args, "after", int, 0)
        before = arg(args, "before", int, None)
        if limit < 0:
            raise BadArgs("argument 'limit' must be zero (as many as one answer holds) or more")
        if kinds is not None and not all(isinstance(k, str) for k in kinds):
            raise BadArgs("argument 'kinds' must be a list of strings")
        if job_id:
            await self.daemon.store("get_job", job_id)
        return {"events": await self.daemon.keeper.read(job_id, limit, kinds, after, before)}

    # export {"job": str} -> stream of {"job", "name", "state", "total", "fields": [column names],
    #   "tasks": [{"index", "prompt", "state", "attempts", "file", "path", "sha256", "bytes", "error_kind", "error",
    #              "worker", "started", "finished"}]} pages of up to 500 tasks in index order, "more": true each
    @op("export")
    async def export(self, args: dict[str, Any], peer: Peer) -> Any:
        job_id = arg(args, "job", str)
        job = await self.daemon.store("get_job", job_id)
        return Stream(export_pages(job, lambda after: self.daemon.store("tasks_page", job_id, after, EXPORT_PAGE)))

    # -- site profiles -----------------------------------------------------------

    def profile_arg(self, args: dict[str, Any]) -> dict[str, Any]:
        """The request's site as a checked profile: a built-in's name, or a profile file's text sent by the client."""
        site = arg(args, "site", str, "demo")
        text = arg(args, "profile", (str, bytes), None)
        filename = arg(args, "profile_file", str, None)
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise ProfileError(filename or site, ["the file is not UTF-8 text"]) from None
        return profiles.resolve(site, text, filename)

    async def allowed_profile(self, args: dict[str, Any], bind: bool = True) -> dict[str, Any]:
        """profile_arg() with its start-URL variables bound (`vars`, then site_vars, then the profile's defaults),
        refusing also what this daemon's site policy forbids (hosts, addresses), each naming its key."""
        profile = self.profile_arg(args)
        if bind:
            profile = profiles.bind_vars(profile, arg(args, "vars", dict, {}), dict(self.daemon.config.site_vars))
        problems = await self.daemon.site_policy.problems(profile)
        if problems:
            raise ProfileError(arg(args, "profile_file", str, None) or f"{profile['name']}.toml", problems)
        return profile

    # sites {} -> {"sites": [{"name", "description", "start_url", "headless", "new_conversation"}]}   the built-ins
    @op("sites")
    async def sites(self, args: dict[str, Any], peer: Peer) -> Any:
        listed = []
        for name in profiles.builtin_names():
            p = profiles.builtin(name)
            listed.append({"name": p["name"], "description": p["description"], "start_url": p["start_url"],
                           "headless": p["browser"]["headless"], "new_conversation": p["conversation"]["new"]})
        return {"sites": listed}

    # site_profile {"site": str} -> {"name", "text"}   a built-in profile's TOML, to copy and adapt
    @op("site_profile")
    async def site_profile(self, args: dict[str, Any], peer: Peer) -> Any:
        name = arg(args, "site", str)
        return {"name": name, "text": profiles.builtin_text(name)}

    # sites_check {"text": str|bin, "filename": str, "explain": bool|nil}
    #   -> {"ok": bool, "name": str|nil, "problems": [str], "keys": [{"key", "value", "default": bool, "doc"}]}
    #   each problem names its key, e.g. "key 'result.count' must be at least 1, not 0", the site policy's too; with
    #   explain, "keys" lists every key of the checked profile with its value, whether that is the default, and what it means
    @op("sites_check")
    async def sites_check(self, args: dict[str, Any], peer: Peer) -> Any:
        filename = arg(args, "filename", str, "profile.toml")
        try:
            profile = await self.allowed_profile({"site": "", "profile": arg(args, "text", (str, bytes)), "profile_file": filename},
                                                 bind=False)
        except ProfileError as exc:
            return {"ok": False, "name": None, "problems": exc.problems, "keys": []}
        keys = profiles.explain(profile) if arg(args, "explain", bool, False) else []
        return {"ok": True, "name": profile["name"], "problems": [], "keys": keys}

    # login {"worker": int|nil, "account": str|nil (one of the two), "site": str, "profile": str|nil,
    #        "profile_file": str|nil, "vars": {str: str}|nil, "knobs": {str: str}|nil}
    #   -> {"worker", "account", "url", "display"}
    #   shows the account's session (that of the worker's account, or of the account's first idle or blocked worker)
    #   in a browser window at the site's start URL on the daemon's display; once the person closes the window,
    #   the cookies it had become the account's session, and the account's workers take tasks again
    @op("login")
    async def login(self, args: dict[str, Any], peer: Peer) -> Any:
        d = self.daemon
        wid = self.login_worker(args)
        profile = await self.allowed_profile(args)
        knobs = {str(k): str(v) for k, v in arg(args, "knobs", dict, {}).items() if k in profile["knobs"]}
        display = d.config.display
        if not display:
            raise RequestError(
                "no display to show a browser on: tabfleetd runs without DISPLAY. Signing in needs a screen a person "
                "can see: run tabfleetd in a desktop session (or with DISPLAY set, e.g. over `ssh -X`), or set "
                "`display` in its config. A worker's own Xvfb will not do: nobody can see it.")
        problem = display_problem(display)
        if problem:
            raise RequestError(f"cannot show a browser on display {display}: {problem}")
        handle = d.fleet.workers.get(wid)
        if handle is None:
            raise BadArgs(f"no worker {wid} (workers: {', '.join(map(str, sorted(d.fleet.workers)))})")
        if handle.state not in (IDLE, BLOCKED):
            raise RequestError(f"worker {wid} is {handle.state}; pause your jobs (tabfleetctl pause JOB) and run "
                               "login again once it is idle")
        url = await d.site_url({"id": "login", "site": profile["name"], "profile": profile, "knobs": knobs})
        # Busy without a task: no dispatch meanwhile; the hello the worker sends once its own browser
        # runs again makes it idle (fleet), so a blocked worker is back in service after signing in.
        handle.state, handle.blocked_reason = BUSY, None
        await d.fleet.send(handle, {"t": "login", "url": url, "display": display, "args": list(profile["browser"]["args"]),
                                    "local_storage": bool(profile["login"].get("local_storage"))})
        return {"worker": wid, "account": handle.account, "url": url, "display": display}

    def login_worker(self, args: dict[str, Any]) -> int:
        """The worker a login opens: the one named, or the first of the account's workers that is free for it."""
        account = arg(args, "account", str, None)
        if account is None:
            return arg(args, "worker", int)
        bound = self.daemon.fleet.of_account(account)
        if not bound:
            raise BadArgs(f"no worker signs in with account {account}: bind one with a [[workers]] entry "
                          "(account = \"...\") in tabfleetd's config")
        free = [h for h in bound if h.state in (IDLE, BLOCKED)]
        return (free or bound)[0].wid
