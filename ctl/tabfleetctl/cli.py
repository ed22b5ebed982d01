"""tabfleetctl: submit prompt files to tabfleetd and see where they stand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from .client import (BUSY_WAIT_S, Client, DaemonBusy, DaemonError, DaemonNotRunning, NoPermission, UnsafeSocket,
                     default_socket)
from .samples import DEMO_PROMPTS
from .terminal import printable
from .watch import browser_cell, pace_line

# Named exit codes.
EXIT_OK = 0
EXIT_TASKS_FAILED = 1  # --wait: the job ended with failed tasks
EXIT_USAGE = 2  # click's own
EXIT_NOT_RUNNING = 3
EXIT_DAEMON_ERROR = 4
EXIT_BUSY = 5  # the daemon kept refusing for now: too many connections or bytes in flight
EXIT_UNSAFE_SOCKET = 6  # the socket's directory could be someone else's

TERMINAL = ("done", "failed", "cancelled")
SUBMIT_BYTES_PER_S = 1 << 20  # the slowest a submit is expected to be queued, for its reply timeout


class Ctx:
    def __init__(self, socket: str | None, timeout: float) -> None:
        self.socket = default_socket(socket)
        self.timeout = timeout

    @contextmanager
    def client(self, timeout: float | None = None) -> Iterator[Client]:
        with self.reporting(), Client(self.socket, timeout or self.timeout) as client:
            yield client

    @contextmanager
    def reporting(self) -> Iterator[None]:
        """Turn the client's errors into a message and tabfleetctl's exit code."""
        try:
            yield
        except (DaemonNotRunning, UnsafeSocket, DaemonError) as exc:
            code, message = explain(exc)
            click.echo(f"tabfleetctl: {message}", err=True)
            sys.exit(code)

    def call(self, op: str, args: dict[str, Any] | None = None) -> Any:
        with self.client() as client:
            return client.call(op, args)


def explain(exc: Exception) -> tuple[int, str]:
    """The exit code and message for a client error (the daemon's words escaped: they may quote a prompt)."""
    if isinstance(exc, NoPermission):
        return EXIT_NOT_RUNNING, str(exc)
    if isinstance(exc, DaemonNotRunning):
        return EXIT_NOT_RUNNING, f"{exc}. Start it with `tabfleetd` (or `systemctl start tabfleetd`)."
    if isinstance(exc, UnsafeSocket):
        return EXIT_UNSAFE_SOCKET, printable(exc)
    if isinstance(exc, DaemonBusy):
        return EXIT_BUSY, f"{printable(exc)} (still busy after retrying for {BUSY_WAIT_S:g} s; try again)"
    assert isinstance(exc, DaemonError)
    return EXIT_DAEMON_ERROR, f"error {exc.code}: {printable(exc)}"


pass_ctx = click.make_pass_decorator(Ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--socket", envvar=None, help="Control socket (default: $TABFLEET_SOCKET, $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR/tabfleet, /tmp/tabfleet-$UID).")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for each reply.")
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


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--site", default="demo", show_default=True, help="Site to generate on: a built-in name (see `tabfleetctl sites`) or a profile file, path/to/site.toml.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Output directory (default ./tabfleet-out/JOB).")
@click.option("--name", help="A name for the job (default: the file's name).")
@click.option("--workers", type=click.IntRange(min=1), help="Use at most N workers for this job.")
@click.option("--knob", "knobs", multiple=True, metavar="KEY=VALUE", help="A site knob, e.g. latency=2 (demo: latency, jitter, error_rate, error_message, rate_limit, hang_rate, lockup_rate, seed).")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE", help="A start-URL variable, e.g. host=10.0.0.5 or port=7860 (see the profile key 'vars').")
@click.option("--json", "as_json", is_flag=True, help="Print {\"job\": ID, \"tasks\": N}.")
@click.option("--wait", is_flag=True, help="Wait until the job ends; exit 1 if any task failed.")
@pass_ctx
def submit(ctx: Ctx, file: Path, site: str, out: Path | None, name: str | None, workers: int | None,
           knobs: tuple[str, ...], variables: tuple[str, ...], as_json: bool, wait: bool) -> None:
    """Queue every prompt in FILE (.txt, .csv with a 'prompt' column, or .jsonl)."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise click.FileError(str(file), exc.strerror) from None
    args = {"filename": file.name, "data": data, **site_args(site), "out": str(out.resolve()) if out else None,
            "cwd": os.getcwd(), "name": name, "workers": workers, "knobs": parse_knobs(knobs),
            "vars": parse_knobs(variables, "--var")}
    # The daemon queues a big file in batches: about a minute for a million prompts on a slow disk.
    with ctx.client(ctx.timeout + len(data) / SUBMIT_BYTES_PER_S) as client:
        result = client.call("submit", args)
        if as_json:
            click.echo(json.dumps({"job": result["job"], "tasks": result["tasks"]}))
        else:
            click.echo(f"job {result['job']}: {result['tasks']} prompts queued; images go to {result['out']}")
        if wait:
            job = follow(client, result["job"], quiet=as_json)
            sys.exit(EXIT_TASKS_FAILED if job["failed"] or job["state"] != "done" else EXIT_OK)


def follow(client: Client, job_id: str, quiet: bool = False, interval: float = 0.5) -> dict[str, Any]:
    """Show a job's progress until it ends; return its final status."""
    tty = sys.stderr.isatty() and not quiet
    last = ""
    while True:
        job = client.call("status", {"job": job_id})["jobs"][0]
        line = progress_line(job)
        if not quiet and line != last:
            click.echo(("\r" + line.ljust(len(last))) if tty else line, err=True, nl=not tty)
            last = line
        if job["state"] in TERMINAL:
            if tty:
                click.echo("", err=True)
            return job
        time.sleep(interval)


def progress_line(job: dict[str, Any]) -> str:
    total = max(job["total"], 1)
    width = 24
    filled = int(width * (job["done"] + job["failed"]) / total)
    eta = "" if job["eta_s"] is None else f" eta {fmt_seconds(job['eta_s'])}"
    return (f"[{'#' * filled}{'.' * (width - filled)}] {job['done']}/{job['total']} done, {job['failed']} failed, "
            f"{job['running']} running, {job['pending']} pending, {job['rate_per_min']:.1f}/min{eta}")


def fmt_seconds(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


@main.command()
@click.argument("job", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the whole status as JSON.")
@pass_ctx
def status(ctx: Ctx, job: str | None, as_json: bool) -> None:
    """Show jobs, workers and memory (one JOB, or all)."""
    result = ctx.call("status", {"job": job} if job else {})
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(table(["JOB", "NAME", "STATE", "DONE", "FAILED", "RUN", "PENDING", "TOTAL", "RATE/MIN", "ETA", "OUT"],
                     [[j["id"], j["name"][:20], j["state"], j["done"], j["failed"], j["running"], j["pending"], j["total"],
                       f"{j['rate_per_min']:.1f}", "" if j["eta_s"] is None else fmt_seconds(j["eta_s"]), j["out"]]
                      for j in result["jobs"]]) if result["jobs"] else "no jobs")
    click.echo("")
    click.echo(workers_table(result["workers"]))
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


def workers_table(workers: list[dict[str, Any]]) -> str:
    if not workers:
        return "no workers"
    return table(["WORKER", "PID", "STATE", "HEALTH", "ACCOUNT", "BROWSER", "DONE", "MEM MB", "RESTARTS", "CURRENT / LAST ERROR"],
                 [[w["id"], w["pid"] or "", w["state"], account_health(w)[:40], (w.get("account") or {}).get("name", ""),
                   browser_cell(w), w["tasks_done"], f"{w['rss_mb']:.0f}", w["restarts"],
                   (w.get("current_prompt") or "")[:40] or (w["last_error"] or "")[:60]] for w in workers])



def account_health(worker: dict[str, Any]) -> str:
    account = worker.get("account") or {}
    if account.get("state") == "cooling" and account.get("cooling_until"):
        return f"cooling {max(0, account['cooling_until'] - time.time()):.0f} s"
    return worker.get("health") or ""


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers] + [[printable(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def job_command(op: str, verb: str, doc: str) -> None:
    @main.command(name=op, help=doc)
    @click.argument("job")
    @pass_ctx
    def command(ctx: Ctx, job: str) -> None:
        result = ctx.call(op, {"job": job})
        if result.get("changed"):
            click.echo(f"job {job} {verb} (now {result['state']})")
        else:
            click.echo(f"job {job} unchanged ({result['state']}){': ' + result['message'] if result.get('message') else ''}")


job_command("resume", "resumed", "Resume a paused job, or give a failed or cancelled job's unfinished tasks fresh attempts.")
job_command("pause", "paused", "Pause a job: running tasks finish, no new ones start.")
job_command("cancel", "cancelled", "Cancel a job's unfinished tasks (images already made are kept).")


@main.command()
@click.argument("job")
@click.option("--state", type=click.Choice(["pending", "running", "retry_wait", "done", "failed", "cancelled"]), help="Only tasks in this state.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@pass_ctx
def tasks(ctx: Ctx, job: str, state: str | None, as_json: bool) -> None:
    """List a job's tasks with their state, attempts, file and last error."""
    with ctx.client() as client:
        if as_json:
            for task in task_pages(client, job, state):
                click.echo(json.dumps(task))
            return
        click.echo(table(["#", "STATE", "TRIES", "FILE / ERROR", "PROMPT"],
                         [[t["index"], t["state"], t["attempts"], t["file"] or (t["error"] or "")[:50], t["prompt"][:50]]
                          for t in task_pages(client, job, state)]))


def task_pages(client: Client, job: str, state: str | None) -> Iterator[dict[str, Any]]:
    """Every task of the job (in that state), a page per call: the daemon never builds one huge reply."""
    after: int | None = 0
    while after is not None:
        page = client.call("tasks", {"job": job, "state": state, "after": after})
        yield from page["tasks"]
        after = page.get("next")


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def workers(click_ctx: click.Context, as_json: bool) -> None:
    """Show the worker processes (or manage them with a subcommand)."""
    if click_ctx.invoked_subcommand is not None:
        return
    result = click_ctx.find_object(Ctx).call("workers")
    click.echo(json.dumps(result, indent=2) if as_json else workers_table(result["workers"]))


@workers.command("set")
@click.argument("count", type=click.IntRange(1, 64))
@pass_ctx
def workers_set(ctx: Ctx, count: int) -> None:
    """Grow or shrink the fleet to COUNT workers (busy workers finish their task first)."""
    result = ctx.call("set_workers", {"count": count})
    note = "" if result["target"] == count else f" (memory allows {result['target']} for now)"
    click.echo(f"fleet size set to {count}{note}")


@workers.command("restart")
@click.argument("worker", type=int)
@pass_ctx
def workers_restart(ctx: Ctx, worker: int) -> None:
    """Restart worker N and its Chromium (a blocked worker takes tasks again)."""
    ctx.call("restart_worker", {"worker": worker})
    click.echo(f"worker {worker} is restarting")


@main.command()
@pass_ctx
def ping(ctx: Ctx) -> None:
    """Check that the daemon answers."""
    result = ctx.call("ping")
    click.echo(f"tabfleetd is up (pid {result['pid']}, up {fmt_seconds(result['uptime_s'])})")


@main.command()
@pass_ctx
def dashboard(ctx: Ctx) -> None:
    """Print a one-time link that signs a browser in to the web dashboard (valid for 2 minutes)."""
    click.echo(ctx.call("dashboard_url")["url"])


@main.command()
@click.option("--wait", is_flag=True, help="Return only once the daemon process has exited.")
@click.option("--max-wait", type=float, default=120.0, show_default=True, help="With --wait: give up after this many seconds (exit 4).")
@pass_ctx
def shutdown(ctx: Ctx, wait: bool, max_wait: float) -> None:
    """Stop the daemon; tasks in flight get a grace period, the rest stay queued."""
    with ctx.client() as client:
        pid = client.call("ping")["pid"]
        client.call("shutdown")
    click.echo("tabfleetd is stopping")
    if not wait:
        return
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        if _process_gone(pid):
            click.echo(f"tabfleetd (pid {pid}) has stopped")
            return
        time.sleep(0.2)
    click.echo(f"tabfleetctl: tabfleetd (pid {pid}) did not stop within {max_wait:g} s", err=True)
    sys.exit(EXIT_DAEMON_ERROR)


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
@click.option("--count", type=click.IntRange(1, len(DEMO_PROMPTS)), default=36, show_default=True, help="How many sample prompts.")
@click.option("--latency", type=float, default=1.0, show_default=True, help="Seconds the demo site takes per image.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Output directory (default ./tabfleet-out/JOB).")
@click.option("--keep-daemon", is_flag=True, help="Leave a daemon the demo started running afterwards.")
@pass_ctx
def demo(ctx: Ctx, workers: int, count: int, latency: float, out: Path | None, keep_daemon: bool) -> None:
    """First run: generate sample images on the bundled demo site."""
    started = None
    with ctx.reporting():
        try:
            Client(ctx.socket, ctx.timeout).connect()
        except DaemonNotRunning:
            started = start_daemon(ctx, workers)
    try:
        with ctx.client() as client:
            result = client.call("submit", {
                "filename": "demo-prompts.txt", "data": "\n".join(DEMO_PROMPTS[:count]).encode(), "site": "demo",
                "out": str(out.resolve()) if out else None, "cwd": os.getcwd(), "name": "demo",
                "knobs": {"latency": str(latency)}})
            click.echo(f"job {result['job']}: {result['tasks']} sample prompts sent to the demo site")
            job = follow(client, result["job"])
        click.echo(f"{job['done']} images in {job['out']} (list: {Path(job['out']) / 'manifest.jsonl'})")
        if job["failed"]:
            click.echo(f"{job['failed']} prompts failed; see `tabfleetctl tasks {job['id']} --state failed`")
            sys.exit(EXIT_TASKS_FAILED)
    finally:
        if started is not None and not keep_daemon:
            stop_daemon(ctx, started)


def start_daemon(ctx: Ctx, workers: int) -> subprocess.Popen[bytes]:
    """Start tabfleetd in the background for the demo and wait until it answers."""
    log_path = Path(tempfile.gettempdir()) / f"tabfleetd-demo-{os.getuid()}.log"
    click.echo(f"starting tabfleetd with {workers} workers (log: {log_path})")
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "tabfleetd", "--socket", str(ctx.socket), "--workers", str(workers)],
                                stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            click.echo("tabfleetctl: tabfleetd could not start:\n  " + "\n  ".join(tail), err=True)
            sys.exit(EXIT_NOT_RUNNING)
        try:
            Client(ctx.socket, 5).connect()
            return proc
        except DaemonNotRunning:
            time.sleep(0.2)
    proc.kill()
    click.echo(f"tabfleetctl: tabfleetd did not answer within 60 s; see {log_path}", err=True)
    sys.exit(EXIT_NOT_RUNNING)


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
    click.echo("the demo's tabfleetd has stopped")


EXIT_INTERRUPTED = 130  # watch/events --follow stopped with Ctrl-C; the job is untouched


@main.command()
@click.argument("job", required=False)
@click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True,
              help="Seconds between snapshots when nothing happens (events push one sooner).")
@click.option("--plain", is_flag=True, help="Plain lines even on a terminal (the default when stdout is not one).")
@pass_ctx
def watch(ctx: Ctx, job: str | None, interval: float, plain: bool) -> None:
    """Follow a job (or all jobs) live: progress, rate, ETA, workers, memory, events.

    The daemon pushes each update over the socket.  With JOB, exits when the
    job ends (1 if any task failed); Ctrl-C stops watching and leaves the job running.
    """
    from .watch import follow as follow_live, frames

    try:
        with ctx.client() as client:
            last = follow_live(frames(client, job, interval), job, live=sys.stdout.isatty() and not plain, echo=click.echo)
    except KeyboardInterrupt:
        click.echo(f"stopped watching; {'job ' + job if job else 'the daemon'} carries on", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if last is not None:
        click.echo(f"job {last['id']} {last['state']}: {last['done']} done, {last['failed']} failed"
                   f"{', ' + str(last['cancelled']) + ' cancelled' if last.get('cancelled') else ''} of {last['total']}")
        sys.exit(EXIT_OK if last["state"] == "done" and not last["failed"] else EXIT_TASKS_FAILED)


@main.command()
@click.argument("job", required=False)
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True, help="Newest N events (0: all the daemon keeps).")
@click.option("--all", "all_kinds", is_flag=True, help="Also job and worker events, not only task done/retry/failed.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events as they happen (until the job ends, or Ctrl-C).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@pass_ctx
def events(ctx: Ctx, job: str | None, limit: int, all_kinds: bool, follow: bool, as_json: bool) -> None:
    """Recent task events from the daemon: done, retried (with the reason) and failed.

    The daemon keeps the last few thousand events in memory, since it started.
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
            for event in client.call("events", {"job": job, "limit": limit, "kinds": kinds})["events"]:
                show(event)
            if follow:
                for snap in frames(client, job, 5.0, base):
                    for event in snap["events"]:
                        show(event)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)


@main.command()
@click.argument("job")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True, help="Output format.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE (default: stdout).")
@pass_ctx
def export(ctx: Ctx, job: str, fmt: str, output: Path | None) -> None:
    """Every task of JOB with its outcome, file and attempts, as CSV or JSON lines."""
    from .export import write

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
            raise click.FileError(str(output), exc.strerror) from None
        finally:
            temp.unlink(missing_ok=True)
    click.echo(f"{count} tasks of job {job} written to {output}", err=True)


def site_args(site: str) -> dict[str, Any]:
    """--site as request arguments: a built-in's name, or a profile file whose text goes to the daemon."""
    if not site.endswith(".toml") and os.sep not in site:
        return {"site": site}
    path = Path(site)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise click.BadParameter(f"cannot read the profile file {site}: {exc.strerror}", param_hint="--site") from None
    return {"site": path.stem, "profile": text, "profile_file": path.name}


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def sites(click_ctx: click.Context, as_json: bool) -> None:
    """List the built-in site profiles (check a profile file with `sites check FILE`)."""
    if click_ctx.invoked_subcommand is not None:
        return
    result = click_ctx.obj.call("sites")
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(table(["SITE", "START URL", "BROWSER", "NEW CHAT", "DESCRIPTION"],
                     [[p["name"], p["start_url"], "headless" if p["headless"] else "headed", p["new_conversation"],
                       p["description"]] for p in result["sites"]]))
    click.echo("\nUse one with `submit FILE --site NAME`, or your own with `--site path/to/site.toml` "
               "(start from `tabfleetctl sites show NAME`).")


@sites.command(name="check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--explain", is_flag=True, help="Also list every key with its value in this profile and what it means.")
@pass_ctx
def sites_check(ctx: Ctx, file: Path, explain: bool) -> None:
    """Check a site profile file; every problem names its key (exit 1 when there are any).

    With --explain, every key follows: its value in this profile ('*' marks one set in the file, not a default)
    and what it does. The README's "Profile keys" table says the same.
    """
    try:
        text = file.read_bytes()
    except OSError as exc:
        raise click.FileError(str(file), exc.strerror) from None
    result = ctx.call("sites_check", {"text": text, "filename": file.name, "explain": explain})
    if result["ok"]:
        click.echo(f"{file}: ok (site '{result['name']}')")
        for row in result.get("keys") or []:
            click.echo(f"\n{'  ' if row['default'] else '* '}{row['key']} = {row['value']}")
            click.echo(textwrap.fill(row["doc"], width=100, initial_indent="    ", subsequent_indent="    "))
        return
    for problem in result["problems"]:
        click.echo(f"{file}: {problem}", err=True)
    sys.exit(EXIT_TASKS_FAILED)


@sites.command(name="show")
@click.argument("name")
@pass_ctx
def sites_show(ctx: Ctx, name: str) -> None:
    """Print a built-in profile's TOML, to copy and adapt: `tabfleetctl sites show chatgpt > mysite.toml`."""
    click.echo(ctx.call("site_profile", {"site": name})["text"], nl=False)


@main.command()
@click.option("--account", help="The account to sign in (one of its workers opens the window).")
@click.option("--worker", "worker", type=click.IntRange(min=1), help="Or: the worker whose account to sign in.")
@click.option("--site", default="chatgpt", show_default=True, help="The site: a built-in name or a profile file.")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE", help="A start-URL variable, as for submit.")
@click.option("--knob", "knobs", multiple=True, metavar="KEY=VALUE", help="A site knob for the start URL, as for submit.")
@pass_ctx
def login(ctx: Ctx, account: str | None, worker: int | None, site: str, variables: tuple[str, ...],
          knobs: tuple[str, ...]) -> None:
    """Open an account in a visible window, so a person can sign in to the site once.

    The window opens on the daemon's display (its DISPLAY) with the account's session. Once it is closed,
    the cookies it had become the account's session, and the account's workers take tasks again.
    """
    if (account is None) == (worker is None):
        raise click.UsageError("give --account NAME or --worker N")
    target = {"account": account} if account is not None else {"worker": worker}
    result = ctx.call("login", {**target, **site_args(site), "vars": parse_knobs(variables, "--var"),
                                "knobs": parse_knobs(knobs)})
    click.echo(f"A browser window for account {result['account']} (worker {result['worker']}) is open on display "
               f"{result['display']} at {result['url']}.\nSign in there, then close the window; the account's workers "
               "then take tasks again.")


from . import accounts as _accounts  # noqa: E402,F401 - registers `tabfleetctl accounts` (it needs `main` defined)
