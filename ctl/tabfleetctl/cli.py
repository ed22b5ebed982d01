"""tabfleetctl: submit prompt files to tabfleetd and see where they stand."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from tabfleetd import __version__

from .client import (BUSY_WAIT_S, Client, DaemonBusy, DaemonError, DaemonNotRunning, NoPermission, UnsafeSocket,
                     default_socket, socket_places)
from .samples import demo_prompts
from .terminal import printable
from .watch import pace_line

# Named exit codes; README "tabfleetctl exit codes" explains each, and --json errors carry the kind.
EXIT_OK = 0
EXIT_TASKS_FAILED = 1  # --wait: the job ended with failed tasks; sites check: the profile has problems
EXIT_USAGE = 2  # click's own
EXIT_NOT_RUNNING = 3
EXIT_DAEMON_ERROR = 4  # the request was refused (by the daemon, or by the same check made here)
EXIT_BUSY = 5  # the daemon kept refusing for now: too many connections or bytes in flight
EXIT_UNSAFE_SOCKET = 6  # the socket's directory could be someone else's
EXIT_FILE = 7  # a local file could not be read or written
EXIT_INTERRUPTED = 130  # Ctrl-C; a job being followed carries on
ERROR_KINDS = {EXIT_TASKS_FAILED: "failed", EXIT_USAGE: "usage", EXIT_NOT_RUNNING: "not_running",
               EXIT_DAEMON_ERROR: "refused", EXIT_BUSY: "busy", EXIT_UNSAFE_SOCKET: "unsafe_socket", EXIT_FILE: "file",
               EXIT_INTERRUPTED: "interrupted"}
MAX_DEMO_PROMPTS = 10_000
SUBMIT_BYTES_PER_S = 1 << 20  # the slowest a submit is expected to be queued, for its reply timeout
EVENTS_PAGE = 5000  # events per answer: the most the daemon sends at once


class Ctx:
    def __init__(self, socket: str | None, timeout: float) -> None:
        self.socket = default_socket(socket)
        self.places = socket_places(socket)
        self.timeout = timeout
        self.json = False  # --json: errors go to stderr as JSON too

    @contextmanager
    def client(self, timeout: float | None = None) -> Iterator[Client]:
        with self.reporting(), Client(self.socket, timeout or self.timeout) as client:
            yield client

    @contextmanager
    def reporting(self) -> Iterator[None]:
        """Turn the client's errors into a message (JSON with --json) and tabfleetctl's exit code."""
        try:
            yield
        except (DaemonNotRunning, UnsafeSocket, DaemonError) as exc:
            code, message = explain(exc, self)
            self.fail(code, message, code=getattr(exc, "code", None))

    def call(self, op: str, args: dict[str, Any] | None = None) -> Any:
        with self.client() as client:
            return client.call(op, args)

    def fail(self, exit_code: int, message: str, code: int | None = None, **extra: Any) -> NoReturn:
        report(exit_code, message, self.json, code, **extra)
        sys.exit(exit_code)

    def echo_json(self, value: Any, **kwargs: Any) -> None:
        click.echo(json.dumps(value, ensure_ascii=False, **kwargs))


def explain(exc: Exception, ctx: Ctx) -> tuple[int, str]:
    """The exit code and message for a client error (the daemon's own code, if any, is reported beside it; the
    daemon's words are escaped: they may quote a prompt)."""
    if isinstance(exc, NoPermission):
        return EXIT_NOT_RUNNING, str(exc)
    if isinstance(exc, UnsafeSocket):
        return EXIT_UNSAFE_SOCKET, printable(exc)
    if isinstance(exc, DaemonBusy):
        return EXIT_BUSY, f"{printable(exc)} (still busy after retrying for {BUSY_WAIT_S:g} s; try again)"
    if isinstance(exc, DaemonNotRunning):
        looked = ""
        if len(ctx.places) > 1 and not os.path.lexists(ctx.socket):
            looked = f" (looked for its socket at {', '.join(map(str, ctx.places))})"
        return EXIT_NOT_RUNNING, f"{exc}{looked}. Start it with `tabfleetd` (or `systemctl start tabfleetd`)."
    assert isinstance(exc, DaemonError)
    return EXIT_DAEMON_ERROR, printable(exc)


def report(exit_code: int, message: str, as_json: bool, code: int | None = None, **extra: Any) -> None:
    """An error on stderr: one line, or with --json {"error": {"exit", "kind", "code", "message", ...}}."""
    if as_json:
        error = {"exit": exit_code, "kind": ERROR_KINDS.get(exit_code, "error"), "code": code, "message": message}
        click.echo(json.dumps({"error": error | extra}, ensure_ascii=False), err=True)
    else:
        click.echo(f"tabfleetctl: {f'error {code}: ' if code else ''}{message}", err=True)  # explain() escaped it


class Commands(click.Group):
    """The commands, with click's own errors as JSON under --json and Ctrl-C as exit 130 everywhere."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            obj = ctx.find_object(Ctx)
            if obj is None or not obj.json:
                raise
            report(exc.exit_code, exc.format_message(), True)
            sys.exit(exc.exit_code)
        except (KeyboardInterrupt, click.Abort):
            obj = ctx.find_object(Ctx)
            report(EXIT_INTERRUPTED, "interrupted", bool(obj and obj.json))
            sys.exit(EXIT_INTERRUPTED)


pass_ctx = click.make_pass_decorator(Ctx)


def json_option(text: str) -> Callable[[Any], Any]:
    """--json: the command's result as JSON on stdout, and any error as JSON on stderr."""
    def remember(click_ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        obj = click_ctx.find_object(Ctx)
        if value and obj is not None:
            obj.json = True
        return value

    # Eager, so an error in the command's other options is already reported as JSON.
    return click.option("--json", "as_json", is_flag=True, is_eager=True, callback=remember,
                        help=f"{text} Errors go to stderr as JSON.")


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--socket", envvar=None, help="Control socket (default: $TABFLEET_SOCKET, else the first that exists of "
              "$RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR/tabfleet, /tmp/tabfleet-$UID and the service's /run/tabfleet).")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for each reply.")
@click.version_option(__version__, prog_name="tabfleetctl")
@click.pass_context
def main(ctx: click.Context, socket: str | None, timeout: float) -> None:
    """Control tabfleetd, the daemon that turns prompt files into images."""
    ctx.obj = Ctx(socket, timeout)


def parse_knobs(knobs: tuple[str, ...], hint: str = "--knob") -> dict[str, str]:
    out = {}
    for item in knobs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"'{item}' is not KEY=VALUE", param_hint=hint)
        out[key.strip()] = value.strip()
    return out


def read_file(ctx: Ctx, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        ctx.fail(EXIT_FILE, f"cannot read {path}: {exc.strerror}")


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--site", default="demo", show_default=True, help="Site to generate on: a built-in name (see `tabfleetctl sites`) or a profile file, path/to/site.toml.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Output directory (default ./tabfleet-out/JOB).")
@click.option("--name", help="A name for the job (default: the file's name).")
@click.option("--workers", type=click.IntRange(min=1), help="Use at most N workers for this job.")
@click.option("--knob", "knobs", multiple=True, metavar="KEY=VALUE", help="A site knob, e.g. latency=2 (demo: latency, jitter, error_rate, error_message, rate_limit, hang_rate, lockup_rate, seed, challenge).")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE", help="A start-URL variable, e.g. host=10.0.0.5 or port=7860 (see the profile key 'vars').")
@json_option("Print {\"job\": ID, \"tasks\": N} (with --wait, then the job's final counts on a second line).")
@click.option("--wait", is_flag=True, help="Follow the job until it ends (the live view on stderr); exit 1 if any task failed. Ctrl-C stops following; the job carries on.")
@pass_ctx
def submit(ctx: Ctx, file: Path, site: str, out: Path | None, name: str | None, workers: int | None,
           knobs: tuple[str, ...], variables: tuple[str, ...], as_json: bool, wait: bool) -> None:
    """Queue every prompt in FILE (.txt, .csv with a 'prompt' column, or .jsonl)."""
    data = read_file(ctx, file)
    args = {"filename": file.name, "data": data, **site_args(ctx, site), "out": str(out.resolve()) if out else None,
            "cwd": os.getcwd(), "name": name, "workers": workers, "knobs": parse_knobs(knobs),
            "vars": parse_knobs(variables, "--var")}
    # The daemon queues a big file in batches: about a minute for a million prompts on a slow disk.
    with ctx.client(ctx.timeout + len(data) / SUBMIT_BYTES_PER_S) as client:
        result = client.call("submit", args)
        if as_json:
            ctx.echo_json({"job": result["job"], "tasks": result["tasks"]})
        else:
            click.echo(f"job {result['job']}: {result['tasks']} prompts queued; images go to {result['out']}")
        if not wait:
            return
        sys.stdout.flush()
        try:
            job = follow_to_end(client, result["job"], 1.0, stderr=True, quiet=as_json)
        except KeyboardInterrupt:
            ctx.fail(EXIT_INTERRUPTED, f"stopped waiting; job {result['job']} carries on "
                                       f"(`tabfleetctl watch {result['job']}` follows it again)")
    if as_json:
        ctx.echo_json(final_counts(job))
    else:
        click.echo(summary(job), err=True)
    sys.exit(EXIT_OK if job["state"] == "done" and not job["failed"] else EXIT_TASKS_FAILED)


def follow_to_end(client: Client, job_id: str, interval: float, *, stderr: bool, quiet: bool) -> dict[str, Any]:
    """Follow a job with watch's pushed view (plain lines off a terminal) until it ends; return its last view."""
    from .watch import follow, frames

    stream = sys.stderr if stderr else sys.stdout
    live = stream.isatty() and not quiet

    def echo(line: str) -> None:
        if not quiet:
            click.echo(line, err=stderr)

    last = follow(frames(client, job_id, interval), job_id, live=live, echo=echo, stderr=stderr)
    assert last is not None, "the stream of a named job shows it"
    return last


def summary(job: dict[str, Any]) -> str:
    cancelled = f", {job['cancelled']} cancelled" if job.get("cancelled") else ""
    return f"job {job['id']} {job['state']}: {job['done']} done, {job['failed']} failed{cancelled} of {job['total']}"


def final_counts(job: dict[str, Any]) -> dict[str, Any]:
    return {k: job.get(k) for k in ("job", "state", "total", "done", "failed", "cancelled", "out")} | {"job": job["id"]}


def fmt_seconds(seconds: float) -> str:
    from .tables import fmt_seconds as fmt

    return fmt(seconds)


def show(make: Callable[[int], Any]) -> None:
    """Print what `make(width)` draws: at the terminal's width, or at its whole width (lines trimmed) in a pipe."""
    from rich.console import Console

    if sys.stdout.isatty():
        console = Console()
        console.print(make(console.width))
        return
    console = Console(width=10_000, file=io.StringIO(), color_system=None)
    with console.capture() as drawn:
        console.print(make(console.width))
    for line in drawn.get().splitlines():
        click.echo(line.rstrip())


@main.command()
@click.argument("job", required=False)
@click.option("--all", "show_all", is_flag=True, help="Every job the daemon keeps (default: unfinished jobs and the last few that ended).")
@json_option("Print the whole status as JSON.")
@pass_ctx
def status(ctx: Ctx, job: str | None, show_all: bool, as_json: bool) -> None:
    """Show jobs, workers and memory (one JOB, or the unfinished and recent ones)."""
    from .tables import jobs_table, workers_table

    result = ctx.call("status", {"job": job} if job else {"recent": not show_all})
    if as_json:
        ctx.echo_json(result, indent=2)
        return
    show(lambda width: jobs_table(result["jobs"], width, title=None, out=True))
    hidden = result.get("hidden")
    if hidden:
        click.echo(f"({hidden} older finished job{'s' if hidden != 1 else ''} not shown: `tabfleetctl status --all`)")
    click.echo("")
    show(lambda width: workers_table(result["workers"], width, title=None, errors=True))
    mem = result["memory"]
    click.echo(f"\nmemory: {mem['used_mb'] / 1024:.1f} of {mem['total_mb'] / 1024:.1f} GiB used ({mem['percent']:.0f} %); "
               f"daemon {mem['daemon_rss_mb']:.0f} MB; fleet {mem.get('target_workers', '?')} of "
               f"{mem.get('desired_workers', '?')} workers{' (holding new work: memory high)' if mem.get('holding') else ''}")
    for site, pace in (result.get("limits") or {}).get("sites", {}).items():
        click.echo(f"site {printable(site)}: {printable(pace_line(pace))}")
    for j in result["jobs"]:
        if j.get("waiting"):
            click.echo(f"job {j['id']} waits for its output: {printable(j['waiting']['reason'])} (next check in "
                       f"{j['waiting']['retry_in_s']:.0f} s)")


def table(headers: list[str], rows: list[list[Any]], flex: dict[str, int] | None = None) -> None:
    """Print rows under headers with rich; the `flex` columns (header -> least width) are cut with an ellipsis to fit."""
    from rich.text import Text

    from .tables import Column, fit

    columns = [Column(h, [Text(printable(r[i])) for r in rows], flex=(flex or {}).get(h, 0)) for i, h in enumerate(headers)]
    show(lambda width: fit(None, columns, width))


def job_command(op: str, verb: str, doc: str) -> None:
    @main.command(name=op, help=doc + " A request that changes nothing says why and exits 0.")
    @click.argument("job")
    @json_option("Print {\"job\", \"state\", \"changed\", \"message\"}.")
    @pass_ctx
    def command(ctx: Ctx, job: str, as_json: bool) -> None:
        result = ctx.call(op, {"job": job})
        if as_json:
            ctx.echo_json(result)
        elif result.get("changed"):
            click.echo(f"job {job} {verb} (now {result['state']})")
        else:
            click.echo(f"job {job} unchanged ({result['state']}){': ' + result['message'] if result.get('message') else ''}")


job_command("resume", "resumed", "Resume a paused job, or give a failed or cancelled job's unfinished tasks fresh attempts.")
job_command("pause", "paused", "Pause a job: running tasks finish, no new ones start.")
job_command("cancel", "cancelled", "Cancel a job's unfinished tasks (images already made are kept).")


@main.command()
@click.argument("job")
@click.option("--state", type=click.Choice(["pending", "running", "retry_wait", "done", "failed", "cancelled"]), help="Only tasks in this state.")
@json_option("Print JSON lines.")
@pass_ctx
def tasks(ctx: Ctx, job: str, state: str | None, as_json: bool) -> None:
    """List a job's tasks with their state, attempts, file and last error."""
    with ctx.client() as client:
        if as_json:
            for task in task_pages(client, job, state):
                ctx.echo_json(task)
            return
        rows = [[t["index"], t["state"], t["attempts"], t["file"] or t["error"] or "", t["prompt"].replace("\n", " ")]
                for t in task_pages(client, job, state)]
    table(["#", "STATE", "TRIES", "FILE / ERROR", "PROMPT"], rows, flex={"FILE / ERROR": 24, "PROMPT": 20})


def task_pages(client: Client, job: str, state: str | None) -> Iterator[dict[str, Any]]:
    """Every task of the job (in that state), a page per call: the daemon never builds one huge reply."""
    after: int | None = 0
    while after is not None:
        page = client.call("tasks", {"job": job, "state": state, "after": after})
        yield from page["tasks"]
        after = page.get("next")


@main.group(invoke_without_command=True)
@json_option("Print JSON.")
@click.pass_context
def workers(click_ctx: click.Context, as_json: bool) -> None:
    """Show the worker processes (or manage them with a subcommand)."""
    from .tables import workers_table

    if click_ctx.invoked_subcommand is not None:
        return
    ctx = click_ctx.find_object(Ctx)
    result = ctx.call("workers")
    if as_json:
        ctx.echo_json(result, indent=2)
        return
    show(lambda width: workers_table(result["workers"], width, title=None, errors=True))


@workers.command("set")
@click.argument("count", type=click.IntRange(1, 64))
@json_option("Print {\"desired\", \"target\"}.")
@pass_ctx
def workers_set(ctx: Ctx, count: int, as_json: bool) -> None:
    """Grow or shrink the fleet to COUNT workers (busy workers finish their task first)."""
    result = ctx.call("set_workers", {"count": count})
    if as_json:
        ctx.echo_json(result)
        return
    note = "" if result["target"] == count else f" (memory allows {result['target']} for now)"
    click.echo(f"fleet size set to {count}{note}")


@workers.command("restart")
@click.argument("worker", type=int)
@json_option("Print {\"worker\", \"restarting\"}.")
@pass_ctx
def workers_restart(ctx: Ctx, worker: int, as_json: bool) -> None:
    """Restart worker N and its Chromium (a blocked worker takes tasks again)."""
    result = ctx.call("restart_worker", {"worker": worker})
    if as_json:
        ctx.echo_json(result)
        return
    click.echo(f"worker {worker} is restarting")


@main.command()
@json_option("Print {\"pong\", \"pid\", \"uptime_s\", \"demo_url\", \"socket\"}.")
@pass_ctx
def ping(ctx: Ctx, as_json: bool) -> None:
    """Check that the daemon answers (and where the demo site is, when it serves one)."""
    result = ctx.call("ping")
    if as_json:
        ctx.echo_json(result | {"socket": str(ctx.socket)})
        return
    click.echo(f"tabfleetd is up (pid {result['pid']}, up {fmt_seconds(result['uptime_s'])}) on {ctx.socket}")
    if result.get("demo_url"):
        click.echo(f"demo site: {result['demo_url']}")


@main.command()
@json_option("Print {\"url\"}.")
@pass_ctx
def dashboard(ctx: Ctx, as_json: bool) -> None:
    """Print a one-time link that signs a browser in to the web dashboard (valid for 2 minutes)."""
    result = ctx.call("dashboard_url")
    if as_json:
        ctx.echo_json(result)
        return
    click.echo(result["url"])


@main.command()
@click.option("--wait", is_flag=True, help="Return only once the daemon process has exited.")
@click.option("--max-wait", type=float, default=120.0, show_default=True, help="With --wait: give up after this many seconds (exit 4).")
@json_option("Print {\"pid\", \"stopping\", \"stopped\"}.")
@pass_ctx
def shutdown(ctx: Ctx, wait: bool, max_wait: float, as_json: bool) -> None:
    """Stop the daemon; tasks in flight get a grace period, the rest stay queued."""
    with ctx.client() as client:
        pid = client.call("ping")["pid"]
        client.call("shutdown")
    stopped = False
    if wait:
        deadline = time.monotonic() + max_wait
        while time.monotonic() < deadline and not stopped:
            stopped = _process_gone(pid)
            if not stopped:
                time.sleep(0.2)
    if as_json:
        ctx.echo_json({"pid": pid, "stopping": True, "stopped": stopped})
    else:
        click.echo("tabfleetd is stopping")
        if stopped:
            click.echo(f"tabfleetd (pid {pid}) has stopped")
    if wait and not stopped:
        ctx.fail(EXIT_DAEMON_ERROR, f"tabfleetd (pid {pid}) did not stop within {max_wait:g} s")


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, run by another user (the service's own)
    return False


@main.command()
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Workers for a daemon the demo starts.")
@click.option("--count", type=click.IntRange(1, MAX_DEMO_PROMPTS), default=36, show_default=True,
              help=f"How many sample prompts (the 36 written ones, then generated ones; at most {MAX_DEMO_PROMPTS}).")
@click.option("--latency", type=float, default=1.0, show_default=True, help="Seconds the demo site takes per image.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Output directory (default ./tabfleet-out/JOB).")
@click.option("--keep-daemon", is_flag=True, help="Leave a daemon the demo started running afterwards.")
@json_option("Print the job's final counts as JSON instead of following it.")
@click.pass_context
def demo(click_ctx: click.Context, workers: int, count: int, latency: float, out: Path | None, keep_daemon: bool,
         as_json: bool) -> None:
    """First run: generate sample images on the bundled demo site.

    Ctrl-C cancels the demo's job (the images made so far stay) and stops a daemon the demo started.
    """
    ctx = click_ctx.find_object(Ctx)
    started = None
    with ctx.reporting():
        try:
            with Client(ctx.socket, ctx.timeout) as client:
                fleet = client.call("workers")["workers"]
        except DaemonNotRunning:
            started = start_daemon(ctx, workers)
    if started is None:
        for name, why in (("workers", f"tabfleetd is already running with {len(fleet)} workers; --workers applies only "
                                      "to a daemon the demo starts (resize this one with `tabfleetctl workers set N`)"),
                          ("keep_daemon", "tabfleetd was already running; the demo leaves it running anyway")):
            if click_ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
                click.echo(f"note: {why}", err=True)
    try:
        with ctx.client() as client:
            result = client.call("submit", {
                "filename": "demo-prompts.txt", "data": "\n".join(demo_prompts(count)).encode(), "site": "demo",
                "out": str(out.resolve()) if out else None, "cwd": os.getcwd(), "name": "demo",
                "knobs": {"latency": str(latency)}})
            if not as_json:
                click.echo(f"job {result['job']}: {result['tasks']} sample prompts sent to the demo site")
            try:
                job = follow_to_end(client, result["job"], 0.5, stderr=False, quiet=as_json)
            except KeyboardInterrupt:
                cancel_demo(ctx, result["job"])
                sys.exit(EXIT_INTERRUPTED)
        if as_json:
            ctx.echo_json(final_counts(job))
        else:
            click.echo(f"{job['done']} images in {job['out']} (list: {Path(job['out']) / 'manifest.jsonl'})")
        if job["failed"]:
            if not as_json:
                click.echo(f"{job['failed']} prompts failed; see `tabfleetctl tasks {job['id']} --state failed`")
            sys.exit(EXIT_TASKS_FAILED)
    finally:
        if started is not None and not keep_daemon:
            stop_daemon(ctx, started)


def cancel_demo(ctx: Ctx, job_id: str) -> None:
    """Ctrl-C in a demo ends its job, so that no later demo or job finds it still going."""
    try:
        with Client(ctx.socket, 10) as client:
            client.call("cancel", {"job": job_id})
            job = client.call("status", {"job": job_id})["jobs"][0]
    except (DaemonNotRunning, DaemonError) as exc:
        click.echo(f"tabfleetctl: could not cancel the demo's job {job_id}: {exc}", err=True)
        return
    click.echo(f"stopped: the demo's job {job_id} is cancelled; its {job['done']} images stay in {job['out']}", err=True)


def start_daemon(ctx: Ctx, workers: int) -> subprocess.Popen[bytes]:
    """Start tabfleetd in the background for the demo and wait until it answers."""
    log_path = Path(tempfile.gettempdir()) / f"tabfleetd-demo-{os.getuid()}.log"
    click.echo(f"starting tabfleetd with {workers} workers (log: {log_path})", err=ctx.json)
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "tabfleetd", "--socket", str(ctx.socket), "--workers", str(workers)],
                                stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            ctx.fail(EXIT_NOT_RUNNING, "tabfleetd could not start:\n  " + "\n  ".join(tail))
        try:
            Client(ctx.socket, 5).connect()
            return proc
        except DaemonNotRunning:
            time.sleep(0.2)
    proc.kill()
    ctx.fail(EXIT_NOT_RUNNING, f"tabfleetd did not answer within 60 s; see {log_path}")


def stop_daemon(ctx: Ctx, proc: subprocess.Popen[bytes]) -> None:
    try:
        with Client(ctx.socket, 5) as client:
            client.call("shutdown")
    except (DaemonNotRunning, DaemonError):
        proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    click.echo("the demo's tabfleetd has stopped", err=ctx.json)


@main.command()
@click.argument("job", required=False)
@click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True,
              help="Seconds between snapshots when nothing happens (events push one sooner).")
@click.option("--plain", is_flag=True, help="Plain lines even on a terminal (the default when stdout is not one).")
@json_option("Print each pushed snapshot as one JSON line.")
@pass_ctx
def watch(ctx: Ctx, job: str | None, interval: float, plain: bool, as_json: bool) -> None:
    """Follow a job (or all jobs) live: progress, rate, ETA, workers, memory, events.

    The daemon pushes each update over the socket.  With JOB, exits when the
    job ends (1 if any task failed); Ctrl-C stops watching and leaves the job running (exit 130).
    """
    from .watch import follow as follow_live, frames

    try:
        with ctx.client() as client:
            if as_json:
                last = None
                for snap in frames(client, job, interval):
                    ctx.echo_json(snap)
                    last = snap["jobs"][0] if job and snap["jobs"] else None
            else:
                last = follow_live(frames(client, job, interval), job, live=sys.stdout.isatty() and not plain,
                                   echo=click.echo)
    except KeyboardInterrupt:
        ctx.fail(EXIT_INTERRUPTED, f"stopped watching; {'job ' + job if job else 'the daemon'} carries on")
    if last is not None:
        if not as_json:
            click.echo(summary(last))
        sys.exit(EXIT_OK if last["state"] == "done" and not last["failed"] else EXIT_TASKS_FAILED)


@main.command()
@click.argument("job", required=False)
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True, help="Newest N events (0: all the daemon keeps, across restarts).")
@click.option("--all", "all_kinds", is_flag=True, help="Also job and worker events, not only task done/retry/failed.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events as they happen (until the job ends, or Ctrl-C).")
@json_option("Print JSON lines.")
@pass_ctx
def events(ctx: Ctx, job: str | None, limit: int, all_kinds: bool, follow: bool, as_json: bool) -> None:
    """Recent task events from the daemon: done, retried (with the reason) and failed.

    The daemon keeps events in its store (events_max, events_max_age_h), so the
    list goes back past restarts; --all also shows daemon_started and daemon_stopped.
    """
    from .watch import event_line, frames

    kinds = None if all_kinds else ["task_done", "task_retry", "task_failed"]
    shown = 0  # seq of the last event printed; events arrive in seq order

    def show(event: dict[str, Any]) -> None:
        nonlocal shown
        if event["seq"] > shown and (kinds is None or event["kind"] in kinds):
            click.echo(json.dumps(event, ensure_ascii=False) if as_json else event_line(event))
            shown = event["seq"]

    try:
        with ctx.client() as client:
            # The newest seq first: the stream replays from there, and `shown` drops what the listing already printed.
            base = max([e["seq"] for e in client.call("events", {"limit": 1})["events"]] or [0])
            for event in newest_events(client, job, limit, kinds):
                show(event)
            if follow:
                for snap in frames(client, job, 5.0, base):
                    for event in snap["events"]:
                        show(event)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)


