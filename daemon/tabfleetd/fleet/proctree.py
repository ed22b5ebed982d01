"""A worker's process tree: it dies with the daemon, and what its processes use (memory, the renderers' CPU)."""

from __future__ import annotations

import ctypes
import signal

import psutil

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the daemon dies, however it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def tree_memory_mb(pid: int) -> float:
    """Proportional set size (PSS) of a process and all its descendants.

    Summed RSS would count Chromium's shared pages once per process, several
    times over; PSS splits each shared page among the processes that map it.
    """
    total = 0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for proc in procs:
        try:
            total += proc.memory_full_info().pss
        except psutil.Error:
            continue
    return round(total / 2**20, 1)


def renderer_cpu_s(browser_pid: int | None) -> float | None:
    """CPU seconds a browser's renderers have used (None: no browser to ask)."""
    if browser_pid is None:
        return None
    try:
        procs = psutil.Process(browser_pid).children(recursive=True)
    except psutil.Error:
        return None
    total = 0.0
    for proc in procs:
        try:
            if "--type=renderer" in proc.cmdline():
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            continue
    return round(total, 2)
