"""tabfleetctl accounts: the named accounts, their states, and their sessions in and out.

A session file signs whoever holds it in: `accounts export` writes one 0600, and the daemon gives it to
root and its own user only.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from .context import EXIT_FILE, Ctx, fmt_seconds, json_option, pass_ctx, read_file, table
from .terminal import printable


def ago(stamp: float | None) -> str:
    return "never" if not stamp else f"{fmt_seconds(max(0.0, time.time() - stamp))} ago"


def session_cell(account: dict[str, Any]) -> str:
    if account.get("damaged"):
        return "damaged: " + str(account["damaged"])
    if not account.get("stored"):
        return "none stored"
    storage = f" + storage of {account['origins']} sites" if account.get("origins") else ""
    return f"{account['cookies']} cookies{storage}, {ago(account.get('saved'))} ({account.get('source') or '?'})"


def state_cell(account: dict[str, Any]) -> str:
    state = account["state"]
    if account.get("cooling_s"):
        state += f", cooling {fmt_seconds(account['cooling_s'])}"
    if account.get("quota"):
        state += " (quota)"
    return state


@click.group(invoke_without_command=True)
@json_option("Print JSON.")
@click.pass_context
def accounts(click_ctx: click.Context, as_json: bool) -> None:
    """List the accounts: state (signed in, signed out, challenged, unknown), cooling, workers, last use, session."""
    if click_ctx.invoked_subcommand is not None:
        return
    ctx = click_ctx.find_object(Ctx)
    result = ctx.call("accounts")
    if as_json:
        ctx.echo_json(result, indent=2)
        return
    listed = result["accounts"]
    if not listed:
        click.echo("no accounts")
        return
    table(["ACCOUNT", "STATE", "WORKERS", "LAST USED", "SESSION"],
          [[a["name"], state_cell(a), ",".join(map(str, a["workers"])) or "-", ago(a.get("last_used")), session_cell(a)]
           for a in listed], flex={"SESSION": 20, "STATE": 12})
    for a in listed:
        if a.get("reason") and a["state"] != "signed in":
            click.echo(f"{printable(a['name'])}: {printable(a['reason'])}")
        if a.get("quota"):
            click.echo(f"{printable(a['name'])}: quota: {printable(a['quota'])}")


@accounts.command("import")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option("Print {\"account\", \"cookies\", \"origins\", \"workers\"}.")
@pass_ctx
def accounts_import(ctx: Ctx, name: str, file: Path, as_json: bool) -> None:
    """Make FILE (cookies.txt, or a JSON cookie export) account NAME's session; its workers take it at once."""
    data = read_file(ctx, file)
    result = ctx.call("accounts_import", {"name": name, "filename": file.name, "data": data})
    if as_json:
        ctx.echo_json(result)
        return
    storage = f" and local storage of {result['origins']} sites" if result["origins"] else ""
    workers = f"; workers {', '.join(map(str, result['workers']))} use it now" if result["workers"] else ""
    click.echo(f"account {name}: {result['cookies']} cookies{storage} imported{workers}")


@accounts.command("export")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["json", "netscape"]), default="json", show_default=True,
              help="json: Playwright's storageState (cookies and local storage); netscape: cookies.txt.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE, mode 0600 (default: stdout).")
@pass_ctx
def accounts_export(ctx: Ctx, name: str, fmt: str, output: Path | None) -> None:
    """Print account NAME's stored session, to sign it in elsewhere (root and the daemon's user only)."""
    text = ctx.call("accounts_export", {"name": name, "format": fmt})["text"]
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)  # it signs the account in: nobody else may read it, whatever the umask
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
    except OSError as exc:
        ctx.fail(EXIT_FILE, f"cannot write {output}: {exc.strerror}")
    click.echo(f"account {name}: session written to {output}", err=True)


@accounts.command("remove")
@click.argument("name")
@json_option("Print {\"account\", \"removed\"}.")
@pass_ctx
def accounts_remove(ctx: Ctx, name: str, as_json: bool) -> None:
    """Delete account NAME's stored session; its workers' browsers drop their cookies."""
    result = ctx.call("accounts_remove", {"name": name})
    if as_json:
        ctx.echo_json(result)
        return
    if not result["removed"]:
        click.echo(f"account {name} had no stored session", err=True)
        sys.exit(0)
    click.echo(f"account {name}: session removed")