def newest_events(client: Any, job: str | None, limit: int, kinds: list[str] | None) -> list[dict[str, Any]]:
    """The newest `limit` events (0: all), oldest first, paging back through the daemon's answers."""
    got: list[dict[str, Any]] = []
    before = None
    while True:
        want = EVENTS_PAGE if not limit else min(EVENTS_PAGE, limit - len(got))
        page = client.call("events", {"job": job, "limit": want, "kinds": kinds, "before": before})["events"]
        got[:0] = page
        if len(page) < want or (limit and len(got) >= limit):
            return got
        before = page[0]["seq"]


@main.command()
@click.argument("job")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), help="Output format (default csv; jsonl with --json).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE (default: stdout).")
@json_option("Write JSON lines (--format jsonl).")
@pass_ctx
def export(ctx: Ctx, job: str, fmt: str | None, output: Path | None, as_json: bool) -> None:
    """Every task of JOB with its outcome, file and attempts, as CSV or JSON lines."""
    from .export import write

    if as_json and fmt == "csv":
        raise click.BadParameter("--json writes JSON lines; leave out --format csv", param_hint="--json")
    fmt = fmt or ("jsonl" if as_json else "csv")
    with ctx.client() as client:
        pages = client.stream("export", {"job": job})
        if output is None:
            write(pages, fmt, sys.stdout)
            return
        temp = output.with_name(f".{output.name}.tmp")
        try:
            with open(temp, "w", encoding="utf-8", newline="") as f:
                count = write(pages, fmt, f)
            os.replace(temp, output)  # a file that exists is a whole export, never half of one
        except OSError as exc:
            ctx.fail(EXIT_FILE, f"cannot write {output}: {exc.strerror}")
        finally:
            temp.unlink(missing_ok=True)
    click.echo(f"{count} tasks of job {job} written to {output}", err=True)


