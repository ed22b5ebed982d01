"""A blocking client for the control socket: check its directory, connect, say hello, make calls.

A "busy" answer (the daemon refused the connection or the request for now, and
did nothing) is retried with backoff for up to `busy_wait` seconds, on a new
connection; only then is DaemonBusy raised.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tabfleetd import protocol
from tabfleetd.errors import Busy, ProtocolError

CLIENT_NAME = "tabfleetctl"
BUSY_WAIT_S = 5.0


class DaemonNotRunning(Exception):
    """Nothing answers on the socket."""


class NoPermission(DaemonNotRunning):
    """The socket is there, but this user may not open it (not in its group)."""


class UnsafeSocket(Exception):
    """The socket's directory could be controlled by someone else, so nothing is sent there."""


class DaemonError(Exception):
    """The daemon answered with an error reply."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class DaemonBusy(DaemonError):
    """The daemon kept refusing for now (too many connections or bytes in flight); nothing was done."""


def default_socket(explicit: str | None) -> Path:
    """The socket to use: the first of socket_places() that is there, else the first."""
    places = socket_places(explicit)
    return next((p for p in places if _there(p)), places[0])


def socket_places(explicit: str | None) -> list[Path]:
    """Every place the socket is looked for, in order (protocol.socket_candidates)."""
    return protocol.socket_candidates(explicit, os.environ, os.getuid())


def _there(path: Path) -> bool:
    # A socket in a directory this user may not enter (the service's, for someone not in its group) counts as
    # there: connecting then says "no permission", which is the truth, rather than "not running".
    return os.path.lexists(path) or (os.path.isdir(path.parent) and not os.access(path.parent, os.X_OK))


class Client:
    def __init__(self, path: Path, timeout: float = 30.0, busy_wait: float = BUSY_WAIT_S) -> None:
        self.path = path
        self.timeout = timeout
        self.busy_wait = busy_wait
        self.sock: socket.socket | None = None
        self._ids = itertools.count(1)

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        """Connect and say hello, retrying while the daemon answers busy."""
        self._while_busy(self._connect_once)

    def _connect_once(self) -> None:
        problem = protocol.check_socket_dir(self.path.parent, protocol.trusted_owners(self.path.parent, os.getuid()),
                                            owner_must_be_trusted=False)
        if problem:
            raise UnsafeSocket(f"refusing to use the socket {self.path}: {problem}. Someone else may be listening there; "
                               "remove the directory if it is not yours, or choose another --socket")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise DaemonNotRunning(f"tabfleetd is not running (nothing answers on {self.path}: {exc.strerror})") from None
        except PermissionError:
            sock.close()
            raise NoPermission(f"no permission to use the socket {self.path}: the daemon's operator can let you in "
                               "by adding you to its socket_group") from None
        except socket.timeout:
            sock.close()
            raise DaemonBusy(Busy.code, f"tabfleetd did not take the connection within {self.timeout:g} s") from None
        self.sock = sock
        try:
            self._call_once("hello", {"version": protocol.PROTOCOL_VERSION, "client": CLIENT_NAME})
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _while_busy(self, attempt: Any) -> Any:
        """Run `attempt` until it is not refused as busy, backing off, for up to busy_wait seconds."""
        deadline = time.monotonic() + self.busy_wait
        delay = 0.1
        while True:
            try:
                return attempt()
            except DaemonBusy:
                if time.monotonic() + delay > deadline:
                    raise
            self.close()
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def call(self, op: str, args: dict[str, Any] | None = None) -> Any:
        """Send one request and return its result, or raise DaemonError (DaemonBusy once retries are spent)."""
        def attempt() -> Any:
            if self.sock is None:
                self._connect_once()
            return self._call_once(op, args)

        return self._while_busy(attempt)

    def _call_once(self, op: str, args: dict[str, Any] | None) -> Any:
        assert self.sock is not None, "connect first"
        self._send(op, args)
        return _result(self._reply(op))

    def _send(self, op: str, args: dict[str, Any] | None) -> int:
        """Send a request; a send the daemon cut short is left for the reply read to explain (it may hold a refusal)."""
        assert self.sock is not None
        msg_id = next(self._ids)
        try:
            self.sock.sendall(protocol.encode(protocol.request(op, args, msg_id)))
        except (BrokenPipeError, ConnectionResetError):
            pass
        return msg_id

    def stream(self, op: str, args: dict[str, Any] | None = None, idle_timeout: float | None = None) -> Iterator[Any]:
        """Send one streaming request and yield each pushed result until the daemon ends the stream.

        `idle_timeout` replaces the per-reply timeout: the longest silence
        between two pushed frames before the daemon counts as gone.  To stop
        early, stop iterating and close the client; the daemon then ends the stream.
        A busy refusal before the first frame is retried like a call's.
        """
        def first() -> dict[str, Any]:
            if self.sock is None:
                self._connect_once()
            self._send(op, args)
            if idle_timeout is not None:
                self.sock.settimeout(idle_timeout)  # type: ignore[union-attr]
            return self._pushed(op)

        reply = self._while_busy(first)
        while reply.get("more"):
            yield reply.get("result")
            reply = self._pushed(op)

    def _pushed(self, op: str) -> dict[str, Any]:
        """The next frame of a stream; an error reply raises."""
        reply = self._reply(op)
        _result(reply)
        return reply

    def _reply(self, op: str) -> dict[str, Any]:
        """Read and decode the next frame."""
        try:
            header = self._read(protocol.HEADER.size)
            reply = protocol.decode(self._read(protocol.body_length(header)))
        except (ConnectionError, socket.timeout, EOFError) as exc:
            raise DaemonNotRunning(f"the daemon closed the connection during '{op}' ({exc or type(exc).__name__})") from None
        except ProtocolError as exc:
            raise DaemonError(exc.code, f"unreadable reply to '{op}': {exc}") from None
        return reply

    def _read(self, n: int) -> bytes:
        assert self.sock is not None
        chunks = []
        while n:
            chunk = self.sock.recv(min(n, 1 << 20))
            if not chunk:
                raise EOFError("connection closed")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)


def _result(reply: dict[str, Any]) -> Any:
    """A reply's result, or its error raised (DaemonBusy for a busy refusal)."""
    if not reply.get("ok"):
        err = reply.get("error") or {}
        code = int(err.get("code", 1000))
        raise (DaemonBusy if code == Busy.code else DaemonError)(code, str(err.get("message", "unknown error")))
    return reply.get("result")
