"""The memory governor: reads memory use against its limit and sizes the fleet with hysteresis.

    used / limit  >= critical  recycle the largest worker and shrink the fleet by one
                  >= high      start no new worker; new tasks wait
                  <  low       grow the fleet back by one per check, up to the size asked for

Where the daemon runs inside a cgroup with a memory limit (systemd MemoryMax=,
a container), that cgroup's limit and working set are used; otherwise the
machine's.  Tests inject a FileProbe.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

MB = 2**20
# cgroup v1 reports "no limit" as a huge number near 2**63.
NO_LIMIT = 2**60


@dataclass(frozen=True)
class Reading:
    used: int
    limit: int
    source: str

    @property
    def fraction(self) -> float:
        return self.used / self.limit if self.limit else 0.0


class SystemProbe:
    """The daemon's cgroup limit and working set where one applies, else the machine's memory."""

    def __init__(self, proc_root: Path = Path("/proc"), cgroup_root: Path = Path("/sys/fs/cgroup")) -> None:
        self.proc_root = proc_root
        self.cgroup_root = cgroup_root

    def read(self) -> Reading:
        machine = psutil.virtual_memory()
        cgroup = self.cgroup()
        if cgroup is not None and cgroup.limit < machine.total:
            return cgroup
        return Reading(machine.total - machine.available, machine.total, "machine")

    def cgroup(self) -> Reading | None:
        try:
            lines = (self.proc_root / "self" / "cgroup").read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            hierarchy, controllers, path = line.split(":", 2)
            if hierarchy == "0" and controllers == "":
                reading = self._v2(self.cgroup_root / path.lstrip("/"))
            elif "memory" in controllers.split(","):
                reading = self._v1(self.cgroup_root / "memory" / path.lstrip("/"))
            else:
                continue
            if reading is not None:
                return reading
        return None

    def _v2(self, base: Path) -> Reading | None:
        try:
            raw_limit = (base / "memory.max").read_text().strip()
            current = int((base / "memory.current").read_text())
        except (OSError, ValueError):
            return None
        if raw_limit == "max":
            return None
        return Reading(current - _stat(base / "memory.stat", "inactive_file"), int(raw_limit), f"cgroup v2 {base}")

    def _v1(self, base: Path) -> Reading | None:
        try:
            limit = int((base / "memory.limit_in_bytes").read_text())
            usage = int((base / "memory.usage_in_bytes").read_text())
        except (OSError, ValueError):
            return None
        if limit >= NO_LIMIT:
            return None
        return Reading(usage - _stat(base / "memory.stat", "total_inactive_file"), limit, f"cgroup v1 {base}")


def _stat(path: Path, key: str) -> int:
    """One counter of a cgroup memory.stat file (0 when absent): page cache that can be dropped."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


class FileProbe:
    """A simulated reading: the file holds "USED_MB LIMIT_MB" (for tests and drills)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> Reading:
        try:
            used, limit = (float(x) for x in self.path.read_text().split()[:2])
        except (OSError, ValueError):
            log.warning("memory probe file %s unreadable; assuming no pressure", self.path)
            return Reading(0, 1, f"file {self.path}")
        return Reading(int(used * MB), int(limit * MB), f"file {self.path}")


def probe_from_config(spec: str) -> SystemProbe | FileProbe:
    if spec.startswith("file:"):
        return FileProbe(Path(spec[len("file:"):]))
    return SystemProbe()


HOLD, SHRINK, GROW, STEADY = "hold", "shrink", "grow", "steady"


@dataclass(frozen=True)
class Governor:
    high: float
    critical: float
    low: float

    def decide(self, reading: Reading) -> str:
        """What the fleet should do at this reading."""
        fraction = reading.fraction
        if fraction >= self.critical:
            return SHRINK
        if fraction >= self.high:
            return HOLD
        if fraction < self.low:
            return GROW
        return STEADY