def site_args(ctx: Ctx, site: str) -> dict[str, Any]:
    """--site as request arguments: a built-in's name, or a profile file, checked here and sent to the daemon."""
    if not site.endswith(".toml") and os.sep not in site:
        return {"site": site}
    path = Path(site)
    text = read_file(ctx, path)
    problems = profile_problems(path, text)
    if problems:
        for problem in problems:
            click.echo(f"{path}: {problem}", err=True)
        ctx.fail(EXIT_DAEMON_ERROR, f"{path}: the site profile has {len(problems)} problem{'s' if len(problems) != 1 else ''}",
                 code=1403, problems=problems)
    return {"site": path.stem, "profile": text, "profile_file": path.name}


def profile_problems(path: Path, data: bytes) -> list[str]:
    """A profile file's problems, each naming its key, found by the checker the daemon uses (pure, standard library)."""
    from tabfleetd.sites import profiles
    from tabfleetd.errors import ProfileError

    try:
        profiles.resolve(path.stem, data.decode("utf-8-sig"), path.name)
    except UnicodeDecodeError:
        return ["the file is not UTF-8 text"]
    except ProfileError as exc:
        return exc.problems
    return []


@main.group(invoke_without_command=True)
@json_option("Print JSON.")
@click.pass_context
def sites(click_ctx: click.Context, as_json: bool) -> None:
    """List the built-in site profiles (check a profile file with `sites check FILE`)."""
    if click_ctx.invoked_subcommand is not None:
        return
    ctx = click_ctx.find_object(Ctx)
    result = ctx.call("sites")
    if as_json:
        ctx.echo_json(result, indent=2)
        return
    table(["SITE", "START URL", "BROWSER", "NEW CHAT", "DESCRIPTION"],
          [[p["name"], p["start_url"], "headless" if p["headless"] else "headed", p["new_conversation"],
            p["description"]] for p in result["sites"]], flex={"DESCRIPTION": 20, "START URL": 20})
    click.echo("\nUse one with `submit FILE --site NAME`, or your own with `--site path/to/site.toml` "
               "(start from `tabfleetctl sites show NAME`).")


