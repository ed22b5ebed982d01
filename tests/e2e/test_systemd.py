"""The systemd unit: `systemd-analyze verify`, and a real run under a throwaway systemd (../shared/tools/systemd-sandbox).

The sandbox boots systemd as PID 1 in its own pid and mount namespaces over a
copy-on-write view of this machine, so the unit is installed and run for real
without touching the machine.  Never boot systemd any other way here: its
boot-time cleanup empties /tmp.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "tabfleetd.service"
SYSUSERS = REPO / "systemd" / "tabfleet.sysusers"
SERVICE_CONFIG = REPO / "systemd" / "tabfleetd.toml"
SANDBOX = REPO.parent / "shared" / "tools" / "systemd-sandbox"
BIN = Path(sys.executable).parent  # this venv's tabfleetd and tabfleetctl stand in for /opt/tabfleet/bin
SOCKET = "/run/tabfleet/tabfleetd.sock"


def unit_for_this_machine() -> str:
    """The shipped unit with /opt/tabfleet/bin pointing at this venv."""
    return UNIT.read_text().replace("/opt/tabfleet/bin/", f"{BIN}/")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit (with ExecStart pointing at an installed tabfleetd)."""
    unit = tmp_path / "tabfleetd.service"
    unit.write_text(unit_for_this_machine())
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "tabfleetd.service" not in result.stderr, result.stderr


