"""Unit tests for tabfleetd.settings.config: TOML loading, type checks, overrides and defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tabfleetd.settings import config as config_mod
from tabfleetd.settings.config import Config, describe, load
from tabfleetd.errors import ConfigError

HOME = Path("/home/someone")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tabfleetd.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_without_file_gives_defaults() -> None:
    """With no file and no overrides every key has its declared default."""
    cfg = load(None, {}, {}, HOME)
    assert cfg.workers == 2
    assert cfg.headless is True
    assert cfg.chromium_args == ()
    assert cfg.max_attempts == 5
    assert cfg.log_level == "info"
    assert cfg.socket is None


def test_load_toml_file(tmp_path: Path) -> None:
    """Keys in the TOML file are loaded with their declared types."""
    path = _write(tmp_path, """
workers = 4
headless = false
chromium = "/opt/chromium/chrome"
chromium_args = ["--lang=en", "--window-size=800,600"]
retry_base_s = 3
retry_cap_s = 60.5
socket = "/run/tf/ctl.sock"
socket_group = "tabfleet"
log_level = "debug"
demo_host = "0.0.0.0"
""")
    cfg = load(path, {}, {}, HOME)
    assert cfg.workers == 4
    assert cfg.headless is False
    assert cfg.chromium == "/opt/chromium/chrome"
    assert cfg.chromium_args == ("--lang=en", "--window-size=800,600")
    assert cfg.retry_base_s == 3.0 and isinstance(cfg.retry_base_s, float)
    assert cfg.retry_cap_s == 60.5
    assert cfg.socket == Path("/run/tf/ctl.sock")
    assert cfg.socket_group == "tabfleet"
    assert cfg.log_level == "debug"
    assert cfg.demo_host == "0.0.0.0"
    assert cfg.max_attempts == 5  # not in the file: default


def test_paths_expand_user(tmp_path: Path) -> None:
    """A ~ in a path key is expanded to the user's home."""
    path = _write(tmp_path, 'state_dir = "~/tf-state"\n')
    cfg = load(path, {}, {}, HOME)
    assert cfg.state_dir == Path("~/tf-state").expanduser()
    assert "~" not in str(cfg.state_dir)


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    """An unknown key is an error that names both the key and the file."""
    path = _write(tmp_path, "workers = 2\nworkerz = 3\n")
    with pytest.raises(ConfigError) as info:
        load(path, {}, {}, HOME)
    message = str(info.value)
    assert "workerz" in message
    assert str(path) in message


@pytest.mark.parametrize(
    "line, key",
    [
        ('workers = "four"', "workers"),
        ("workers = 2.5", "workers"),
        ("workers = true", "workers"),
        ('headless = "yes"', "headless"),
        ("headless = 1", "headless"),
        ('retry_base_s = "2"', "retry_base_s"),
        ("retry_cap_s = false", "retry_cap_s"),
        ('chromium_args = "--foo"', "chromium_args"),
        ("chromium_args = [1, 2]", "chromium_args"),
        ("chromium = 5", "chromium"),
        ("socket_group = 1000", "socket_group"),
        ("state_dir = 3", "state_dir"),
        ('state_dir = ""', "state_dir"),
        ('log_level = "verbose"', "log_level"),
        ("demo_host = 127", "demo_host"),
        ("max_attempts = -1", "max_attempts"),
        ("grace_s = -0.5", "grace_s"),
    ],
)
def test_wrong_type_names_the_key(tmp_path: Path, line: str, key: str) -> None:
    """A value of the wrong type or range is an error naming the key and the file."""
    path = _write(tmp_path, line + "\n")
    with pytest.raises(ConfigError) as info:
        load(path, {}, {}, HOME)
    assert f"'{key}'" in str(info.value)
    assert str(path) in str(info.value)


def test_invalid_toml_is_config_error(tmp_path: Path) -> None:
    """A file that is not TOML raises ConfigError naming the file."""
    path = _write(tmp_path, "workers = = 3\n")
    with pytest.raises(ConfigError) as info:
        load(path, {}, {}, HOME)
    assert str(path) in str(info.value)


def test_missing_file_is_config_error(tmp_path: Path) -> None:
    """A config path that does not exist raises ConfigError, not OSError."""
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load(missing, {}, {}, HOME)
    assert str(missing) in str(info.value)


