"""The tabfleetd command: read the configuration once, then run the daemon in the foreground."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import click

from . import __version__, config as config_module, protocol
from .app import Daemon
from .browser import find_chromium
from .errors import AlreadyRunning, BrowserError, ConfigError

# Named exit codes (sysexits.h), so systemd units and scripts can tell failures apart.
EXIT_OK = 0
EXIT_UNAVAILABLE = 69  # no Chromium
EXIT_SOFTWARE = 70  # a bug
EXIT_ALREADY_RUNNING = 75
EXIT_CONFIG = 78


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="TOML config file (see --help-config).")
@click.option("--socket", help="Control socket path.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), help="Directory for the store, browser profiles and logs.")
@click.option("--workers", type=click.IntRange(min=1), help="Number of worker processes (default 2).")
@click.option("--chromium", help="Chromium executable.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="Logging level.")
@click.option("--help-config", is_flag=True, help="Print every config key with its default and meaning, then exit.")
@click.version_option(__version__, prog_name="tabfleetd")
def main(config_path: Path | None, socket: str | None, state_dir: Path | None, workers: int | None,
         chromium: str | None, log_level: str | None, help_config: bool) -> None:
    """Run the tabfleet daemon in the foreground (systemd's way)."""
    if help_config:
        click.echo(config_module.describe())
        return
    env = dict(os.environ)
    try:
        cfg = config_module.load(config_path, {"socket": socket, "state_dir": state_dir, "workers": workers,
                                               "chromium": chromium, "log_level": log_level}, env, Path.home())
        cfg = cfg.replace(socket=protocol.resolve_socket_path(str(cfg.socket) if cfg.socket else None, env, os.getuid()))
        chromium_path = find_chromium(cfg.chromium, env.get("PATH"))
    except ConfigError as exc:
        click.echo(f"tabfleetd: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    except BrowserError as exc:
        click.echo(f"tabfleetd: {exc}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    logging.basicConfig(level=cfg.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s tabfleetd %(levelname)s %(name)s: %(message)s")
    for noisy in ("pyppeteer", "websockets", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        sys.exit(asyncio.run(Daemon(cfg, chromium_path).run()))
    except AlreadyRunning as exc:
        click.echo(f"tabfleetd: {exc}", err=True)
        sys.exit(EXIT_ALREADY_RUNNING)
    except ConfigError as exc:
        click.echo(f"tabfleetd: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
