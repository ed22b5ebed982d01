"""The plumbing every tabfleetctl command shares: the context, exit codes, error reports, --json and output helpers."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from .client import (BUSY_WAIT_S, Client, DaemonBusy, DaemonError, DaemonNotRunning, NoPermission, UnsafeSocket,
                     default_socket, socket_places)
from .terminal import printable

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


def table(headers: list[str], rows: list[list[Any]], flex: dict[str, int] | None = None) -> None:
    """Print rows under headers with rich; the `flex` columns (header -> least width) are cut with an ellipsis to fit."""
    from rich.text import Text

    from .tables import Column, fit

    columns = [Column(h, [Text(printable(r[i])) for r in rows], flex=(flex or {}).get(h, 0)) for i, h in enumerate(headers)]
    show(lambda width: fit(None, columns, width))
