"""`tabfleetctl demo`, the newcomer's first run, from a machine with no daemon running."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tabfleetd.demo.demoimage import render_png

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def test_demo_starts_a_daemon_makes_images_and_stops_it(short_tmp: Path, make_daemon: Any) -> None:
    """demo starts tabfleetd, makes every sample image, says where they are, and stops the daemon it started."""
    home, work = short_tmp / "home", short_tmp / "work"
    home.mkdir()
    work.mkdir()
    env = dict(os.environ, HOME=str(home), TABFLEET_SOCKET=str(short_tmp / "demo.sock"))
    env.pop("STATE_DIRECTORY", None)
    env.pop("RUNTIME_DIRECTORY", None)
    result = subprocess.run([sys.executable, "-m", "tabfleetctl", "demo", "--count", "6", "--latency", "0.2"],
                            capture_output=True, text=True, timeout=150, cwd=work, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "starting tabfleetd" in result.stdout and "has stopped" in result.stdout
    match = re.search(r"(\d+) images in (\S+)", result.stdout)
    assert match and match.group(1) == "6", result.stdout
    out = Path(match.group(2))
    assert out.parent == work / "tabfleet-out"
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 6
    for record in records:
        assert (out / record["file"]).read_bytes() == render_png(record["prompt"])
    state = home / ".local" / "state" / "tabfleet"
    assert (state / "store").is_dir(), "the demo daemon keeps its state under ~/.local/state/tabfleet"
    ping = subprocess.run([sys.executable, "-m", "tabfleetctl", "ping"], capture_output=True, text=True, env=env, timeout=30)
    assert ping.returncode == 3, "the demo should stop the daemon it started"


def test_demo_uses_a_running_daemon(daemon: Any) -> None:
    """With a daemon already running, demo submits to it, says which of its settings cannot apply, and leaves it running."""
    result = daemon.ctl("demo", "--count", "4", "--latency", "0.1", check=True)
    assert "starting tabfleetd" not in result.stdout and "4 images in" in result.stdout and "note:" not in result.stderr
    assert daemon.call("ping")["pong"]
    ignored = daemon.ctl("demo", "--count", "2", "--latency", "0.1", "--workers", "5", "--keep-daemon", check=True)
    assert "note: tabfleetd is already running with 2 workers; --workers applies only to a daemon the demo starts" \
        in ignored.stderr
    assert "note: tabfleetd was already running; the demo leaves it running anyway" in ignored.stderr
    assert len(daemon.call("workers")["workers"]) == 2


def test_demo_makes_more_than_the_written_samples(daemon: Any) -> None:
    """--count beyond the 36 written prompts generates more, each a distinct prompt with its own image."""
    result = daemon.ctl("demo", "--count", "45", "--latency", "0.05", "--json", timeout=150, check=True)
    final = json.loads(result.stdout.strip().splitlines()[-1])
    assert (final["state"], final["done"], final["total"]) == ("done", 45, 45)
    out = Path(final["out"])
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len({r["prompt"] for r in records}) == 45
    for record in records:
        assert (out / record["file"]).read_bytes() == render_png(record["prompt"])
    assert daemon.ctl("demo", "--count", "10001").returncode == 2
