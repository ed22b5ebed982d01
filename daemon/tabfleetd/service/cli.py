"""The tabfleetd command: read the configuration and the environment once, then run the daemon.

In the foreground by default (systemd's way, Type=notify), or in the background with --detach.
The config file is --config, else $TABFLEET_CONFIG, else /etc/tabfleet/tabfleetd.toml when it exists;
SIGHUP reads the same file again (Daemon.reload_config).
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import sys
from pathlib import Path

import click

from .. import __version__, protocol
from ..settings import config as config_module
from . import detach as detach_module
from ..store import storefile
from .app import Daemon, StateLock
from ..fleet.browser import find_chromium
from ..errors import AlreadyRunning, BrowserError, ConfigError, StoreDamaged, StoreFormatError
from .exitcodes import EXIT_ALREADY_RUNNING, EXIT_CONFIG, EXIT_OK, EXIT_SOFTWARE, EXIT_STORE_DAMAGED, EXIT_UNAVAILABLE
from ..journal import log_to_stderr, stderr_is_journal
from .notify import ENV_NAMES, Notifier, ServiceEnv, ServiceLink
from ..store.store import Store

DEFAULT_CONFIG = Path("/etc/tabfleet/tabfleetd.toml")  # the systemd unit's


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help=f"TOML config file (default: $TABFLEET_CONFIG, else {DEFAULT_CONFIG} when it exists; see --help-config).")
@click.option("--socket", help="Control socket path.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), help="Directory for the store, browser profiles and logs.")
@click.option("--workers", type=click.IntRange(min=1), help="Number of worker processes (default 2).")
@click.option("--chromium", help="Chromium executable.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="Logging level.")
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), help="Log to this file, rotated (default: stderr; with --detach, STATE_DIR/logs/tabfleetd.log).")
@click.option("--detach", is_flag=True, help="Run in the background (not under systemd); returns once the daemon answers.")
@click.option("--pidfile", type=click.Path(dir_okay=False, path_type=Path), help="With --detach: write the daemon's pid to this file.")
@click.option("--help-config", is_flag=True, help="Print a commented example config (every key, its default and meaning), then exit.")
@click.option("--restore-store", is_flag=True, help="Put the store's last copy (STATE_DIR/store/data.mdb.prev) back in place of a damaged store, then exit.")
@click.version_option(__version__, prog_name="tabfleetd")
def main(config_path: Path | None, socket: str | None, state_dir: Path | None, workers: int | None,
         chromium: str | None, log_level: str | None, log_file: Path | None, detach: bool, pidfile: Path | None,
         help_config: bool, restore_store: bool) -> None:
    """Run the tabfleet daemon in the foreground (systemd's way), or in the background with --detach."""
    if help_config:
        click.echo(config_module.describe())
        return
    if pidfile is not None and not detach:
        raise click.UsageError("--pidfile goes with --detach (in the foreground, systemd or your shell knows the pid)")
    env = dict(os.environ)
    service_env = ServiceEnv.from_env(env, os.getpid())
    for name in ENV_NAMES:
        os.environ.pop(name, None)  # workers and Chromium must not inherit the service manager's socket
    config_path = config_file(config_path, env)
    overrides = {"socket": socket, "state_dir": state_dir, "workers": workers, "chromium": chromium,
                 "log_level": log_level, "log_file": log_file}
    home = Path.home()

    def read_config() -> config_module.Config:
        """The config from the file and the command line, with what the environment decides filled in."""
        cfg = config_module.load(config_path, overrides, env, home)
        cfg = cfg.replace(socket=protocol.resolve_socket_path(str(cfg.socket) if cfg.socket else None, env, os.getuid()))
        if cfg.display is None and env.get("DISPLAY"):
            cfg = cfg.replace(display=env["DISPLAY"])
        if cfg.log_format == "auto":
            cfg = cfg.replace(log_format="journal" if not cfg.log_file and not detach and stderr_is_journal(env) else "text")
        return cfg

    try:
        cfg = read_config()
        chromium_path = find_chromium(cfg.chromium, env.get("PATH"))
    except ConfigError as exc:
        click.echo(f"tabfleetd: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    except BrowserError as exc:
        click.echo(f"tabfleetd: {exc}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    if restore_store:
        sys.exit(restore(cfg))
    lock = None
    if detach:
        if service_env.notify_socket:
            click.echo("tabfleetd: --detach is for running outside systemd; under systemd run it in the foreground "
                       "(Type=notify)", err=True)
            sys.exit(EXIT_CONFIG)
        # DaemonContext changes to /, so every path must be absolute first.
        cfg = cfg.replace(state_dir=cfg.state_dir.absolute(), socket=cfg.socket.absolute(),
                          log_file=(cfg.log_file or cfg.state_dir / "logs" / "tabfleetd.log").absolute())
        pidfile = pidfile.absolute() if pidfile else None
        lock = StateLock(cfg.state_dir)
        try:
            # Refused here, while the terminal still shows it; the daemon inherits the held lock.
            lock.acquire()
            detach_module.refuse_if_running(cfg.socket, pidfile)
        except AlreadyRunning as exc:
            click.echo(f"tabfleetd: {exc}", err=True)
            sys.exit(EXIT_ALREADY_RUNNING)
        except ConfigError as exc:
            click.echo(f"tabfleetd: {exc}", err=True)
            sys.exit(EXIT_CONFIG)
        assert lock.file is not None
        service = ServiceLink(detach_module.daemonize(pidfile, [lock.file], cfg.log_file))
    else:
        service = ServiceLink(Notifier.connect(service_env.notify_socket), service_env.watchdog_s)
        faulthandler.enable()  # a watchdog SIGABRT then prints every thread's stack to the journal
    if cfg.log_file:
        detach_module.log_to_file(cfg.log_file, cfg.log_level, cfg.log_max_mb, cfg.log_backups)
    else:
        log_to_stderr(cfg.log_level, cfg.log_format == "journal", "tabfleetd")
    for noisy in ("pyppeteer", "websockets", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("tabfleetd").info("config: %s", config_path or "none (defaults and the command line)")
    code = EXIT_SOFTWARE
    try:
        code = asyncio.run(Daemon(cfg, chromium_path, service, lock, read_config=read_config).run())
    except AlreadyRunning as exc:
        _report(str(exc), detach)
        code = EXIT_ALREADY_RUNNING
    except (ConfigError, StoreFormatError) as exc:
        _report(str(exc), detach)
        code = EXIT_CONFIG
    except StoreDamaged as exc:
        _report(str(exc), detach)
        code = EXIT_STORE_DAMAGED
    except Exception:
        logging.getLogger("tabfleetd").exception("tabfleetd failed")
    finally:
        if code != EXIT_OK:
            service.exit_status(code)  # the --detach command exits with it; systemd sees the real exit code anyway
        if detach and pidfile is not None:
            detach_module.remove_pidfile(pidfile, os.getpid())
    sys.exit(code)


def restore(cfg: config_module.Config) -> int:
    """--restore-store: with the state dir locked (no daemon running), put data.mdb.prev back and check it opens."""
    lock = StateLock(cfg.state_dir)
    path = cfg.state_dir / "store"
    try:
        lock.acquire()
        done = storefile.restore(path)
        Store(path, cfg.map_size_mb << 20).close()
    except AlreadyRunning as exc:
        click.echo(f"tabfleetd: {exc}", err=True)
        return EXIT_ALREADY_RUNNING
    except (StoreDamaged, OSError) as exc:
        click.echo(f"tabfleetd: cannot restore the store: {exc}", err=True)
        return EXIT_STORE_DAMAGED
    finally:
        lock.release()
    click.echo(f"tabfleetd: {done}; start the daemon again")
    return EXIT_OK


def config_file(option: Path | None, env: dict[str, str]) -> Path | None:
    """--config, else $TABFLEET_CONFIG (which must exist), else the unit's /etc/tabfleet/tabfleetd.toml if there is one."""
    if option is not None:
        return option
    if env.get("TABFLEET_CONFIG"):
        return Path(env["TABFLEET_CONFIG"])
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def _report(message: str, detached: bool) -> None:
    if detached:
        # stderr is the log pipe now, read by a thread that may not run again before exit: log directly.
        logging.getLogger("tabfleetd").error("%s", message)
    else:
        click.echo(f"tabfleetd: {message}", err=True)
