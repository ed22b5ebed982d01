"""The daemon as an operator runs it, with real processes: where the socket is found (and which places were
looked at), the default config file, every config error at once, logs for the journal, and a reload (SIGHUP)
that changes the fleet and pacing without dropping work."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tabfleetd import protocol

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def ctl_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TABFLEET_SOCKET", "RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR")}
    return env | extra


def test_ctl_finds_the_socket_without_being_told_and_names_where_it_looked(make_daemon: Any, short_tmp: Path) -> None:
    """With no --socket or $TABFLEET_SOCKET, tabfleetctl finds a daemon in $XDG_RUNTIME_DIR/tabfleet; with none
    running, its message lists every place it looked, the system service's /run/tabfleet included."""
    xdg = short_tmp / "xdg"
    own = protocol.socket_candidates(None, {"XDG_RUNTIME_DIR": str(xdg)}, os.getuid())
    if any(os.path.lexists(p) for p in own[1:]):
        pytest.skip(f"a socket already exists at one of {own[1:]} on this machine, so 'none running' cannot be shown")
    argv = [sys.executable, "-m", "tabfleetctl", "ping"]
    gone = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=ctl_env(XDG_RUNTIME_DIR=str(xdg)))
    assert gone.returncode == 3
    assert f"looked for its socket at {xdg}/tabfleet/tabfleetd.sock, /tmp/tabfleet-{os.getuid()}/tabfleetd.sock, " \
           "/run/tabfleet/tabfleetd.sock" in gone.stderr, gone.stderr
    daemon = make_daemon(workers=1, start=False)
    daemon.socket = xdg / "tabfleet" / "tabfleetd.sock"
    daemon.start()
    found = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=ctl_env(XDG_RUNTIME_DIR=str(xdg)))
    assert found.returncode == 0 and str(daemon.socket) in found.stdout, found.stderr


def test_the_config_file_comes_from_tabfleet_config(make_daemon: Any, monkeypatch: pytest.MonkeyPatch, short_tmp: Path) -> None:
    """Without --config, tabfleetd reads $TABFLEET_CONFIG (the unit's /etc/tabfleet/tabfleetd.toml is tested under systemd)."""
    config = short_tmp / "from-env.toml"
    config.write_text("workers = 3\nstagger_s = 0.0\n")
    monkeypatch.setenv("TABFLEET_CONFIG", str(config))
    daemon = make_daemon(start=False)
    daemon.argv = lambda: [sys.executable, "-m", "tabfleetd", "--socket", str(daemon.socket),  # type: ignore[method-assign]
                           "--state-dir", str(daemon.state)]
    daemon.start()
    assert len(daemon.call("workers")["workers"]) == 3
    assert f"config: {config}" in daemon.log_text()


