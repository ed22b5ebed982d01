"""A blocking client for the control socket: connect, say hello, make calls."""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tabfleetd import protocol
from tabfleetd.errors import ProtocolError

CLIENT_NAME = "tabfleetctl"


class DaemonNotRunning(Exception):
    """Nothing answers on the socket."""


class DaemonError(Exception):
    """The daemon answered with an error reply."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


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
    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self._ids = itertools.count(1)

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise DaemonNotRunning(f"tabfleetd is not running (nothing answers on {self.path}: {exc.strerror})") from None
        except PermissionError:
            sock.close()
            raise DaemonNotRunning(f"no permission to use the socket {self.path}") from None
        self.sock = sock
        self.call("hello", {"version": protocol.PROTOCOL_VERSION, "client": CLIENT_NAME})

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def call(self, op: str, args: dict[str, Any] | None = None) -> Any:
        """Send one request and return its result, or raise DaemonError."""
        assert self.sock is not None, "connect first"
        msg_id = next(self._ids)
        try:
            self.sock.sendall(protocol.encode(protocol.request(op, args, msg_id)))
            header = self._read(protocol.HEADER.size)
            reply = protocol.decode(self._read(protocol.body_length(header)))
        except (ConnectionError, socket.timeout, EOFError) as exc:
            raise DaemonNotRunning(f"the daemon closed the connection during '{op}' ({exc or type(exc).__name__})") from None
        except ProtocolError as exc:
            raise DaemonError(exc.code, f"unreadable reply to '{op}': {exc}") from None
        if not reply.get("ok"):
            err = reply.get("error") or {}
            raise DaemonError(int(err.get("code", 1000)), str(err.get("message", "unknown error")))
        return reply.get("result")

    def stream(self, op: str, args: dict[str, Any] | None = None, idle_timeout: float | None = None) -> Iterator[Any]:
        """Send one streaming request and yield each pushed result until the daemon ends the stream.

        `idle_timeout` replaces the per-reply timeout: the longest silence
        between two pushed frames before the daemon counts as gone.  To stop
        early, stop iterating and close the client; the daemon then ends the stream.
        """
        assert self.sock is not None, "connect first"
        msg_id = next(self._ids)
        try:
            self.sock.sendall(protocol.encode(protocol.request(op, args, msg_id)))
            if idle_timeout is not None:
                self.sock.settimeout(idle_timeout)
            while True:
                header = self._read(protocol.HEADER.size)
                reply = protocol.decode(self._read(protocol.body_length(header)))
                if not reply.get("ok"):
                    err = reply.get("error") or {}
                    raise DaemonError(int(err.get("code", 1000)), str(err.get("message", "unknown error")))
                if not reply.get("more"):
                    return
                yield reply.get("result")
        except (ConnectionError, socket.timeout, EOFError) as exc:
            raise DaemonNotRunning(f"the daemon closed the connection during '{op}' ({exc or type(exc).__name__})") from None
        except ProtocolError as exc:
            raise DaemonError(exc.code, f"unreadable reply to '{op}': {exc}") from None

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
