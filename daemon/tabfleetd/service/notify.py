"""The service manager link: sd_notify messages (READY, STATUS, WATCHDOG, STOPPING) and the watchdog loop.

systemd gives a Type=notify service a datagram socket in $NOTIFY_SOCKET and,
with WatchdogSec=, a deadline in $WATCHDOG_USEC.  cli.py reads both once
(ServiceEnv.from_env) and the daemon gets a ServiceLink.  `tabfleetd --detach`
reuses the same messages over a socketpair so its parent can wait for READY.

Sending never raises: a service manager that went away must not stop the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

STATUS_EVERY_S = 5.0


@dataclass(frozen=True)
class ServiceEnv:
    """What the service manager told this process through its environment."""

    notify_socket: str | None = None
    watchdog_s: float | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], pid: int) -> ServiceEnv:
        """Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from an environment mapping."""
        watchdog_s = None
        usec = env.get("WATCHDOG_USEC", "")
        wd_pid = env.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the process systemd watches; a child that inherited the variables must not ping.
        if usec.isdigit() and int(usec) > 0 and (not wd_pid or wd_pid == str(pid)):
            watchdog_s = int(usec) / 1_000_000
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog_s)


ENV_NAMES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """Sends sd_notify datagrams on one connected socket; a no-op without one."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        self.sock = sock

    @classmethod
    def connect(cls, address: str | None) -> Notifier:
        """A notifier for a $NOTIFY_SOCKET address ('@name' is in the abstract namespace)."""
        if not address:
            return cls(None)
        path = "\0" + address[1:] if address.startswith("@") else address
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(path)
        except OSError as exc:
            log.warning("cannot reach the service manager at %s: %s", address, exc)
            sock.close()
            return cls(None)
        return cls(sock)

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    def send(self, *fields: str) -> bool:
        """Send one message of KEY=VALUE lines; False when nobody listens."""
        if self.sock is None:
            return False
        try:
            self.sock.send("\n".join(fields).encode())
            return True
        except OSError as exc:
            # The listener went away (the --detach parent exits after READY): stop trying.
            log.debug("service manager unreachable (%s); notifications off", exc)
            self.close()
            return False

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def status_line(jobs: Iterable[Mapping[str, Any]], worker_states: Iterable[str]) -> str:
    """One line for `systemctl status`: jobs by state, task counts, workers up."""
    job_states: dict[str, int] = {}
    tasks = {"done": 0, "failed": 0, "running": 0, "pending": 0}
    for job in jobs:
        job_states[job["state"]] = job_states.get(job["state"], 0) + 1
        for bucket in tasks:
            tasks[bucket] += int(job.get("counts", {}).get(bucket, 0))
    states = list(worker_states)
    up = sum(s in ("idle", "busy") for s in states)
    active = job_states.get("active", 0)
    paused = job_states.get("paused", 0)
    jobs_part = f"{active} active job{'s' if active != 1 else ''}" + (f", {paused} paused" if paused else "")
    tasks_part = ", ".join(f"{n} {b}" for b, n in tasks.items())
    return f"{jobs_part}; tasks {tasks_part}; workers {up}/{len(states)} up"


class ServiceLink:
    """The daemon's side of the link: READY, periodic STATUS, watchdog pings while healthy, STOPPING."""

    def __init__(self, notifier: Notifier | None = None, watchdog_s: float | None = None,
                 status_every_s: float = STATUS_EVERY_S) -> None:
        self.notifier = notifier or Notifier(None)
        self.watchdog_s = watchdog_s
        self.status_every_s = status_every_s
        self.pings = 0
        self.missed = 0
        self._last_status: str | None = None

    def ready(self, status: str) -> None:
        self._last_status = status
        self.notifier.send("READY=1", f"STATUS={status}")

    def status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self.notifier.send(f"STATUS={text}")

    def reloading(self, monotonic_usec: int) -> None:
        """RELOADING=1 before a config reload; ready() follows when it is done."""
        self.notifier.send("RELOADING=1", "STATUS=reloading the config", f"MONOTONIC_USEC={monotonic_usec}")

    def stopping(self, extend_s: float | None = None) -> None:
        # EXTEND_TIMEOUT_USEC keeps systemd from killing us mid-grace if TimeoutStopSec is shorter than the grace.
        fields = ["STOPPING=1", "STATUS=stopping"]
        if extend_s:
            fields.append(f"EXTEND_TIMEOUT_USEC={int(extend_s * 1_000_000)}")
        self.notifier.send(*fields)

    def exit_status(self, code: int) -> None:
        self.notifier.send(f"EXIT_STATUS={code}")

    async def run(self, status: Callable[[], str], probe: Callable[[], Awaitable[Any]]) -> None:
        """Refresh STATUS, and ping the watchdog at half its period while the loop and probe are healthy."""
        if not self.notifier.enabled:
            return
        half = self.watchdog_s / 2 if self.watchdog_s else None
        tick = min(self.status_every_s, half) if half else self.status_every_s
        next_ping = time.monotonic()
        while self.notifier.enabled:  # the --detach parent stops listening after READY
            before = time.monotonic()
            await asyncio.sleep(tick)
            lag = time.monotonic() - before - tick
            try:
                self.status(status())
            except Exception:
                log.exception("could not build the status line")
            if half is None or time.monotonic() < next_ping:
                continue
            if await self._healthy(lag, half, probe):
                self.notifier.send("WATCHDOG=1")
                self.pings += 1
                next_ping = time.monotonic() + half - tick / 2
            else:
                self.missed += 1

    async def _healthy(self, lag: float, half: float, probe: Callable[[], Awaitable[Any]]) -> bool:
        """The loop woke up roughly on time and the probe (a store read) answered within half a period."""
        if lag > half / 2:
            log.warning("event loop lagged %.1f s; holding back the watchdog ping", lag)
            return False
        try:
            await asyncio.wait_for(probe(), half)
        except asyncio.TimeoutError:
            log.warning("health probe did not answer within %.1f s; holding back the watchdog ping", half)
            return False
        except Exception as exc:
            log.warning("health probe failed (%s); holding back the watchdog ping", exc)
            return False
        return True
