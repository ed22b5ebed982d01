"""The daemon's configuration: loaded once into a frozen dataclass and passed down.

A TOML file (--config) sets any key below; command-line options override it.
``tabfleetd --help-config`` prints every key with its default and meaning.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError


def _key(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class Config:
    socket: Path = _key(None, "control socket path (default: $TABFLEET_SOCKET, $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR/tabfleet, /tmp/tabfleet-$UID)")
    socket_group: str | None = _key(None, "group allowed to use the socket; the socket becomes mode 0660")
    state_dir: Path = _key(None, "LMDB store, browser profiles and logs (default: $STATE_DIRECTORY, else ~/.local/state/tabfleet)")
    workers: int = _key(2, "number of worker processes, each with its own Chromium")
    chromium: str | None = _key(None, "Chromium executable (default: chromium, chromium-browser or google-chrome on PATH)")
    headless: bool = _key(True, "run Chromium headless")
    chromium_args: tuple[str, ...] = _key((), "extra Chromium command-line arguments")
    max_frame_bytes: int = _key(64 * 1024 * 1024, "largest control message accepted")
    max_connections: int = _key(64, "control connections served at once; more are closed")
    read_timeout_s: float = _key(30.0, "a control connection that sends nothing for this long is closed")
    max_prompt_chars: int = _key(4000, "longest prompt accepted at submit")
    max_attempts: int = _key(5, "attempts per task before it ends failed")
    retry_base_s: float = _key(2.0, "first retry delay; doubles each attempt, with full jitter")
    retry_cap_s: float = _key(120.0, "longest retry delay")
    task_deadline_s: float = _key(300.0, "a task running longer is abandoned and retried")
    cdp_timeout_s: float = _key(30.0, "deadline of a single browser (CDP) call")
    browser_start_timeout_s: float = _key(30.0, "deadline for Chromium to start and accept a connection")
    heartbeat_interval_s: float = _key(1.0, "how often a worker reports that it is alive")
    heartbeat_timeout_s: float = _key(30.0, "a worker silent this long is killed and restarted")
    restart_delay_s: float = _key(1.0, "pause before a dead worker is started again")
    grace_s: float = _key(10.0, "on shutdown, time given to tasks in flight before they go back to pending")
    map_size_mb: int = _key(64, "initial LMDB map size; it grows when full")
    demo_host: str = _key("127.0.0.1", "address of the bundled demo site")
    demo_port: int = _key(0, "port of the bundled demo site (0: any free port)")
    log_level: str = _key("info", "debug, info, warning or error")

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_PATHS = {"socket", "state_dir"}
_LOG_LEVELS = {"debug", "info", "warning", "error"}
_AT_LEAST_ONE = {"workers", "max_attempts", "max_connections", "max_frame_bytes", "max_prompt_chars", "map_size_mb"}
_POSITIVE = {"heartbeat_interval_s", "heartbeat_timeout_s", "task_deadline_s", "cdp_timeout_s", "browser_start_timeout_s", "read_timeout_s"}


def describe() -> str:
    """Every key, its default and its meaning, as TOML comments and lines."""
    lines = []
    for f in dataclasses.fields(Config):
        lines.append(f"# {f.metadata['doc']}")
        default = f.default
        if default is None:
            lines.append(f"# {f.name} = ...")
        else:
            lines.append(f"{f.name} = {_toml_value(default)}")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return str(value)


def _coerce(name: str, value: Any, source: str) -> Any:
    """Check one key's value against its declared type."""
    default = FIELDS[name].default
    where = f"{source}: key '{name}'"
    if name in _PATHS:
        if not isinstance(value, (str, Path)) or not str(value):
            raise ConfigError(f"{where} must be a path string")
        return Path(value).expanduser()
    if name in {"socket_group", "chromium"}:
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{where} must be a string")
        return value or None
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer")
        if value < 0 or (name in _AT_LEAST_ONE and value < 1):
            raise ConfigError(f"{where} must be {'at least 1' if name in _AT_LEAST_ONE else 'zero or more'}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{where} must be a number of zero or more")
        if name in _POSITIVE and value == 0:
            raise ConfigError(f"{where} must be more than zero")
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings")
        return tuple(value)
    if name == "log_level":
        if value not in _LOG_LEVELS:
            raise ConfigError(f"{where} must be one of {', '.join(sorted(_LOG_LEVELS))}")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string")
    return value


def load(path: Path | None, overrides: Mapping[str, Any], env: Mapping[str, str], home: Path) -> Config:
    """Build the Config from a TOML file, then command-line overrides, then defaults."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        for name, value in raw.items():
            if name not in FIELDS:
                raise ConfigError(f"{path}: unknown key '{name}' (see tabfleetd --help-config)")
            values[name] = _coerce(name, value, str(path))
    for name, value in overrides.items():
        if value is not None:
            values[name] = _coerce(name, value, "command line")
    if values.get("state_dir") is None:
        values["state_dir"] = Path(env["STATE_DIRECTORY"].split(":")[0]) if env.get("STATE_DIRECTORY") else home / ".local" / "state" / "tabfleet"
    return Config(**values)