def test_overrides_beat_file(tmp_path: Path) -> None:
    """Command-line overrides win over the file, and file keys not overridden stay."""
    path = _write(tmp_path, "workers = 4\nheadless = false\nmax_attempts = 9\n")
    cfg = load(path, {"workers": 7, "headless": True}, {}, HOME)
    assert cfg.workers == 7
    assert cfg.headless is True
    assert cfg.max_attempts == 9


def test_none_overrides_are_ignored(tmp_path: Path) -> None:
    """An override of None (option not given) leaves the file value or the default alone."""
    path = _write(tmp_path, "workers = 4\n")
    cfg = load(path, {"workers": None, "chromium": None, "state_dir": None, "log_level": None}, {}, HOME)
    assert cfg.workers == 4
    assert cfg.chromium is None
    assert cfg.log_level == "info"
    assert cfg.state_dir == HOME / ".local" / "state" / "tabfleet"


def test_override_types_are_checked() -> None:
    """A badly typed override is refused and blamed on the command line."""
    with pytest.raises(ConfigError) as info:
        load(None, {"workers": "3"}, {}, HOME)
    assert "command line" in str(info.value) and "'workers'" in str(info.value)


def test_state_dir_from_state_directory_env() -> None:
    """With no state_dir set, $STATE_DIRECTORY (its first entry) is used."""
    cfg = load(None, {}, {"STATE_DIRECTORY": "/var/lib/tabfleetd"}, HOME)
    assert cfg.state_dir == Path("/var/lib/tabfleetd")
    cfg = load(None, {}, {"STATE_DIRECTORY": "/var/lib/tabfleetd:/var/lib/other"}, HOME)
    assert cfg.state_dir == Path("/var/lib/tabfleetd")


def test_state_dir_default_under_home() -> None:
    """With nothing set the state lives in ~/.local/state/tabfleet of the given home."""
    assert load(None, {}, {}, HOME).state_dir == HOME / ".local" / "state" / "tabfleet"
    assert load(None, {}, {"STATE_DIRECTORY": ""}, HOME).state_dir == HOME / ".local" / "state" / "tabfleet"


def test_state_dir_file_and_override_beat_env(tmp_path: Path) -> None:
    """An explicit state_dir in the file or on the command line beats $STATE_DIRECTORY."""
    env = {"STATE_DIRECTORY": "/var/lib/tabfleetd"}
    path = _write(tmp_path, 'state_dir = "/srv/from-file"\n')
    assert load(path, {}, env, HOME).state_dir == Path("/srv/from-file")
    assert load(path, {"state_dir": "/srv/from-cli"}, env, HOME).state_dir == Path("/srv/from-cli")


@pytest.mark.parametrize("workers", [0, -1])
def test_workers_must_be_at_least_one(tmp_path: Path, workers: int) -> None:
    """workers below 1 is refused, whether from the file or the command line."""
    path = _write(tmp_path, f"workers = {workers}\n")
    with pytest.raises(ConfigError, match="workers"):
        load(path, {}, {}, HOME)
    with pytest.raises(ConfigError, match="at least 1"):
        load(None, {"workers": workers}, {}, HOME)


def test_workers_one_is_fine() -> None:
    """workers = 1 is the smallest accepted value."""
    assert load(None, {"workers": 1}, {}, HOME).workers == 1


def test_zero_allowed_for_other_counts() -> None:
    """Other integer keys accept zero (demo_port 0 means any free port)."""
    assert load(None, {"demo_port": 0}, {}, HOME).demo_port == 0


def test_describe_mentions_every_field() -> None:
    """describe() lists every key and its documentation line."""
    text = describe()
    for f in dataclasses.fields(Config):
        assert f.name in text or f.name == "worker_specs", f.name  # written as [[workers]] tables, not a key
        assert f.metadata["doc"] in text, f.name


def test_describe_is_loadable_toml_giving_defaults(tmp_path: Path) -> None:
    """describe() output is itself a valid config file that reproduces the defaults."""
    path = _write(tmp_path, describe() + "\n")
    assert load(path, {}, {}, HOME) == load(None, {}, {}, HOME)


def test_config_is_frozen() -> None:
    """A Config cannot be changed in place; replace() returns a new one."""
    cfg = load(None, {}, {}, HOME)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.workers = 9  # type: ignore[misc]
    other = cfg.replace(workers=9)
    assert other.workers == 9 and cfg.workers == 2


def test_fields_table_matches_dataclass() -> None:
    """The FIELDS lookup used for validation knows exactly the dataclass's keys."""
    assert set(config_mod.FIELDS) == {f.name for f in dataclasses.fields(Config)}


