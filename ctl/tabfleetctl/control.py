"""tabfleetctl's commands about the daemon itself and its worker fleet: workers, ping, dashboard, shutdown."""

from __future__ import annotations

import os
import time

import click

from .context import EXIT_DAEMON_ERROR, Ctx, fmt_seconds, json_option, pass_ctx, show


@click.group(invoke_without_command=True)
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


@click.command()
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


@click.command()
@json_option("Print {\"url\"}.")
@pass_ctx
def dashboard(ctx: Ctx, as_json: bool) -> None:
    """Print a one-time link that signs a browser in to the web dashboard (valid for 2 minutes)."""
    result = ctx.call("dashboard_url")
    if as_json:
        ctx.echo_json(result)
        return
    click.echo(result["url"])


@click.command()
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

