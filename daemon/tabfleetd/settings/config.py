"""The daemon's configuration: loaded once into a frozen dataclass and passed down.

A TOML file sets any key below (tabfleetd's cli.py decides which file:
--config, $TABFLEET_CONFIG or /etc/tabfleet/tabfleetd.toml); command-line
options override it.  ``tabfleetd --help-config`` prints every key with its
default and meaning as a commented example.  SIGHUP reloads the RELOADABLE
keys without dropping work; the others take effect at the next start.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..sites.profiles import var_problem
from ..sites.sitepolicy import parse_hosts, parse_networks
from .workerspec import WorkerSpec, parse_specs, spec_for


def _key(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class Config:
    socket: Path = _key(None, "control socket path (default: $TABFLEET_SOCKET, $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR/tabfleet, /tmp/tabfleet-$UID)")
    socket_group: str | None = _key(None, "group allowed to use the socket (a name or a gid); the socket becomes mode 0660, "
                                          "and a socket directory the daemon makes 0750 with that group")
    state_dir: Path = _key(None, "LMDB store, browser profiles and logs (default: $STATE_DIRECTORY, else ~/.local/state/tabfleet)")
    workers: int = _key(2, "number of worker processes, each with its own Chromium")
    chromium: str | None = _key(None, "Chromium executable (default: chromium, chromium-browser or google-chrome on PATH)")
    headless: bool = _key(True, "run Chromium headless")
    chromium_args: tuple[str, ...] = _key((), "extra Chromium command-line arguments")
    display: str | None = _key(None, "X display for headed browsers (a site profile with headless = false, and tabfleetctl login) "
                                     "(default: $DISPLAY; without one, a worker starts its own Xvfb)")
    site_hosts: tuple[str, ...] = _key((), "hosts a site profile may send the browsers to (start_url, login.probe_url), besides the "
                                           "built-in profiles' hosts and the demo site; *.example.com: its subdomains; *: any host")
    site_networks: tuple[str, ...] = _key((), "loopback, private or link-local networks a site profile may reach, e.g. "
                                              "10.0.0.0/8 or 127.0.0.1/32; such addresses are refused otherwise")
    max_frame_bytes: int = _key(64 * 1024 * 1024, "largest control message accepted")
    max_connections: int = _key(128, "control connections served at once; when full, the oldest connection that has not said "
                                     "hello, else the oldest idle one, is dropped, else the new one is refused as busy")
    max_connections_per_uid: int = _key(32, "control connections one user may hold (root and the daemon's user: no cap); "
                                            "beyond it that user's own oldest idle connection is dropped")
    reserved_connections: int = _key(8, "of max_connections, kept for root and the daemon's user (at most half of them)")
    hello_timeout_s: float = _key(5.0, "a new control connection must say hello within this")
    read_timeout_s: float = _key(30.0, "a control connection idle this long between requests, or not reading a reply, is closed")
    body_min_rate_kib_s: float = _key(1024.0, "a request must arrive at this rate at least (after a 5 s start); a slower client "
                                              "is dropped")
    max_bytes_in_flight: int = _key(128 * 1024 * 1024, "request bytes held at once across control connections (one user: half, "
                                                       "at least max_frame_bytes); a request beyond it is refused as busy")
    shared_jobs: bool = _key(False, "let every socket client pause, resume and cancel any job (default: only its submitter, "
                                    "root and the daemon's user)")
    shared_fleet: bool = _key(False, "let every socket client stop the daemon, resize the fleet, restart workers and open "
                                     "login windows (default: only root and the daemon's user)")
    max_prompt_chars: int = _key(4000, "longest prompt accepted at submit")
    max_tasks_per_job: int = _key(1_000_000, "most prompts one job may hold; a bigger file is refused at submit (0: no limit)")
    max_queued_tasks: int = _key(2_000_000, "most unfinished tasks of all jobs together; a submit beyond it is refused (0: no limit)")
    output_roots: tuple[Path, ...] = _key(None, "directories that --out must lie in; symlinks below them are never followed, "
                                                "and the state dir is always refused (default: the daemon user's home, /tmp and /var/tmp)")
    max_attempts: int = _key(5, "attempts per task before it ends failed")
    retry_base_s: float = _key(2.0, "first retry delay; doubles each attempt, with full jitter")
    retry_cap_s: float = _key(120.0, "longest retry delay")
    task_deadline_s: float = _key(300.0, "a task running longer is abandoned and retried")
    cdp_timeout_s: float = _key(30.0, "deadline of a single browser (CDP) call")
    frozen_page_s: float = _key(5.0, "a page whose renderer does not answer a liveness probe for this long is frozen: "
                                     "its page is closed at once (the browser ends its renderer) and the task retried")
    min_free_mb: float = _key(64.0, "a job waits (status says why) while its output directory's filesystem has less free space")
    held_images_mb: float = _key(512.0, "images made while their output could not take them are held in memory up to this much")
    browser_start_timeout_s: float = _key(30.0, "deadline for Chromium to start and accept a connection")
    heartbeat_interval_s: float = _key(1.0, "how often a worker reports that it is alive")
    heartbeat_timeout_s: float = _key(30.0, "a worker silent this long is killed and restarted")
    restart_delay_s: float = _key(1.0, "pause before a dead worker is started again")
    stagger_s: float = _key(2.0, "pause between starting one worker and the next")
    rotate_after_tasks: int = _key(50, "a worker restarts its Chromium after this many tasks (0: never)")
    profile_max_mb: float = _key(200.0, "a worker's browser profile over this many MiB is trimmed at the next browser "
                                        "restart, which the worker then brings forward to between tasks; only what holds the "
                                        "session is kept (0: no cap; caches and history are trimmed at every restart anyway)")
    site_rate_per_min: float = _key(0.0, "prompts per minute sent to one site by all workers together (0: no limit until the site says so)")
    account_rate_per_min: float = _key(0.0, "prompts per minute sent by one account, i.e. one worker's profile (0: no limit)")
    memory_probe: str = _key("system", "where memory use is read: system (cgroup limit, else the machine) or file:PATH holding 'USED_MB LIMIT_MB'")
    memory_high: float = _key(0.8, "above this share of the memory limit no new worker starts and new tasks wait")
    memory_critical: float = _key(0.9, "above this share the largest worker is recycled and the fleet shrinks by one")
    memory_low: float = _key(0.7, "below this share the fleet grows back towards its size")
    memory_check_s: float = _key(2.0, "how often the memory governor reads memory use")
    grace_s: float = _key(10.0, "on shutdown, time given to tasks in flight before they go back to pending")
    map_size_mb: int = _key(64, "initial LMDB map size; it grows when full")
    backup_interval_h: float = _key(24.0, "keep a compacted copy of the store (store/data.mdb.prev) no older than this, to restore a damaged store from (0: only at compaction)")
    job_retention_h: float = _key(168.0, "finished jobs leave the store this many hours after they end (their images stay; 0: kept forever)")
    events_max: int = _key(100_000, "events kept in the store, newest first, for `tabfleetctl events` across restarts (0: none, "
                                    "only the last 2000 in memory)")
    events_max_age_h: float = _key(168.0, "stored events older than this many hours are pruned (0: no age limit); a job's "
                                          "events also leave with the job (job_retention_h)")
    housekeeping_interval_s: float = _key(600.0, "how often finished jobs are pruned, stale LMDB readers cleared and the store compacted")
    compact_free_ratio: float = _key(0.5, "compact the store once free pages are at least this share of its file (0: never)")
    compact_min_mb: int = _key(16, "never compact a store file smaller than this")
    site_vars: tuple[tuple[str, str], ...] = _key((), "start-URL variables for every job, e.g. { host = \"10.0.0.5\", port = \"7860\" } "
                                                       "(a job's --var wins; see the site profile key 'vars')")
    demo_host: str = _key("127.0.0.1", "address of the bundled demo site")
    demo_port: int = _key(0, "port of the bundled demo site (0: any free port)")
    dashboard_host: str = _key("127.0.0.1", "address of the read-only web dashboard (keep it on loopback: it speaks plain HTTP)")
    dashboard_port: int = _key(0, "port of the read-only web dashboard (0: no dashboard)")
    metrics_host: str = _key("127.0.0.1", "address of the Prometheus metrics endpoint")
    metrics_port: int = _key(0, "port of the Prometheus metrics endpoint, /metrics (0: none; may equal dashboard_port)")
    web_token_file: Path = _key(None, "file holding the token the dashboard and metrics require, not readable by others "
                                      "(default: STATE_DIR/web-token, made on first start)")
    web_max_connections: int = _key(256, "HTTP connections to the dashboard and metrics at once; beyond it the oldest is closed")
    web_idle_timeout_s: float = _key(10.0, "an HTTP connection must send a request within this of connecting or of its last "
                                           "reply, or it is closed")
    trace_memory_frames: int = _key(0, "trace the daemon's allocations with tracemalloc, keeping this many frames each "
                                       "(0: off; 1 to 100; costs memory and CPU); the memory_growth op then lists the sites that grew")
    log_level: str = _key("info", "debug, info, warning or error")
    log_format: str = _key("auto", "text (with timestamps), journal (syslog priority prefixes for journald, no timestamps) "
                                   "or auto (journal when stderr is the journal, $JOURNAL_STREAM)")
    log_file: Path = _key(None, "log to this file, rotated (default: stderr; with --detach, STATE_DIR/logs/tabfleetd.log)")
    log_max_mb: float = _key(10.0, "rotate the log file at this size in MiB (0: never)")
    log_backups: int = _key(5, "rotated log files kept")
    # Set by `[[workers]]` tables in place of the `workers` count (workerspec.py); not a key of its own.
    worker_specs: tuple[WorkerSpec, ...] = _key((), "[[workers]] tables, instead of a count, bind each worker to an account "
                                                    "and a browser: account = \"NAME\" (default worker-N), browser = \"local\" "
                                                    "or \"remote\", endpoint = \"ws://, wss://, http(s)://host:port\", "
                                                    "headers = { Authorization = \"...\" }")

    def worker_spec(self, wid: int) -> WorkerSpec:
        """Worker `wid`'s account and browser (a local worker with account worker-N beyond the [[workers]] tables)."""
        return spec_for(self.worker_specs, wid)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def default_output_roots(home: Path) -> tuple[Path, ...]:
    """Where a daemon run by a person may write: that person's home and the shared temp dirs."""
    return (Path(os.path.normpath(home.absolute())), Path("/tmp"), Path("/var/tmp"))

