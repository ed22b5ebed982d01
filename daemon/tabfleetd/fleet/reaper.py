"""No zombies: a worker adopts what its Chromium leaves behind and reaps it; the daemon reaps what it adopts.

Chromium forks a zygote, renderers and helpers, and its crash handler double-forks away.  When the browser
process dies (kill -9, a crash), those are orphans: the kernel hands each to the nearest ancestor marked a child
subreaper, else to PID 1, which in a container is often no init that reaps, so they stay zombies for good.  Each
worker therefore marks itself a subreaper before it starts a Chromium, and reaps the orphans it adopts; the
daemon does the same for what a killed worker leaves.

Only zombies outside our own session are reaped here.  Chromium and Xvfb run in sessions of their own and are
waited on by their owners (browser.py, display.py), whose exit codes must not be taken from them: their starters
`claim` them with their own poll, which a sweep calls for them (so a killed browser is reaped, and its worker
knows, at once).  Worker processes, multiprocessing's helpers and anything started with subprocess stay in our
session and are their owners' to wait for.  Every sweep runs on the event loop's thread,
the thread that starts and claims those processes, so none is taken between its start and its claim.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
_claimed: dict[int, Callable[[], object]] = {}


def claim(pid: int, poll: Callable[[], object]) -> None:
    """`pid` is a child its starter waits on: a sweep reaps it only through `poll` (which keeps its exit code)."""
    _claimed[pid] = poll


def release(pid: int) -> None:
    _claimed.pop(pid, None)


def become_subreaper() -> bool:
    """Adopt our descendants' orphans (Linux); False where the kernel does not offer it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            log.warning("cannot become a child subreaper: %s", os.strerror(ctypes.get_errno()))
            return False
    except (OSError, AttributeError) as exc:
        log.warning("cannot become a child subreaper: %s", exc)
        return False
    return True


def child_pids() -> list[int]:
    """Our children, from every thread's /proc children list (an adopted orphan may land on any thread)."""
    pids: list[int] = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return pids
    for tid in tasks:
        try:
            text = Path(f"/proc/self/task/{tid}/children").read_text()
        except OSError:  # a thread that just ended, or a kernel without the children file
            continue
        pids.extend(int(p) for p in text.split())
    return pids


def state_and_session(pid: int) -> tuple[str, int] | None:
    """A process's state letter and session id, from /proc/PID/stat (None once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # the name in parentheses may hold spaces
    return fields[0], int(fields[3])


def reap_orphans() -> list[int]:
    """Reap every zombie child that is an adopted orphan (see the module's doc); return their pids."""
    own_session = os.getsid(0)
    reaped: list[int] = []
    for pid in child_pids():
        found = state_and_session(pid)
        if found is None or found[0] != "Z":
            continue
        owner_poll = _claimed.get(pid)
        if owner_poll is not None:
            owner_poll()
            continue
        if found[1] == own_session:
            continue
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if done:
            reaped.append(done)
    if reaped:
        log.debug("reaped %d orphaned processes: %s", len(reaped), reaped)
    return reaped


async def reap_forever(every_s: float, on_sigchld: bool) -> None:
    """Sweep every `every_s` seconds, and at each SIGCHLD when asked (signals coalesce, so the timer stays)."""
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    if on_sigchld:
        loop.add_signal_handler(signal.SIGCHLD, wake.set)
    try:
        while True:
            reap_orphans()
            try:
                await asyncio.wait_for(wake.wait(), every_s)
            except asyncio.TimeoutError:
                pass
            wake.clear()
    finally:
        if on_sigchld:
            loop.remove_signal_handler(signal.SIGCHLD)