def test_every_config_problem_is_reported_at_once(short_tmp: Path) -> None:
    """A config with three mistakes stops tabfleetd with exit 78 and one message naming the file and all three."""
    bad = short_tmp / "bad.toml"
    bad.write_text('workers = 0\nwrokers = 2\nlog_level = "loud"\nmemory_probe = "system"\n')
    result = subprocess.run([sys.executable, "-m", "tabfleetd", "--config", str(bad), "--socket", str(short_tmp / "s"),
                             "--state-dir", str(short_tmp / "st")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 78
    assert f"{bad}: 3 problems" in result.stderr
    for words in ("key 'workers' must be at least 1", "unknown key 'wrokers' (did you mean 'workers'?)",
                  "key 'log_level' must be one of debug, error, info, warning"):
        assert words in result.stderr, (words, result.stderr)


def test_help_config_is_an_example_that_pins_nothing() -> None:
    """--help-config prints every key commented out with its default: a copy of it changes nothing until edited."""
    text = subprocess.run([sys.executable, "-m", "tabfleetd", "--help-config"], capture_output=True, text=True,
                          timeout=60, check=True).stdout
    assert [line for line in text.splitlines() if line.strip() and not line.startswith("#")] == []
    assert "# workers = 2" in text and "# socket = ..." in text and "(reload)" in text


def start_with_stderr(daemon: Any, env: dict[str, str], journal: bool) -> subprocess.Popen[bytes]:
    """Start the daemon without --workers (the file decides), its stderr a file that may stand for the journal."""
    log = open(daemon.log, "ab")
    if journal:
        st = os.fstat(log.fileno())
        env = env | {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    daemon.proc = subprocess.Popen([sys.executable, "-m", "tabfleetd", "--socket", str(daemon.socket), "--state-dir",
                                    str(daemon.state), "--config", str(daemon.config_path)],
                                   stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
    log.close()
    daemon.wait_for(lambda: daemon.socket.exists(), 60, "the socket")
    daemon.wait_for(lambda: ping(daemon), 60, "an answer")
    return daemon.proc


def ping(daemon: Any) -> bool:
    try:
        return bool(daemon.call("ping")["pong"])
    except Exception:
        return False


def test_logs_for_the_journal_carry_priorities_and_no_timestamps(make_daemon: Any) -> None:
    """With stderr as the journal's stream ($JOURNAL_STREAM), lines start with their syslog priority (<6> info,
    <7> debug) and have no timestamp of their own; workers log the same way. Elsewhere lines keep timestamps."""
    journal = make_daemon(config={"workers": 1, "log_level": "debug"}, start=False, name="journal")
    start_with_stderr(journal, dict(os.environ), journal=True)
    journal.wait_job(journal.submit(["a journalled kite"], "latency=0.1"))
    journal.proc.send_signal(signal.SIGHUP)  # a reload with nothing changed: an info line
    journal.wait_for(lambda: "config reloaded: nothing changed" in journal.log_text(), 30, "the reload")
    journal.stop()
    lines = journal.log.read_text().splitlines()
    assert "<6>tabfleetd tabfleetd.service.app: tabfleetd ready: 1 workers, state in " + str(journal.state) in lines
    assert any(line.startswith("<7>worker-1 ") for line in lines), lines  # a worker's own debug line
    assert all(re.match(r"<[2-7]>", line) for line in lines if line), [line for line in lines if not re.match(r"<\d>", line)]
    assert not any(re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", line) for line in lines)
    text = make_daemon(workers=1, name="text")
    assert re.search(r"(?m)^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ tabfleetd INFO tabfleetd.service.app: tabfleetd ready", text.log_text())


def test_sighup_reloads_the_fleet_and_pacing_without_dropping_work(make_daemon: Any) -> None:
    """SIGHUP mid-job: the new worker count and site rate apply, a restart-only key is named as such, nothing is
    retried or lost; a broken file on the next SIGHUP changes nothing and says why."""
    daemon = make_daemon(config={"workers": 1, "retry_base_s": 0.1}, start=False)
    start_with_stderr(daemon, dict(os.environ), journal=False)
    job = daemon.submit([f"a reloaded moth {i}" for i in range(10)], "latency=1")
    daemon.wait_for(lambda: daemon.call("status", {"job": job})["jobs"][0]["done"] >= 1, 60, "a first image")
    daemon.config_path.write_text("workers = 2\nstagger_s = 0.0\nretry_base_s = 0.1\nsite_rate_per_min = 600.0\n"
                                  "demo_port = 1\n")
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for(lambda: len(daemon.call("workers")["workers"]) == 2, 30, "the second worker")
    assert daemon.call("status")["limits"]["sites"]["demo"]["rate_per_min"] == 600.0
    status = daemon.wait_job(job, timeout=120)
    assert (status["done"], status["failed"]) == (10, 0)
    assert all(t["attempts"] == 1 for t in daemon.call("tasks", {"job": job})["tasks"]), "nothing was retried"
    assert {t["worker"] for t in daemon.call("tasks", {"job": job})["tasks"]} == {1, 2}
    log = daemon.log_text()
    assert "config reloaded: workers = 2 (was 1)" in log and "config reloaded: site_rate_per_min = 600.0 (was 0.0)" in log
    assert "config key demo_port changed to 1; it takes effect when tabfleetd next starts" in log
    daemon.config_path.write_text("workers = 0\n")
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for(lambda: "config not reloaded, the running one stays" in daemon.log_text(), 30, "the refusal")
    assert "key 'workers' must be at least 1" in daemon.log_text()
    assert len(daemon.call("workers")["workers"]) == 2 and daemon.proc.poll() is None