MAX_TRACE_FRAMES = 100
_PATHS = {"socket", "state_dir", "log_file", "web_token_file"}
_LOG_LEVELS = {"debug", "info", "warning", "error"}
_LOG_FORMATS = {"auto", "journal", "text"}
# Keys a reload (SIGHUP, systemctl reload) applies to the running daemon; the rest need a restart.
RELOADABLE = frozenset({"workers", "site_rate_per_min", "account_rate_per_min", "retry_base_s", "retry_cap_s",
                        "max_attempts", "max_prompt_chars", "task_deadline_s", "log_level"})
_AT_LEAST_ONE = {"workers", "max_attempts", "max_connections", "max_frame_bytes", "max_prompt_chars", "map_size_mb",
                 "max_connections_per_uid", "max_bytes_in_flight", "web_max_connections"}
_POSITIVE = {"heartbeat_interval_s", "heartbeat_timeout_s", "task_deadline_s", "cdp_timeout_s", "browser_start_timeout_s", "read_timeout_s",
             "housekeeping_interval_s", "frozen_page_s", "hello_timeout_s", "body_min_rate_kib_s", "web_idle_timeout_s"}


def describe() -> str:
    """A commented example config: every key with its meaning, and its default as a comment, so copying it pins nothing."""
    lines = ["# tabfleetd config (TOML). Every key is shown with its default, commented out: uncomment what you change.",
             "# tabfleetd reads --config FILE, else $TABFLEET_CONFIG, else /etc/tabfleet/tabfleetd.toml when it exists.",
             "# Keys marked (reload) take effect on SIGHUP (systemctl reload tabfleetd); the others at the next start.",
             ""]
    for f in dataclasses.fields(Config):
        lines.append(f"# {f.metadata['doc']}{' (reload)' if f.name in RELOADABLE else ''}")
        default = f.default
        if default is None:
            lines.append(f"# {f.name} = ...")
        elif f.name == "worker_specs":
            lines.append('# [[workers]]\n# account = "worker-1"\n# browser = "local"')
        elif f.name == "site_vars":
            lines.append(f"# {f.name} = {{}}")
        else:
            lines.append(f"# {f.name} = {_toml_value(default)}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


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
    if name == "site_vars":
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a table of names and values, e.g. {{ host = \"10.0.0.5\" }}")
        for var, var_value in value.items():
            problem = var_problem(var, var_value)
            if problem:
                raise ConfigError(f"{where}: {problem}")
        return tuple(sorted(value.items()))
    if name == "output_roots":
        if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, (str, Path)) and str(v) for v in value):
            raise ConfigError(f"{where} must be a list of one or more directory paths")
        roots = [Path(v).expanduser() for v in value]
        relative = [str(r) for r in roots if not r.is_absolute()]
        if relative:
            raise ConfigError(f"{where} must hold absolute paths, not {', '.join(relative)}")
        return tuple(Path(os.path.normpath(r)) for r in roots)
    if name in {"socket_group", "chromium", "display"}:
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
        if name == "trace_memory_frames" and value > MAX_TRACE_FRAMES:
            raise ConfigError(f"{where} must be 0 (off) to {MAX_TRACE_FRAMES}")
        if name.endswith("_port") and value > 65535:
            raise ConfigError(f"{where} must be a TCP port (0 to 65535)")
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
    for key, allowed in (("log_level", _LOG_LEVELS), ("log_format", _LOG_FORMATS)):
        if name == key and value not in allowed:
            raise ConfigError(f"{where} must be one of {', '.join(sorted(allowed))}")
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string")
    return value