def test_site_vars_table_is_checked(tmp_path: Path) -> None:
    """site_vars is a table of start-URL variables; a bad name or value names the key."""
    cfg = load(_write(tmp_path, '[site_vars]\nhost = "10.0.0.5"\nport = "7860"\n'), {}, {}, HOME)
    assert dict(cfg.site_vars) == {"host": "10.0.0.5", "port": "7860"}
    with pytest.raises(ConfigError, match="key 'site_vars': variable 'port' = 'web' must be a TCP port"):
        load(_write(tmp_path, 'site_vars = { port = "web" }\n'), {}, {}, HOME)
    with pytest.raises(ConfigError, match="key 'site_vars' must be a table"):
        load(_write(tmp_path, 'site_vars = ["host"]\n'), {}, {}, HOME)


def test_bytes_in_flight_must_hold_the_largest_frame(tmp_path: Path) -> None:
    """max_bytes_in_flight below max_frame_bytes could never admit a big request: refused, naming both keys."""
    with pytest.raises(ConfigError, match="'max_bytes_in_flight' must be at least 'max_frame_bytes'"):
        load(None, {"max_frame_bytes": 2 << 20, "max_bytes_in_flight": 1 << 20}, {}, tmp_path)


def test_output_roots_default_and_checks(tmp_path: Path) -> None:
    """Without the key the roots are home, /tmp and /var/tmp; a set value must be absolute paths, at least one."""
    assert load(None, {}, {}, HOME).output_roots == (HOME, Path("/tmp"), Path("/var/tmp"))
    cfg = load(_write(tmp_path, 'output_roots = ["/srv/tabfleet/", "/data/x/../out"]\n'), {}, {}, HOME)
    assert cfg.output_roots == (Path("/srv/tabfleet"), Path("/data/out"))
    for value, problem in [('["srv"]', "absolute paths, not srv"), ("[]", "one or more"), ('"/srv"', "a list")]:
        with pytest.raises(ConfigError, match=f"key 'output_roots' must .*{problem}"):
            load(_write(tmp_path, f"output_roots = {value}\n"), {}, {}, HOME)


def test_task_caps_accept_zero_for_no_limit(tmp_path: Path) -> None:
    """max_tasks_per_job and max_queued_tasks default to 1M and 2M; 0 turns them off; negatives are refused."""
    assert (load(None, {}, {}, HOME).max_tasks_per_job, load(None, {}, {}, HOME).max_queued_tasks) == (1_000_000, 2_000_000)
    cfg = load(_write(tmp_path, "max_tasks_per_job = 0\nmax_queued_tasks = 0\n"), {}, {}, HOME)
    assert (cfg.max_tasks_per_job, cfg.max_queued_tasks) == (0, 0)
    with pytest.raises(ConfigError, match="max_queued_tasks"):
        load(_write(tmp_path, "max_queued_tasks = -1\n"), {}, {}, HOME)


def test_every_problem_is_reported_at_once_naming_the_file(tmp_path: Path) -> None:
    """Three mistakes give one ConfigError that names the file once and lists all three (with a near key's name)."""
    path = _write(tmp_path, 'workers = 0\nwrokers = 2\nlog_level = "loud"\nheadless = true\n')
    with pytest.raises(ConfigError) as info:
        load(path, {}, {}, HOME)
    message = str(info.value)
    assert message.startswith(f"{path}: 3 problems")
    assert message.count(str(path)) == 1
    assert "\n  key 'workers' must be at least 1" in message
    assert "\n  unknown key 'wrokers' (did you mean 'workers'?)" in message
    assert "\n  key 'log_level' must be one of debug, error, info, warning" in message


def test_describe_pins_nothing() -> None:
    """describe() is a commented example: no key is set, each default shows as a comment, reloadable keys say so."""
    text = describe()
    assert [line for line in text.splitlines() if line and not line.startswith("#")] == []
    assert "# workers = 2" in text and "# log_format = \"auto\"" in text
    assert "worker processes, each with its own Chromium (reload)" in text


def test_log_format_is_checked() -> None:
    """log_format takes auto, journal or text."""
    assert load(None, {"log_format": "journal"}, {}, HOME).log_format == "journal"
    with pytest.raises(ConfigError, match="'log_format' must be one of auto, journal, text"):
        load(None, {"log_format": "syslog"}, {}, HOME)
