"""Unit tests for tabfleetd.fleet.memory: cgroup v1/v2 and machine readings, the file probe, the governor's marks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tabfleetd.fleet.memory import GROW, HOLD, SHRINK, STEADY, FileProbe, Governor, Reading, SystemProbe, probe_from_config

MB = 2**20


def fake_proc(tmp_path: Path, cgroup_lines: str) -> Path:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(cgroup_lines)
    return proc


def test_cgroup_v2_limit_and_working_set(tmp_path: Path) -> None:
    """A v2 cgroup with memory.max is used, less its inactive page cache."""
    proc = fake_proc(tmp_path, "0::/system.slice/tabfleetd.service\n")
    group = tmp_path / "cg" / "system.slice" / "tabfleetd.service"
    group.mkdir(parents=True)
    (group / "memory.max").write_text(f"{2048 * MB}\n")
    (group / "memory.current").write_text(f"{1000 * MB}\n")
    (group / "memory.stat").write_text(f"anon 5\ninactive_file {200 * MB}\nactive_file 7\n")
    reading = SystemProbe(proc, tmp_path / "cg").cgroup()
    assert reading == Reading(800 * MB, 2048 * MB, f"cgroup v2 {group}")


def test_cgroup_v2_without_limit_falls_back(tmp_path: Path) -> None:
    """memory.max = max means no cgroup limit, so the machine's memory is used."""
    proc = fake_proc(tmp_path, "0::/x\n")
    group = tmp_path / "cg" / "x"
    group.mkdir(parents=True)
    (group / "memory.max").write_text("max\n")
    (group / "memory.current").write_text("100\n")
    probe = SystemProbe(proc, tmp_path / "cg")
    assert probe.cgroup() is None
    assert probe.read().source == "machine"


def test_cgroup_v1_limit(tmp_path: Path) -> None:
    """A v1 memory cgroup with a limit is used, less total_inactive_file."""
    proc = fake_proc(tmp_path, "5:cpuset:/\n4:memory:/tabfleet\n3:pids:/\n")
    group = tmp_path / "cg" / "memory" / "tabfleet"
    group.mkdir(parents=True)
    (group / "memory.limit_in_bytes").write_text(f"{1024 * MB}\n")
    (group / "memory.usage_in_bytes").write_text(f"{600 * MB}\n")
    (group / "memory.stat").write_text(f"cache 1\ntotal_inactive_file {100 * MB}\n")
    reading = SystemProbe(proc, tmp_path / "cg").cgroup()
    assert reading is not None and reading.used == 500 * MB and reading.limit == 1024 * MB
    assert reading.source.startswith("cgroup v1")


def test_cgroup_v1_unlimited_is_ignored(tmp_path: Path) -> None:
    """cgroup v1's huge 'no limit' value is not taken for a limit."""
    proc = fake_proc(tmp_path, "4:memory:/\n")
    group = tmp_path / "cg" / "memory"
    group.mkdir(parents=True)
    (group / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (group / "memory.usage_in_bytes").write_text("1000\n")
    assert SystemProbe(proc, tmp_path / "cg").cgroup() is None


def test_machine_reading_when_no_cgroup(tmp_path: Path) -> None:
    """Without any cgroup file the machine's total and available memory are used."""
    reading = SystemProbe(tmp_path / "none", tmp_path / "none").read()
    assert reading.source == "machine" and 0 < reading.used < reading.limit


def test_file_probe(tmp_path: Path) -> None:
    """The file probe reads USED_MB LIMIT_MB; an unreadable file means no pressure."""
    path = tmp_path / "m"
    path.write_text("900 1000\n")
    probe = probe_from_config(f"file:{path}")
    assert isinstance(probe, FileProbe) and probe.read().fraction == pytest.approx(0.9)
    path.write_text("nonsense")
    assert probe.read().fraction == 0.0
    assert isinstance(probe_from_config("system"), SystemProbe)


@pytest.mark.parametrize("used, decision", [(950, SHRINK), (900, SHRINK), (850, HOLD), (800, HOLD), (750, STEADY),
                                            (700, STEADY), (699, GROW), (100, GROW)])
def test_governor_marks_with_hysteresis(used: int, decision: str) -> None:
    """Critical shrinks, high holds, between low and high nothing changes, below low the fleet grows."""
    governor = Governor(high=0.8, critical=0.9, low=0.7)
    assert governor.decide(Reading(used, 1000, "test")) == decision
