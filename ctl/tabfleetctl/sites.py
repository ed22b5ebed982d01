"""tabfleetctl's site commands: sites (list, check, show), login, and --site as request arguments."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import click

from .client import Client, DaemonError, DaemonNotRunning, UnsafeSocket
from .context import EXIT_DAEMON_ERROR, EXIT_TASKS_FAILED, Ctx, json_option, parse_knobs, pass_ctx, read_file, table


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


@click.group(invoke_without_command=True)
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


@click.command()
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
