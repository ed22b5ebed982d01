"""The control server: a Unix stream socket speaking protocol.py frames.

Who may connect: SO_PEERCRED's uid is root or the daemon's own, or the peer's
groups (SO_PEERGROUPS, as the kernel saw them at connect) hold socket_group.
The socket's directory is checked first (protocol.socket_dir_problem).

No client can crowd the others out (each limit is a key in config.py):

- a new connection must say hello within hello_timeout_s, in frames of at
  most HELLO_MAX_FRAME bytes; after that it may idle between requests for
  read_timeout_s;
- a request's body must keep arriving, at body_min_rate_kib_s after a
  BODY_GRACE_S start, and a body over UNBUDGETED_FRAME bytes is read only
  while the bytes held across connections fit max_bytes_in_flight (one uid:
  half of it, or max_frame_bytes if more);
- a uid holds at most max_connections_per_uid connections, and all together
  at most max_connections, of which reserved_connections are kept for root
  and the daemon's uid.  When full, the oldest connection that has not said
  hello is dropped, else the oldest idle one (a connection inside a request
  or a stream is not idle), else the new one is refused;
- every drop and refusal is a Busy error frame, so tabfleetctl retries and
  then says "busy", never "not running"; each is logged at a bounded rate.

A header over the frame limit is refused before its body is read, and a frame
that cannot be decoded ends the connection.  None of it can stop the daemon.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import grp
import logging
import os
import socket
import stat
import struct
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from .. import protocol
from ..settings.config import Config
from ..errors import AlreadyRunning, Busy, ConfigError, NotAuthorized, ProtocolError, TabfleetError, VersionMismatch
from .listener import Listener
from ..logthrottle import ThrottledLog

log = logging.getLogger(__name__)

_PEERCRED = struct.Struct("3i")
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux 4.13+; the constant is missing from Python 3.11
BODY_GRACE_S = 5.0
UNBUDGETED_FRAME = 64 * 1024  # small requests skip the byte budget: at most this much per connection
READ_CHUNK = 1 << 20


@dataclass
class Peer:
    pid: int
    uid: int
    gid: int
    greeted: bool = False


Handler = Callable[[str, dict[str, Any], Peer], Awaitable[Any]]


@dataclass
class Stream:
    """An op's result that is pushed as many frames: each item with "more": true, then a closing frame.

    The server pulls the next item only once the previous frame has drained, so
    a slow client holds back its producer instead of growing a buffer; the
    producer conflates what it has (snapshots) while it waits.  The stream ends
    when the iterator does (closing frame {"result": nil, "more": false}) or
    when the client closes the connection, which is how a client stops it.
    """

    items: AsyncIterator[Any]


def peer_of(sock: socket.socket) -> Peer:
    pid, uid, gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return Peer(pid, uid, gid)


def peer_groups(sock: socket.socket) -> frozenset[int]:
    """The peer's supplementary groups as the kernel recorded them at connect (empty on kernels before 4.13)."""
    size = 256
    while True:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size)
        except OSError as exc:
            if exc.errno == errno.ERANGE and size < 4 * 65536:
                size *= 16
                continue
            return frozenset()
        return frozenset(struct.unpack(f"{len(raw) // 4}I", raw[:len(raw) // 4 * 4]))


def is_operator(uid: int) -> bool:
    """Root and the daemon's own user: the operator's side of the trust line."""
    return uid in (0, os.getuid())


async def group_id(name: str | None) -> int | None:
    """socket_group as a gid: a number as it is, a name looked up off the event loop."""
    if name is None:
        return None
    if name.isdigit():
        return int(name)
    try:
        return (await asyncio.get_running_loop().run_in_executor(None, grp.getgrnam, name)).gr_gid
    except KeyError:
        raise ConfigError(f"socket_group '{name}' does not exist") from None


@dataclass(eq=False)
class Conn:
    """One control connection, as the fairness rules see it."""

    peer: Peer
    sock: socket.socket
    opened: float
    task: asyncio.Task[None] | None = None
    writer: asyncio.StreamWriter | None = None
    busy: bool = False  # inside a request or a stream: never dropped to make room
    dropped: bool = False

    @property
    def idle(self) -> bool:
        return self.peer.greeted and not self.busy


class ByteBudget:
    """Request bytes held at once, in all and per uid, so trickled big frames cannot pile up in memory."""

    def __init__(self, total: int, per_uid: int) -> None:
        self.total = total
        self.per_uid = per_uid
        self.used = 0
        self.by_uid: collections.Counter[int] = collections.Counter()

    def take(self, uid: int, size: int) -> bool:
        if self.used + size > self.total or (not is_operator(uid) and self.by_uid[uid] + size > self.per_uid):
            return False
        self.used += size
        self.by_uid[uid] += size
        return True

    def give(self, uid: int, size: int) -> None:
        self.used -= size
        self.by_uid[uid] -= size
        if not self.by_uid[uid]:
            del self.by_uid[uid]


def _busy_frame(message: str) -> bytes:
    return protocol.encode(protocol.error_reply(None, Busy.code, f"tabfleetd is busy: {message}"))


class ControlServer:
    def __init__(self, path: Path, config: Config, handler: Handler) -> None:
        self.path = path
        self.config = config
        self.handler = handler
        self.group_gid: int | None = None
        self.connections: set[Conn] = set()
        self.listener: Listener | None = None
        self.budget = ByteBudget(config.max_bytes_in_flight, max(config.max_bytes_in_flight // 2, config.max_frame_bytes))
        self.refusals = ThrottledLog(log)
        self.drops = ThrottledLog(log)

    async def start(self) -> None:
        self.group_gid = await group_id(self.config.socket_group)
        self._prepare_dir()
        if self.path.exists() or self.path.is_symlink():
            if await self._answers():
                raise AlreadyRunning(f"another tabfleetd is already listening on {self.path}")
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old_umask)
        if self.group_gid is not None:
            os.chown(self.path, -1, self.group_gid)
            os.chmod(self.path, 0o660)
        else:
            os.chmod(self.path, 0o600)
        sock.listen(128)
        self.listener = Listener(sock, self._accepted, "control socket")
        log.info("listening on %s", self.path)

    def _prepare_dir(self) -> None:
        """Make the socket's directory (0700, or 0750 for the socket group) and refuse one that someone else controls."""
        directory = self.path.parent
        made = not os.path.lexists(directory)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        problem = protocol.check_socket_dir(directory, {os.getuid()}, owner_must_be_trusted=True)
        if problem:
            raise ConfigError(f"refusing the control socket's directory: {problem}. Remove it, or choose another --socket")
        gid = self.group_gid
        st = os.stat(directory)
        if gid is None or (st.st_gid == gid and st.st_mode & stat.S_IXGRP) or st.st_mode & stat.S_IXOTH:
            return
        if st.st_uid == os.getuid():
            os.chown(directory, -1, gid)
            os.chmod(directory, 0o750 if made else stat.S_IMODE(st.st_mode) | 0o050)
        else:
            log.warning("members of socket_group %s cannot reach %s (owner uid %d, group %d, mode %04o)",
                        self.config.socket_group, directory, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))

    async def _answers(self) -> bool:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(self.path)), 2)
        except (OSError, asyncio.TimeoutError):
            return False
        writer.close()
        return True

    async def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        for conn in list(self.connections):
            self._end(conn)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def authorised(self, sock: socket.socket, peer: Peer) -> bool:
        if is_operator(peer.uid):
            return True
        if self.group_gid is None:
            return False
        return peer.gid == self.group_gid or self.group_gid in peer_groups(sock)

    # -- admission: who gets a connection when they are scarce ------------------

    def _accepted(self, sock: socket.socket) -> None:
        """A new connection (called by the listener, on the loop): check the peer, make room, or refuse it."""
        try:
            peer = peer_of(sock)
        except OSError:
            sock.close()
            return
        if not self.authorised(sock, peer):
            self.refusals.warning("refused uid %d (pid %d): not allowed to use this daemon", peer.uid, peer.pid)
            _refuse(sock, protocol.encode(protocol.error_reply(None, NotAuthorized.code, f"uid {peer.uid} may not use this daemon")))
            return
        why = self._make_room(peer)
        if why:
            self.refusals.warning("refused a connection of uid %d (pid %d): %s", peer.uid, peer.pid, why)
            _refuse(sock, _busy_frame(f"{why}; try again shortly"))
            return
        conn = Conn(peer, sock, time.monotonic())
        self.connections.add(conn)
        conn.task = asyncio.create_task(self._serve(conn))

    def _make_room(self, peer: Peer) -> str | None:
        """Drop a connection if the new one of `peer` needs its place; the reason to refuse it when none can go."""
        cfg = self.config
        operator = is_operator(peer.uid)
        if not operator:
            own = [c for c in self.connections if c.peer.uid == peer.uid]
            if len(own) >= cfg.max_connections_per_uid and not self._drop_one(own):
                return f"uid {peer.uid} has {len(own)} control connections in use (max_connections_per_uid)"
        room = cfg.max_connections - (0 if operator else min(cfg.reserved_connections, cfg.max_connections // 2))
        if len(self.connections) >= room and not self._drop_one(self.connections):
            return f"all {len(self.connections)} control connections are in use (max_connections)"
        return None

    def _drop_one(self, candidates: Any) -> bool:
        """Drop the oldest connection that has not said hello, else the oldest idle one; False when all are at work."""
        pool = list(candidates)
        victim = (min((c for c in pool if not c.peer.greeted), key=lambda c: c.opened, default=None)
                  or min((c for c in pool if c.idle), key=lambda c: c.opened, default=None))
        if victim is None:
            return False
        self.drops.warning("dropped %s connection of uid %d (pid %d) to make room",
                           "an idle" if victim.peer.greeted else "a silent", victim.peer.uid, victim.peer.pid)
        self._end(victim, _busy_frame("this connection was idle and closed to make room for another; connect again"))
        return True

    def _end(self, conn: Conn, last_frame: bytes | None = None) -> None:
        """Take a connection out of service now, with a last frame for its client; its task closes it."""
        self.connections.discard(conn)
        conn.dropped = True
        if conn.writer is None:
            return  # still being set up: _serve sees `dropped` once it is, and sends the frame then
        if last_frame is not None:
            conn.writer.write(last_frame)
        if conn.task is not None:
            conn.task.cancel()

    # -- serving one connection --------------------------------------------------

    async def _serve(self, conn: Conn) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_unix_connection(sock=conn.sock)
            conn.writer = writer
            if conn.dropped:
                writer.write(_busy_frame("this connection was closed to make room for another; connect again"))
                return
            async with asyncio.timeout(self.config.hello_timeout_s):
                while not conn.peer.greeted:
                    if not await self._one_request(reader, writer, conn, protocol.HELLO_MAX_FRAME):
                        return
            while await self._one_request(reader, writer, conn, self.config.max_frame_bytes):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("control connection failed")
        finally:
            self.connections.discard(conn)
            if writer is not None:
                writer.close()
            else:
                conn.sock.close()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: Conn, limit: int) -> bool:
        """Serve one request; False ends the connection."""
        peer = conn.peer
        try:
            header = await asyncio.wait_for(reader.readexactly(protocol.HEADER.size), self.config.read_timeout_s)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                log.debug("connection closed inside a frame header")
            return False
        if conn.dropped:  # dropped while its header came in: the client was told busy, so this request must not run
            return False
        conn.busy = True
        held = 0
        try:
            try:
                length = protocol.body_length(header, limit)
                if length > UNBUDGETED_FRAME:
                    if not self.budget.take(peer.uid, length):
                        raise Busy(f"tabfleetd is busy receiving other requests ({self.budget.used >> 20} MiB held); "
                                   "try again shortly")
                    held = length
                body = await self._read_body(reader, peer, length)
                op, args, msg_id = protocol.parse_request(protocol.decode(body))
                del body
            except (ProtocolError, Busy) as exc:
                message = str(exc) if peer.greeted else f"before hello: {exc}"
                await self._reply(writer, protocol.error_reply(None, exc.code, message))
                return False
            try:
                if op == "hello":
                    peer.greeted = True
                elif not peer.greeted:
                    raise VersionMismatch("say hello first: the first request must be 'hello' with the client's protocol version")
                result = await self.handler(op, args, peer)
                reply = protocol.ok_reply(msg_id, result)
            except TabfleetError as exc:
                reply = protocol.error_reply(msg_id, exc.code, str(exc))
            except Exception as exc:
                log.exception("op %r failed", op)
                reply = protocol.error_reply(msg_id, 1000, f"internal error in '{op}': {type(exc).__name__}: {exc}")
            if isinstance(reply.get("result"), Stream):
                return await self._stream(reader, writer, msg_id, reply["result"])
            await self._reply(writer, reply)
            return True
        finally:
            conn.busy = False
            if held:
                self.budget.give(peer.uid, held)

    async def _read_body(self, reader: asyncio.StreamReader, peer: Peer, length: int) -> bytearray:
        """Read a frame's body, which must keep arriving: the whole of it within BODY_GRACE_S plus its size at the minimum rate."""
        body = bytearray()
        try:
            async with asyncio.timeout(BODY_GRACE_S + length / (self.config.body_min_rate_kib_s * 1024)):
                while len(body) < length:
                    chunk = await reader.read(min(length - len(body), READ_CHUNK))
                    if not chunk:
                        raise asyncio.IncompleteReadError(b"", length)
                    body += chunk
        except TimeoutError:
            self.drops.warning("dropped uid %d (pid %d): a %d-byte request arrived slower than %g KiB/s (%d bytes came)",
                               peer.uid, peer.pid, length, self.config.body_min_rate_kib_s, len(body))
            raise ConnectionAbortedError("request body too slow") from None
        return body

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, msg_id: int | None,
                      stream: Stream) -> bool:
        """Push a stream's items until it ends (True: serve the next request) or the client leaves (False).

        No read deadline applies while the daemon pushes: the client is silent
        by design.  Its liveness shows in the writes instead: a client that
        stops reading makes drain() overrun read_timeout_s and is dropped.
        """
        gone = asyncio.ensure_future(reader.read(1))  # EOF (or any byte: the client broke the protocol)
        items = stream.items
        nxt: asyncio.Future[Any] | None = None
        try:
            while True:
                nxt = asyncio.ensure_future(anext(items))
                await asyncio.wait({nxt, gone}, return_when=asyncio.FIRST_COMPLETED)
                if gone.done():
                    await _cancel(nxt)
                    log.debug("stream %s ended: the client left", msg_id)
                    return False
                try:
                    item = nxt.result()
                except StopAsyncIteration:
                    await self._reply(writer, protocol.ok_reply(msg_id, None) | {"more": False})
                    return True
                except TabfleetError as exc:
                    await self._reply(writer, protocol.error_reply(msg_id, exc.code, str(exc)))
                    return True
                except Exception as exc:
                    log.exception("stream %s failed", msg_id)
                    await self._reply(writer, protocol.error_reply(msg_id, 1000, f"internal error in a stream: {type(exc).__name__}: {exc}"))
                    return True
                await self._reply(writer, protocol.ok_reply(msg_id, item) | {"more": True})
        finally:
            await _cancel(gone)
            if nxt is not None:
                await _cancel(nxt)
            if isinstance(items, AsyncGenerator):
                await items.aclose()  # runs the producer's cleanup (e.g. unsubscribe) now, not at GC

    async def _reply(self, writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
        try:
            frame = protocol.encode(reply)
        except (TypeError, ValueError, msgpack.PackException) as exc:
            frame = protocol.encode(protocol.error_reply(reply.get("id"), 1000, f"reply could not be encoded: {exc}"))
        writer.write(frame)
        await asyncio.wait_for(writer.drain(), self.config.read_timeout_s)


def _refuse(sock: socket.socket, frame: bytes) -> None:
    """Send a refusal on a socket never served (it fits the empty send buffer) and close it."""
    try:
        sock.send(frame)
    except OSError:
        pass
    sock.close()


async def _cancel(task: asyncio.Future[Any]) -> None:
    """Cancel a helper future and wait for it, so nothing it holds outlives the stream."""
    if not task.done():
        task.cancel()
    try:
        await task
    except (asyncio.CancelledError, StopAsyncIteration, ConnectionError):
        pass  # the ordinary ends of a stream's helpers
    except Exception:
        log.debug("a stream helper ended with an error after its stream", exc_info=True)
