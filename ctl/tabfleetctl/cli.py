"""tabfleetctl: submit prompt files to tabfleetd and see where they stand.

The `main` group and where each command comes from; the commands live in a module per noun, the plumbing they
share in context.py.
"""

from __future__ import annotations

import click

from tabfleetd import __version__

from . import accounts, control, demo, jobs, sites
from .context import Commands, Ctx


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--socket", envvar=None, help="Control socket (default: $TABFLEET_SOCKET, else the first that exists of "
              "$RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR/tabfleet, /tmp/tabfleet-$UID and the service's /run/tabfleet).")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for each reply.")
@click.version_option(__version__, prog_name="tabfleetctl")
@click.pass_context
def main(ctx: click.Context, socket: str | None, timeout: float) -> None:
    """Control tabfleetd, the daemon that turns prompt files into images."""
    ctx.obj = Ctx(socket, timeout)


for command in (jobs.submit, jobs.status, jobs.resume, jobs.pause, jobs.cancel, jobs.tasks, jobs.watch, jobs.events,
                jobs.export, control.workers, control.ping, control.dashboard, control.shutdown, demo.demo, sites.sites,
                sites.login, accounts.accounts):
    main.add_command(command)