@sites.command(name="check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--explain", is_flag=True, help="Also list every key with its value in this profile and what it means.")
@json_option("Print {\"file\", \"ok\", \"name\", \"problems\", \"keys\"}.")
@pass_ctx
def sites_check(ctx: Ctx, file: Path, explain: bool, as_json: bool) -> None:
    """Check a site profile file; every problem names its key (exit 1 when there are any).

    tabfleetctl runs the daemon's own (pure) checker, so no daemon is needed; when one answers, it checks the
    file too (it may be another version, and what it allows may depend on its config: allowed hosts, say) and its
    problems are added. With --explain, every key follows: its value in this profile ('*' marks one set in the
    file, not a default) and what it does. The README's "Profile keys" table says the same.
    """
    from tabfleetd.sites import profiles

    data = read_file(ctx, file)
    problems = profile_problems(file, data)
    try:
        with Client(ctx.socket, ctx.timeout) as client:
            answer = client.call("sites_check", {"text": data, "filename": file.name})
        problems += [p for p in answer["problems"] if p not in problems]
        checked_by = "tabfleetctl and tabfleetd"
    except (DaemonNotRunning, UnsafeSocket, DaemonError):
        checked_by = "tabfleetctl (no daemon answered)"
    profile = None if problems else profiles.resolve(file.stem, data.decode("utf-8-sig"), file.name)
    keys = profiles.explain(profile) if profile is not None and explain else []
    name = None if profile is None else profile["name"]
    if as_json:
        ctx.echo_json({"file": str(file), "ok": not problems, "name": name, "problems": problems,
                       "checked_by": checked_by, "keys": keys})
    elif not problems:
        click.echo(f"{file}: ok (site '{name}'; checked by {checked_by})")
        for row in keys:
            click.echo(f"\n{'  ' if row['default'] else '* '}{row['key']} = {row['value']}")
            click.echo(textwrap.fill(row["doc"], width=100, initial_indent="    ", subsequent_indent="    "))
    for problem in [] if as_json else problems:
        click.echo(f"{file}: {problem}", err=True)
    if problems:
        sys.exit(EXIT_TASKS_FAILED)


