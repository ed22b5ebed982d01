"""An accept loop that survives running out of file descriptors.

asyncio's own accept loop reports every failed accept() and retries; with the
descriptors used up by idle clients it fills the log and takes no new
connection.  Here each listening socket keeps one spare descriptor: when
accept() fails with EMFILE, the spare is closed, the waiting connection is
accepted and closed at once (its client sees the close instead of hanging),
and the spare is taken back.  Should that fail too, accepting pauses for a
second rather than spinning.  Every such event is logged at a bounded rate.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import Callable

from ..logthrottle import ThrottledLog

log = logging.getLogger(__name__)

ACCEPT_BATCH = 32  # connections taken per wake-up, so one busy listener cannot starve the loop
PAUSE_S = 1.0
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def _spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


class Listener:
    """Accepts connections on a listening socket and hands each to `on_accept` (which owns it from then on)."""

    def __init__(self, sock: socket.socket, on_accept: Callable[[socket.socket], None], name: str) -> None:
        self.sock = sock
        self.on_accept = on_accept
        self.name = name
        self.loop = asyncio.get_running_loop()
        self.spare = _spare()
        self.shed = 0  # connections closed unserved for want of descriptors
        self.shortage = ThrottledLog(log)
        self.paused: asyncio.TimerHandle | None = None
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._ready)

    def close(self) -> None:
        if self.paused is not None:
            self.paused.cancel()
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
        if self.spare is not None:
            os.close(self.spare)
            self.spare = None

    def _ready(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._out_of_descriptors(exc)
                else:
                    self.shortage.warning("%s: accept failed: %s", self.name, exc)
                return
            conn.setblocking(False)
            try:
                self.on_accept(conn)
            except Exception:
                log.exception("%s: a new connection could not be set up", self.name)
                conn.close()

    def _out_of_descriptors(self, exc: OSError) -> None:
        if self.spare is not None:
            os.close(self.spare)
            self.spare = None
            try:
                conn, _ = self.sock.accept()
                conn.close()
                self.shed += 1
            except OSError:
                pass
            self.spare = _spare()
        self.shortage.warning("%s: out of file descriptors (%s); closed a new connection unserved (%d so far)",
                              self.name, exc.strerror, self.shed)
        if self.spare is None:  # the spare went to someone else: wait instead of spinning on accept()
            self.loop.remove_reader(self.sock.fileno())
            self.paused = self.loop.call_later(PAUSE_S, self._resume)

    def _resume(self) -> None:
        self.paused = None
        if self.spare is None:
            self.spare = _spare()
        if self.sock.fileno() >= 0:
            self.loop.add_reader(self.sock.fileno(), self._ready)
