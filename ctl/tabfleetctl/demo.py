"""tabfleetctl demo: a first run on the bundled demo site, starting (and stopping) a daemon when none answers."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from .client import Client, DaemonError, DaemonNotRunning
from .context import EXIT_INTERRUPTED, EXIT_NOT_RUNNING, EXIT_TASKS_FAILED, Ctx, json_option
from .jobs import final_counts, follow_to_end
from .samples import demo_prompts

MAX_DEMO_PROMPTS = 10_000


@click.command()
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