@sites.command(name="show")
@click.argument("name")
@json_option("Print {\"name\", \"text\"}.")
@pass_ctx
def sites_show(ctx: Ctx, name: str, as_json: bool) -> None:
    """Print a built-in profile's TOML, to copy and adapt: `tabfleetctl sites show chatgpt > mysite.toml`."""
    result = ctx.call("site_profile", {"site": name})
    if as_json:
        ctx.echo_json(result)
        return
    click.echo(result["text"], nl=False)


@main.command()
@click.option("--account", help="The account to sign in (one of its workers opens the window).")
@click.option("--worker", "worker", type=click.IntRange(min=1), help="Or: the worker whose account to sign in.")
@click.option("--site", default="chatgpt", show_default=True, help="The site: a built-in name or a profile file.")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE", help="A start-URL variable, as for submit.")
@click.option("--knob", "knobs", multiple=True, metavar="KEY=VALUE", help="A site knob for the start URL, as for submit.")
@json_option("Print {\"account\", \"worker\", \"url\", \"display\"}.")
@pass_ctx
def login(ctx: Ctx, account: str | None, worker: int | None, site: str, variables: tuple[str, ...],
          knobs: tuple[str, ...], as_json: bool) -> None:
    """Open an account in a visible window, so a person can sign in to the site once.

    The window opens on the daemon's display (its DISPLAY) with the account's session. Once it is closed,
    the cookies it had become the account's session, and the account's workers take tasks again.
    """
    if (account is None) == (worker is None):
        raise click.UsageError("give --account NAME or --worker N")
    target = {"account": account} if account is not None else {"worker": worker}
    result = ctx.call("login", {**target, **site_args(ctx, site), "vars": parse_knobs(variables, "--var"),
                                "knobs": parse_knobs(knobs)})
    if as_json:
        ctx.echo_json(result)
        return
    click.echo(f"A browser window for account {result['account']} (worker {result['worker']}) is open on display "
               f"{result['display']} at {result['url']}.\nSign in there, then close the window; the account's workers "
               "then take tasks again.")


from . import accounts as _accounts  # noqa: E402,F401 - registers `tabfleetctl accounts` (it needs `main` defined)
