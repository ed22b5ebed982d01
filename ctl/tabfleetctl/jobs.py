"""tabfleetctl's job commands: submit, status, pause/resume/cancel, tasks, watch, events and export."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from .client import Client
from .context import (EXIT_FILE, EXIT_INTERRUPTED, EXIT_OK, EXIT_TASKS_FAILED, Ctx, json_option, parse_knobs, pass_ctx,
                      read_file, show, table)
from .sites import site_args
from .terminal import printable
from .watch import pace_line

SUBMIT_BYTES_PER_S = 1 << 20  # the slowest a submit is expected to be queued, for its reply timeout
EVENTS_PAGE = 5000  # events per answer: the most the daemon sends at once


@click.command()
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


@click.command()
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


def job_command(op: str, verb: str, doc: str) -> click.Command:
    @click.command(name=op, help=doc + " A request that changes nothing says why and exits 0.")
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

    return command


resume = job_command("resume", "resumed", "Resume a paused job, or give a failed or cancelled job's unfinished tasks fresh attempts.")
pause = job_command("pause", "paused", "Pause a job: running tasks finish, no new ones start.")
cancel = job_command("cancel", "cancelled", "Cancel a job's unfinished tasks; those being generated stop at once (images already made are kept).")


@click.command()
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


@click.command()
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


@click.command()
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


@click.command()
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

