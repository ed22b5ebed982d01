"""Files at rest: the state dir is the daemon user's alone whatever the umask, and the unit says so too."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import psutil
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "tabfleetd.service"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def readable_by_others(root: Path) -> list[str]:
    """Every file or directory under `root` (symlinks aside) that its group or other users may use at all."""
    found = []
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(top, name)
            if not path.is_symlink() and mode(path) & 0o077:
                found.append(f"{path} {mode(path):04o}")
    return found


def test_state_is_private_under_umask_022_with_detach(make_daemon: Any, short_tmp: Path, users: Any) -> None:
    """A --detach daemon started with umask 022: state dir 0700, store, logs, lock, pid file, token and profiles private."""
    os.chmod(short_tmp, 0o755)
    daemon = make_daemon(workers=1, start=False, config={"metrics_port": 0, "dashboard_port": 0})
    # What an older tabfleetd left behind: a readable state dir with a readable log.
    (daemon.state / "logs").mkdir(parents=True, mode=0o755)
    os.chmod(daemon.state, 0o755)
    old_log = daemon.state / "logs" / "old.log"
    old_log.write_text("a secret prompt from last week\n")
    os.chmod(old_log, 0o644)
    pidfile = daemon.root / "run" / "tabfleetd.pid"
    started = subprocess.run([*daemon.argv(), "--detach", "--pidfile", str(pidfile)], capture_output=True, text=True,
                             timeout=120, cwd=daemon.work, stdin=subprocess.DEVNULL, umask=0o022)
    assert started.returncode == 0, started.stderr
    pid = int(pidfile.read_text())
    try:
        job = daemon.submit(["a secret prompt"], "latency=0.2")
        assert daemon.wait_job(job, timeout=60)["done"] == 1
        state = daemon.state
        assert mode(state) == 0o700
        for name in ("store/data.mdb", "store/lock.mdb", "tabfleetd.lock", "logs/tabfleetd.log", "logs/chromium-1.log",
                     "logs/old.log"):
            assert mode(state / name) == 0o600, name
        for name in ("store", "logs", "profiles", "profiles/worker-1", "snapshots", "xvfb"):
            assert mode(state / name) == 0o700, name
        assert mode(pidfile) == 0o600 and mode(pidfile.parent) == 0o700
        assert readable_by_others(state) == []  # Chromium's own files too (cookies, DevToolsActivePort)
        # Another local user reads nothing, though every directory above the state dir lets them pass.
        peek = subprocess.run([*users.prefix(users.mallory), "cat", str(state / "store" / "data.mdb")],
                              capture_output=True, text=True)
        assert peek.returncode != 0 and "Permission denied" in peek.stderr
        # Outputs are the submitter's, not the daemon's: they follow the umask.
        image = next((daemon.work / "tabfleet-out" / job).glob("*.png"))
        assert mode(image) == 0o644
    finally:
        daemon.ctl("shutdown", "--wait")
        if psutil.pid_exists(pid):
            psutil.Process(pid).kill()


def test_the_unit_makes_the_state_dir_private() -> None:
    """systemd creates /var/lib/tabfleet 0700 (the daemon would tighten it anyway) and keeps UMask=0027 for outputs."""
    lines = UNIT.read_text().splitlines()
    assert "StateDirectoryMode=0700" in lines and "UMask=0027" in lines