def load(path: Path | None, overrides: Mapping[str, Any], env: Mapping[str, str], home: Path) -> Config:
    """Build the Config from a TOML file, then command-line overrides, then defaults.

    Every problem is found before any is reported: one ConfigError names the file and lists them all.
    """
    values: dict[str, Any] = {}
    problems: list[str] = []
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        for name, value in raw.items():
            if name == "workers" and isinstance(value, list):
                try:
                    values["worker_specs"] = parse_specs(value, str(path))
                    values["workers"] = len(values["worker_specs"])
                except ConfigError as exc:
                    problems.append(str(exc).removeprefix(f"{path}: "))
                continue
            if name not in FIELDS or name == "worker_specs":
                near = difflib.get_close_matches(name, [f for f in FIELDS if f != "worker_specs"], n=1)
                problems.append(f"unknown key '{name}'" + (f" (did you mean '{near[0]}'?)" if near else ""))
                continue
            try:
                values[name] = _coerce(name, value, str(path))
            except ConfigError as exc:
                problems.append(str(exc).removeprefix(f"{path}: "))
    for name, value in overrides.items():
        if value is not None:
            try:
                values[name] = _coerce(name, value, "command line")
            except ConfigError as exc:
                problems.append(str(exc))
    if values.get("state_dir") is None:
        values["state_dir"] = Path(env["STATE_DIRECTORY"].split(":")[0]) if env.get("STATE_DIRECTORY") else home / ".local" / "state" / "tabfleet"
    if values.get("output_roots") is None:
        values["output_roots"] = default_output_roots(home)
    if not problems:
        config = Config(**values)
        try:
            check_memory_marks(config)
            check_frame_budget(config)
            check_site_keys(config)
            return config
        except ConfigError as exc:
            problems.append(str(exc))
    source = f"{path}: " if path is not None else ""
    if len(problems) == 1:
        raise ConfigError(f"{source}{problems[0]}")
    raise ConfigError(f"{source}{len(problems)} problems (see tabfleetd --help-config):\n  " + "\n  ".join(problems))


def check_frame_budget(config: Config) -> None:
    """The bytes in flight must fit the largest frame."""
    if config.max_bytes_in_flight < config.max_frame_bytes:
        raise ConfigError("key 'max_bytes_in_flight' must be at least 'max_frame_bytes'")


def check_site_keys(config: Config) -> None:
    """site_hosts and site_networks must parse, so that a typo stops the daemon rather than loosening the policy."""
    parse_hosts(config.site_hosts)
    parse_networks(config.site_networks)


def check_memory_marks(config: Config) -> None:
    """The governor's marks must be shares of the limit in the order low < high <= critical."""
    for name in ("memory_low", "memory_high", "memory_critical"):
        if not 0 < getattr(config, name) <= 1:
            raise ConfigError(f"key '{name}' must be a share of the limit between 0 and 1")
    if not config.memory_low < config.memory_high <= config.memory_critical:
        raise ConfigError("keys 'memory_low' < 'memory_high' <= 'memory_critical' must hold")
    if config.memory_probe != "system" and not config.memory_probe.startswith("file:"):
        raise ConfigError("key 'memory_probe' must be 'system' or 'file:PATH'")