class Sandbox:
    """A booted throwaway systemd; commands run inside its namespaces."""

    def __init__(self, pid: str) -> None:
        self.pid = pid

    def run(self, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(SANDBOX), "exec", self.pid, *argv], capture_output=True, text=True, timeout=timeout)
        if check:
            assert result.returncode == 0, f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        return result

    def put(self, path: str, text: str) -> None:
        subprocess.run([str(SANDBOX), "put", self.pid, path], input=text, text=True, check=True, timeout=30)

    def show(self, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", "tabfleetd", *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def pids(self, *pgrep_args: str) -> set[int]:
        out = self.run("pgrep", *pgrep_args, check=False).stdout
        return {int(p) for p in out.split()}

    def ctl(self, *args: str, cwd: str = "/srv/tabfleet", timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """tabfleetctl as an operator runs it: nothing exported, so it must find the service's socket itself."""
        return self.run("sh", "-c", f'cd {cwd} && unset TABFLEET_SOCKET RUNTIME_DIRECTORY && exec "$@"', "ctl",
                        f"{BIN}/tabfleetctl", *args, check=False, timeout=timeout)

    def workers(self) -> int:
        return len(json.loads(self.ctl("workers", "--json").stdout)["workers"])

    def journal(self) -> str:
        return self.run("journalctl", "-u", "tabfleetd", "--no-pager", "-o", "cat", check=False).stdout


def why_no_sandbox() -> str | None:
    if not SANDBOX.exists():
        return f"{SANDBOX} is missing"
    if os.geteuid() != 0:
        return "systemd-sandbox needs root"
    for tool in ("unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"systemd-sandbox needs {tool}"
    if not Path("/lib/systemd/systemd").exists():
        return "no /lib/systemd/systemd to boot"
    return None


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A throwaway systemd as PID 1, stopped (and its cgroups removed) after the test."""
    reason = why_no_sandbox()
    if reason is None:
        booted = subprocess.run([str(SANDBOX), "start"], capture_output=True, text=True, timeout=90)
        if booted.returncode != 0:
            reason = f"the systemd sandbox cannot boot here: {booted.stderr.strip() or booted.returncode}"
    if reason is not None:
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    box = Sandbox(booted.stdout.strip())
    try:
        yield box
    finally:
        subprocess.run([str(SANDBOX), "stop", box.pid], capture_output=True, timeout=60)


def wait_for(what: str, check: object, timeout: float = 30, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def hidden_from_the_service() -> list[str]:
    """Drop-in lines that show the service this checkout and venv where the unit's PrivateTmp would hide them.

    A real deployment installs into /opt/tabfleet; a test run may live anywhere, /tmp included, and the
    unit's PrivateTmp=yes gives the service an empty /tmp of its own. Binding the checkout and the venv
    read-only into it keeps every hardening option as shipped.
    """
    needed = {Path(sys.prefix), REPO, Path(os.path.realpath(sys.executable)).parent}
    return [f"BindReadOnlyPaths={path}" for path in sorted(needed)
            if any(path.is_relative_to(hidden) for hidden in (Path("/tmp"), Path("/var/tmp")))]


def install(box: Sandbox) -> str:
    """Install the shipped unit, user and config the way the README says, adapted to this machine."""
    box.put("/etc/sysusers.d/tabfleet.conf", SYSUSERS.read_text())
    box.run("systemd-sysusers")
    box.put("/etc/systemd/system/tabfleetd.service", UNIT.read_text())
    exec_lines = [line for line in unit_for_this_machine().splitlines() if line.startswith(("ExecStart=", "ExecStop="))]
    box.put("/etc/systemd/system/tabfleetd.service.d/test.conf", "\n".join([
        "[Service]", "ExecStart=", "ExecStop=", *exec_lines, *hidden_from_the_service(),
        # Shorter timers, so the test is quick; everything else is as shipped.
        "WatchdogSec=2", "RestartSec=1", "TimeoutAbortSec=2", ""]))
    config = re.sub(r"(?m)^workers = .*$", "workers = 1", SERVICE_CONFIG.read_text())
    # Chromium's namespace sandbox cannot start inside this sandbox: the kernel refuses user namespaces
    # to a chrooted process (EPERM), and systemd-sandbox chroots. Everything else runs as shipped.
    config += 'chromium_args = ["--no-sandbox"]\n'
    box.put("/etc/tabfleet/tabfleetd.toml", config)
    # The service user must reach this venv and its Python (in the overlay only; the machine is untouched).
    for path in {*Path(os.path.realpath(sys.executable)).parents, *BIN.parents, *REPO.parents, REPO}:
        if path != Path("/") and not os.stat(path).st_mode & stat.S_IXOTH:
            box.run("chmod", "o+x", str(path))
    # A machine's /run is root's 0755; the sandbox's fresh tmpfs is 1777, where anyone could make /run/tabfleet
    # first, and tabfleetctl rightly refuses such a socket directory.
    box.run("chmod", "0755", "/run")
    box.run("install", "-d", "-o", "tabfleet", "-g", "tabfleet", "-m", "2770", "/srv/tabfleet")
    box.put("/srv/tabfleet/prompts.txt", "a lighthouse at dusk\na fox in snow\n")
    box.run("systemctl", "daemon-reload")
    return config


def test_unit_runs_under_real_systemd(sandbox: Sandbox) -> None:
    """Installed in a real systemd: start reaches READY, kill -9 and SIGSTOP (watchdog) restart it, stop leaves no Chromium."""
    box = sandbox
    config = install(box)

    box.run("systemctl", "start", "tabfleetd", timeout=90)  # Type=notify: returns once READY=1 arrived
    state = box.show("ActiveState", "SubState", "MainPID", "StatusText", "User")
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
    assert "workers" in state["StatusText"]
    main = state["MainPID"]
    assert box.run("ps", "-o", "user=", "-p", main).stdout.strip() == "tabfleet"
    assert box.run("stat", "-c", "%a %U", "/var/lib/tabfleet", "/var/lib/tabfleet/store/data.mdb").stdout.split("\n")[:2] \
        == ["700 tabfleet", "600 tabfleet"]
    assert box.ctl("ping").returncode == 0
    done = box.ctl("submit", "prompts.txt", "--wait", "--knob", "latency=0.2")
    assert done.returncode == 0, done.stderr + box.journal()
    wait_for("STATUS= with the finished tasks", lambda: "2 done" in box.show("StatusText")["StatusText"])
    ping = box.ctl("ping").stdout
    assert f"on {SOCKET}" in ping, ping  # found by tabfleetctl itself, nothing exported

    # The config is the unit's /etc/tabfleet/tabfleetd.toml, read by default; `systemctl reload` applies a new
    # worker count, and the key that needs a restart is a warning in the journal (priorities pass through).
    assert box.workers() == 1
    box.put("/etc/tabfleet/tabfleetd.toml", config.replace("workers = 1", "workers = 2") + "demo_port = 1\n")
    box.run("systemctl", "reload", "tabfleetd")
    wait_for("the second worker after a reload", lambda: box.workers() == 2)
    assert box.show("MainPID")["MainPID"] == main, "a reload is not a restart"
    warnings = box.run("journalctl", "-p", "warning", "-u", "tabfleetd", "--no-pager", "-o", "cat").stdout
    assert "config key demo_port changed to 1; it takes effect when tabfleetd next starts" in warnings, warnings
    assert "tabfleetd ready" not in warnings and "tabfleetd ready" in box.journal()

    browsers = box.pids("-x", "chromium")
    assert browsers
    box.run("kill", "-9", main)
    wait_for("a restart after kill -9", lambda: box.show("NRestarts", "SubState") == {"NRestarts": "1", "SubState": "running"})
    after_kill = box.show("MainPID")["MainPID"]
    assert after_kill != main
    assert box.ctl("ping").returncode == 0
    wait_for("the killed daemon's browsers to be gone", lambda: not browsers & box.pids("-x", "chromium"), timeout=10)

    browsers = box.pids("-x", "chromium")
    box.run("kill", "-STOP", after_kill)
    results: set[str] = set()

    def restarted() -> bool:
        now = box.show("NRestarts", "SubState", "Result")
        results.add(now["Result"])
        return now["NRestarts"] == "2" and now["SubState"] == "running"
    wait_for("a watchdog restart after SIGSTOP", restarted, timeout=30)
    assert "watchdog" in results, results
    assert box.show("MainPID")["MainPID"] != after_kill
    assert box.ctl("ping").returncode == 0
    wait_for("the stopped daemon's browsers to be gone", lambda: not browsers & box.pids("-x", "chromium"), timeout=10)

    wait_for("the new worker's Chromium", lambda: bool(box.pids("-x", "chromium")), timeout=30)
    box.run("systemctl", "stop", "tabfleetd", timeout=90)
    state = box.show("ActiveState", "Result", "ExecMainStatus")
    assert state == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, state
    assert box.pids("-x", "chromium") == set()
    assert box.pids("-u", "tabfleet") == set()
    assert "has stopped" in box.journal()  # ExecStop's tabfleetctl shutdown --wait did the stopping
